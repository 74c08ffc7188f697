"""Reading user files (tables, articles) with one-line errors, and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    import pandas as pd

TABLE_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".json", ".parquet")


def normalise_text(text: str) -> str:
    """NFKC, unix newlines, no runs of blanks, at most one empty line between paragraphs."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t\u00a0\u200b]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_readable_file(path: Path) -> None:
    if not path.exists():
        raise PipelineError(f"file not found: {path}")
    if not path.is_file():
        raise PipelineError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise PipelineError(f"file is empty: {path}")


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """A csv/csv.gz/jsonl/parquet file as a DataFrame that has all `columns`."""
    import pandas as pd

    check_readable_file(path)
    name = path.name.lower()
    try:
        if name.endswith((".csv", ".csv.gz")):
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        elif name.endswith((".jsonl", ".jsonl.gz")):
            df = pd.read_json(path, lines=True, dtype=False)
        elif name.endswith(".json"):
            df = pd.read_json(path, dtype=False)
        elif name.endswith(".parquet"):
            df = pd.read_parquet(path)
        else:
            raise PipelineError(f"unsupported file type: {path.name} (expected one of {', '.join(TABLE_SUFFIXES)})")
    except PipelineError:
        raise
    except UnicodeDecodeError:
        raise PipelineError(f"{path} is not UTF-8 text") from None
    except Exception as err:  # pandas/pyarrow raise many types for a corrupt file
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PipelineError(f"cannot read {path}: {reason}") from None
    if df.empty:
        raise PipelineError(f"no rows in {path}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PipelineError(
            f"{path.name} has no column {', '.join(map(repr, missing))} (columns: {', '.join(map(str, df.columns))})"
        )
    return df


def filter_rows(df: pd.DataFrame, where: dict[str, list[str]] | None, path: Path) -> pd.DataFrame:
    """Rows whose value in each `where` column is one of the listed values."""
    for column, values in (where or {}).items():
        if column not in df.columns:
            raise PipelineError(f"{path.name} has no column {column!r} to select rows by")
        df = df[df[column].astype(str).str.strip().isin([str(v) for v in values])]
    if df.empty:
        raise PipelineError(f"no rows of {path.name} match {where}")
    return df


def join_text_columns(df: pd.DataFrame, columns: list[str]) -> list[str]:
    parts = df[columns].astype("string").fillna("")
    return [
        normalise_text("\n\n".join(p for p in (str(v).strip() for v in row) if p))
        for row in parts.itertuples(index=False)
    ]


def read_text_file(path: Path) -> str:
    check_readable_file(path)
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise PipelineError(f"{path} is a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PipelineError(f"{path} is not UTF-8 text") from None


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; it replaces `target` only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(new: Path, target: Path) -> None:
    """Put the finished folder `new` in place of `target` (two renames; the old one is then removed)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)

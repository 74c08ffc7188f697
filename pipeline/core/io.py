"""Reading user files (tables, articles) with one-line errors, and atomic writes."""

from __future__ import annotations

import codecs
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
    try:
        if not path.exists():
            raise PipelineError(f"file not found: {path}")
        if path.is_dir():
            raise PipelineError(f"{path} is a folder, not a file")
        if not path.is_file():
            raise PipelineError(f"not a file: {path}")
        if path.stat().st_size == 0:
            raise PipelineError(f"file is empty: {path}")
        if not os.access(path, os.R_OK):
            raise PipelineError(f"cannot read {path}: permission denied")
    except OSError as err:
        raise PipelineError(f"cannot read {path}: {os_reason(err)}") from None


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """A csv/csv.gz/jsonl/parquet file as a DataFrame that has all `columns`."""
    import pandas as pd

    check_readable_file(path)
    name = path.name.lower()
    if name.endswith((".csv", ".jsonl", ".json")):  # text tables: UTF-16 and binary files named as such
        with path.open("rb") as f:
            decode_text(f.read(8192), str(path), final=False)
    try:
        if name.endswith((".csv", ".csv.gz")):
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        elif name.endswith((".jsonl", ".jsonl.gz")):
            df = pd.read_json(path, lines=True, dtype=False)
        elif name.endswith(".json"):
            df = _json_table(path)
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


LABEL_STUDIO_LABEL = "label"  # the column a Label Studio export's chosen labels go to (space-separated)


def _json_table(path: Path) -> pd.DataFrame:
    """A JSON array of row objects, or a Label Studio JSON export (tasks with `data` and `annotations`)."""
    import pandas as pd

    with path.open(encoding="utf-8") as f:
        rows = json.load(f)
    if isinstance(rows, list) and rows and all(isinstance(r, dict) and "data" in r for r in rows):
        return pd.DataFrame(label_studio_rows(rows, str(path)))
    return pd.read_json(path, dtype=False)


def label_studio_rows(tasks: list[dict[str, Any]], source: str) -> list[dict[str, str]]:
    """The labelled rows of a Label Studio export: each task's `data` fields and `label`, the choices of its
    latest annotation that was not cancelled (several choices joined by a space); unlabelled tasks skipped."""
    rows = []
    for task in tasks:
        done = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        if not done:
            continue
        choices = [
            c
            for r in done[-1].get("result") or []
            if isinstance(r, dict) and r.get("type") == "choices"
            for c in (r.get("value") or {}).get("choices") or []
        ]
        if choices:
            data = {k: "" if v is None else str(v) for k, v in (task.get("data") or {}).items()}
            rows.append(data | {LABEL_STUDIO_LABEL: " ".join(choices)})
    if not rows:
        raise PipelineError(f"{source}: a Label Studio export with no labelled task (no choices in any annotation)")
    return rows


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
    return read_text_prefix(path, None)[0]


def read_text_prefix(path: Path, max_chars: int | None) -> tuple[str, bool]:
    """The file's text, at most `max_chars` of it (None: all), and whether there was more. Reads at
    most 4 bytes a character, so a huge file costs no more memory than its prefix."""
    check_readable_file(path)
    try:
        with path.open("rb") as f:
            data = f.read(-1 if max_chars is None else 4 * max_chars + 4)
            more = max_chars is not None and f.read(1) != b""
    except OSError as err:
        raise PipelineError(f"cannot read {path}: {os_reason(err)}") from None
    text = decode_text(data, str(path), final=not more)
    if max_chars is not None and len(text) > max_chars:
        return text[:max_chars], True
    return text, more


def decode_text(data: bytes, source: str, final: bool = True) -> str:
    """UTF-8 bytes as text (a byte-order mark dropped); `final=False`: a character cut at the end is
    left out. One-line errors name UTF-16, binary data and other encodings."""
    head = data[:8192]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _looks_utf16(head):
        raise PipelineError(f"{source} is UTF-16 text: convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)")
    if b"\x00" in head:
        raise PipelineError(f"{source} is a binary file, not text")
    try:
        return codecs.getincrementaldecoder("utf-8-sig")().decode(data, final=final)
    except UnicodeDecodeError as err:
        raise PipelineError(f"{source} is not UTF-8 text (invalid byte at offset {err.start})") from None


def _looks_utf16(head: bytes) -> bool:
    """ASCII-range text in UTF-16 without a byte-order mark: a zero byte in every other position."""
    if len(head) < 8:
        return False
    pairs = len(head) // 2
    zeros_odd = head[1::2].count(0)
    zeros_even = head[0::2].count(0)
    return max(zeros_odd, zeros_even) > 0.8 * pairs and min(zeros_odd, zeros_even) < 0.1 * pairs


def os_reason(err: OSError) -> str:
    """An OS error as a user reads it: "permission denied", "is a directory", "no space left on device"."""
    return (err.strerror or type(err).__name__).lower()


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; it replaces `target` only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = owned_temp_dir(target.parent, f".{target.name}.")
    try:
        yield tmp
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def owned_temp_dir(parent: Path, prefix: str) -> Path:
    """A new temporary folder `PREFIX<pid>.<random>` in `parent`, after removing those of the same prefix
    whose process is gone (a killed prepare, export or training leaves its folder behind)."""
    for old in parent.glob(f"{prefix}*"):
        pid = old.name[len(prefix) :].split(".", 1)[0]
        if old.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.", dir=parent))


def pid_alive(pid: int) -> bool:
    """A process of this machine with this id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


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
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """`text` in `path`, whole or not at all: written beside it, then renamed."""
    if path.is_dir():
        raise PipelineError(f"{path} is a folder: give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

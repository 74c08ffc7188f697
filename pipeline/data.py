"""Stage 1, prepare: source table -> clean, deduplicated, split DatasetDict on disk + data card.

The data card (data_card.json beside the dataset) holds counts per label and split, token
length stats and a content digest. Its `fingerprint` (source bytes + data and tokenizer
settings) lets a re-run on unchanged input return at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import Config, resolve_path
from pipeline.errors import PipelineError
from pipeline.io import atomic_dir, file_digest, join_text_columns, read_table, write_json_atomic

if TYPE_CHECKING:
    import pandas as pd
    from datasets import DatasetDict

SPLITS = ("train", "validation", "test")
CARD = "data_card.json"


@dataclass
class Prepared:
    path: Path
    card: dict[str, Any]
    reused: bool


def content_digest(rows: pd.DataFrame) -> str:
    """Digest of what a model sees: split, label, pair (if any) and text of every row, order-independent."""
    columns = ["split", "label", *(["pair"] if "pair" in rows.columns else []), "text"]
    h = hashlib.sha256()
    for line in sorted("\t".join(row) for row in rows[columns].itertuples(index=False)):
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def _fingerprint(cfg: Config, source: Path) -> str:
    settings = {"data": cfg.data.model_dump(), "tokenizer": cfg.model.name, "max_length": cfg.model.max_length}
    h = hashlib.sha256(file_digest(source).encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def load_rows(cfg: Config, source: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read, join and normalise text, check labels; returns rows and what was dropped."""
    import pandas as pd

    d = cfg.data
    columns = [*d.text_columns, d.label_column, *([d.pair_column] if d.pair_column else [])]
    if d.split_column:
        columns.append(d.split_column)
    if d.id_column:
        columns.append(d.id_column)
    df = read_table(source, columns)
    rows = pd.DataFrame(
        {
            "id": df[d.id_column].astype(str) if d.id_column else [str(i) for i in range(len(df))],
            "text": join_text_columns(df, d.text_columns),
            "label": df[d.label_column].astype("string").fillna("").str.strip(),
        }
    )
    if d.pair_column:
        rows["pair"] = join_text_columns(df, [d.pair_column])
    if d.split_column:
        by_name = {v: k for k, v in d.split_names.items()}
        raw_split = df[d.split_column].astype(str).str.strip()
        unknown = sorted(set(raw_split) - set(by_name))
        if unknown:
            raise PipelineError(f"column {d.split_column!r} has values {unknown} that are not in data.split_names")
        rows["split"] = raw_split.map(by_name)
    dropped = {"empty_text": int((rows["text"] == "").sum()), "empty_label": 0, "duplicate_text": 0}
    rows = rows[rows["text"] != ""]
    dropped["empty_label"] = int((rows["label"] == "").sum())
    rows = rows[rows["label"] != ""]
    if rows.empty:
        raise PipelineError(f"no rows with both text and label in {source}")
    if d.labels is not None:
        unknown_labels = sorted(set(rows["label"]) - set(d.labels))
        if unknown_labels:
            raise PipelineError(f"labels {unknown_labels} in {source.name} are not in data.labels {d.labels}")
    return rows.reset_index(drop=True), dropped


def assign_splits(rows: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Stratified train/validation/test split, used when the data has no split column."""
    from sklearn.model_selection import train_test_split

    frac = cfg.data.split_fractions
    val, test = frac.get("validation", 0.0), frac.get("test", 0.0)
    if not 0 < val + test < 1:
        raise PipelineError("data.split_fractions must leave some rows for training")
    counts = rows["label"].value_counts()
    stratify = rows["label"] if counts.min() >= 3 else None
    rest, test_part = train_test_split(rows, test_size=test, random_state=cfg.data.split_seed, stratify=stratify)
    train_part, val_part = train_test_split(
        rest,
        test_size=val / (1 - test),
        random_state=cfg.data.split_seed,
        stratify=rest["label"] if stratify is not None else None,
    )
    rows = rows.copy()
    rows.loc[train_part.index, "split"] = "train"
    rows.loc[val_part.index, "split"] = "validation"
    rows.loc[test_part.index, "split"] = "test"
    return rows


def deduplicate(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep one copy of each text (or pair and text); a copy in test or validation is dropped from train."""
    priority = rows["split"].map({"test": 0, "validation": 1, "train": 2})
    ordered = rows.assign(_p=priority).sort_values(["_p"], kind="stable")
    kept = (
        ordered.drop_duplicates(["pair", "text"] if "pair" in rows.columns else "text", keep="first")
        .drop(columns="_p")
        .sort_index()
    )
    return kept, len(rows) - len(kept)


def token_length_stats(lengths: list[int], max_length: int) -> dict[str, float]:
    a = np.asarray(lengths)
    return {
        "mean": round(float(a.mean()), 1),
        "median": float(np.median(a)),
        "p90": round(float(np.percentile(a, 90)), 1),
        "max": int(a.max()),
        "share_over_window": round(float((a > max_length).mean()), 3),
    }


def prepare(cfg: Config, force: bool = False) -> Prepared:
    source = resolve_path(cfg.data.source)
    out = resolve_path(cfg.data.prepared_dir)
    if not source.exists():
        raise PipelineError(f"data source not found: {source}")
    fingerprint = _fingerprint(cfg, source)
    card_path = out / CARD
    if not force and card_path.is_file():
        old_card = json.loads(card_path.read_text(encoding="utf-8"))
        if old_card.get("fingerprint") == fingerprint and (out / "dataset_dict.json").is_file():
            return Prepared(out, old_card, reused=True)

    rows, dropped = load_rows(cfg, source)
    if "split" not in rows.columns:
        rows = assign_splits(rows, cfg)
    rows, dropped["duplicate_text"] = deduplicate(rows)
    missing = [s for s in SPLITS if not (rows["split"] == s).any()]
    if missing:
        raise PipelineError(f"split(s) {missing} are empty after cleaning {source.name}")
    labels = cfg.data.labels or sorted(rows["label"].unique())

    from pipeline.modeling import load_tokenizer

    tokenizer = load_tokenizer(cfg.model.name)
    lengths = [len(x) for x in tokenizer(list(rows["text"]), add_special_tokens=True)["input_ids"]]
    rows = rows.assign(n_tokens=lengths)

    card: dict[str, Any] = {
        "fingerprint": fingerprint,
        "source": str(source),
        "source_sha256": file_digest(source),
        "content_digest": content_digest(rows),
        "labels": labels,
        "text_columns": cfg.data.text_columns,
        "rows_read": int(len(rows) + sum(dropped.values())),
        "dropped": dropped,
        "splits": {},
    }
    for split in SPLITS:
        part = rows[rows["split"] == split]
        card["splits"][split] = {
            "n": len(part),
            "labels": {lab: int((part["label"] == lab).sum()) for lab in labels},
            "tokens": token_length_stats(list(part["n_tokens"]), cfg.model.max_length),
            "content_digest": content_digest(part),
        }
    dataset = to_dataset_dict(rows, labels)
    with atomic_dir(out) as tmp:
        dataset.save_to_disk(str(tmp))
        write_json_atomic(tmp / CARD, card)
    return Prepared(out, card, reused=False)


def to_dataset_dict(rows: pd.DataFrame, labels: list[str]) -> DatasetDict:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, disable_progress_bars

    disable_progress_bars()

    columns = ["id", *(["pair"] if "pair" in rows.columns else []), "text", "label", "n_tokens"]
    features = Features(
        {
            **{c: Value("string") for c in columns[:-2]},
            "label": ClassLabel(names=labels),
            "n_tokens": Value("int32"),
        }
    )
    return DatasetDict(
        {
            split: Dataset.from_pandas(
                rows.loc[rows["split"] == split, columns],
                features=features,
                preserve_index=False,
            )
            for split in SPLITS
        }
    )


def load_prepared(cfg: Config) -> tuple[DatasetDict, dict[str, Any]]:
    out = resolve_path(cfg.data.prepared_dir)
    if not (out / CARD).is_file():
        raise PipelineError(f"no prepared data in {out}; run `pipeline prepare` first")
    from datasets import load_from_disk

    card = json.loads((out / CARD).read_text(encoding="utf-8"))
    return load_from_disk(str(out)), card

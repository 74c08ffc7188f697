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

from pipeline.core.config import Config, DataConfig, JoinConfig, resolve_path
from pipeline.core.errors import PipelineError
from pipeline.core.io import atomic_dir, file_digest, filter_rows, join_text_columns, read_table, write_json_atomic
from pipeline.core.labelled import load_eval_set, multi_hot, split_labels
from pipeline.models.runtime import load_tokenizer

if TYPE_CHECKING:
    import pandas as pd
    from datasets import DatasetDict

SPLITS = ("train", "validation", "test")
CARD = "data_card.json"
LABEL_SET_SEP = "\x1f"  # joins a multi-label row's labels in the prepared rows (no label name holds it)


@dataclass
class Prepared:
    path: Path
    card: dict[str, Any]
    reused: bool


def extra_id_prefix(name: str) -> str:
    """Row ids of an extra labelled set start with this, so later stages can tell its rows apart."""
    return f"{name}:"


def content_digest(rows: pd.DataFrame) -> str:
    """Digest of what a model sees: split, label, pair (if any) and text of every row, order-independent."""
    columns = ["split", "label", *(["pair"] if "pair" in rows.columns else []), "text"]
    h = hashlib.sha256()
    for line in sorted("\t".join(row) for row in rows[columns].itertuples(index=False)):
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def _inputs(cfg: Config) -> list[Path]:
    """Every file the prepared data is read from: main source, test source, joined tables."""
    d = cfg.data
    paths = [d.source, *([d.join.source] if d.join else [])]
    if d.test:
        paths += [d.test.source, *([d.test.join.source] if d.test.join else [])]
    return [resolve_path(p) for p in paths]


def _fingerprint(cfg: Config, inputs: list[Path]) -> str:
    settings = {"data": cfg.data.model_dump(), "tokenizer": cfg.model.name, "max_length": cfg.model.max_length}
    h = hashlib.sha256("".join(file_digest(p) for p in inputs).encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def read_joined(path: Path, join: JoinConfig | None, columns: list[str]) -> pd.DataFrame:
    """A table with all `columns`, after adding the columns of `join.source` matched on `join.key`."""
    if join is None:
        return read_table(path, columns)
    df = read_table(path, [join.key])
    other_path = resolve_path(join.source)
    other = read_table(other_path, [join.key])
    key_left, key_right = df[join.key].astype(str).str.strip(), other[join.key].astype(str).str.strip()
    if key_right.duplicated().any():
        raise PipelineError(f"{other_path.name}: column {join.key!r} repeats values, so rows cannot be joined on it")
    added = [c for c in other.columns if c not in df.columns]
    other = other[added].set_index(key_right)
    df = df.join(other, on=key_left)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PipelineError(f"neither {path.name} nor {other_path.name} has column {', '.join(map(repr, missing))}")
    return df


def load_rows(
    cfg: Config, source: Path, join: JoinConfig | None = None, split: str | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Read, join and normalise text, check labels; returns rows and what was dropped.

    `split` puts every row in that split; else the split column (if configured) decides.
    """
    import pandas as pd

    d = cfg.data
    group_columns = d.group_columns or []
    use_split_column = d.split_column is not None and split is None
    label_columns = [d.label_column] if d.label_column else list(d.label_columns or [])
    columns = [*d.text_columns, *label_columns, *([d.pair_column] if d.pair_column else []), *group_columns]
    if use_split_column and d.split_column:
        columns.append(d.split_column)
    if d.id_column:
        columns.append(d.id_column)
    df = read_joined(source, join, list(dict.fromkeys(columns)))
    if split is None:  # `where` selects rows of the main source (a separate test file is taken whole)
        df = filter_rows(df, d.where, source)
    rows = pd.DataFrame(
        {
            "id": df[d.id_column].astype(str) if d.id_column else [str(i) for i in range(len(df))],
            "text": join_text_columns(df, d.text_columns),
            "label": label_cells(df, d),
        }
    )
    if d.pair_column:
        rows["pair"] = join_text_columns(df, [d.pair_column])
    for i, column in enumerate(group_columns):
        rows[f"_group{i}"] = df[column].astype(str).str.strip()
    if split is not None:
        rows["split"] = split
    elif d.split_column:
        by_name = {v: k for k, v in d.split_names.items()}
        raw_split = df[d.split_column].astype(str).str.strip()
        unknown = sorted(set(raw_split) - set(by_name))
        if unknown:
            raise PipelineError(f"column {d.split_column!r} has values {unknown} that are not in data.split_names")
        rows["split"] = raw_split.map(by_name)
    dropped = {"empty_text": int((rows["text"] == "").sum()), "empty_label": 0}
    rows = rows[rows["text"] != ""]
    dropped["empty_label"] = int((rows["label"] == "").sum())
    rows = rows[rows["label"] != ""]
    if rows.empty:
        raise PipelineError(f"no rows with both text and label in {source}")
    if d.labels is not None:
        unknown_labels = sorted(set(row_labels(rows)) - set(d.labels))
        if unknown_labels:
            raise PipelineError(f"labels {unknown_labels} in {source.name} are not in data.labels {d.labels}")
    return rows.reset_index(drop=True), dropped


def label_cells(df: pd.DataFrame, d: DataConfig) -> pd.Series:
    """Each row's label; for a multi-label task its labels joined by LABEL_SET_SEP ("" for none)."""
    label_map = d.label_map or {}
    if d.label_columns:
        on = df[list(d.label_columns)].apply(lambda c: c.astype(str).str.strip().str.lower().isin(["1", "1.0", "true"]))
        names = [label_map.get(c, c) for c in d.label_columns]
        return on.apply(lambda row: LABEL_SET_SEP.join(n for n, v in zip(names, row, strict=True) if v), axis=1)
    if d.label_column is None:  # the config allows exactly one of the two
        raise PipelineError("give data.label_column or data.label_columns")
    cells = df[d.label_column].astype("string").fillna("").str.strip()
    if not d.multi_label:
        return cells.replace(label_map)
    separator = d.label_separator or " "
    return cells.map(lambda cell: LABEL_SET_SEP.join(sorted(split_labels(cell, separator, label_map))))


def row_labels(rows: pd.DataFrame) -> list[str]:
    """Every label of every row (a multi-label row counts each of its labels)."""
    return [label for cell in rows["label"] for label in cell.split(LABEL_SET_SEP) if label]


def extra_train_rows(cfg: Config, rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of `data.extra_train` sets, shaped like `rows`: training data only, never validation."""
    import pandas as pd

    parts = []
    for extra in cfg.data.extra_train:
        if ("pair" in rows.columns) != (extra.pair_column is not None):
            raise PipelineError(f"data.extra_train {extra.name!r} needs a pair_column exactly when data has one")
        data = load_eval_set(extra)
        unknown = sorted(set(data.labels) - set(cfg.data.labels or rows["label"]))
        if unknown:
            raise PipelineError(f"data.extra_train {extra.name!r} has labels {unknown} that the task does not")
        ids = [f"{extra_id_prefix(extra.name)}{i}" for i in range(len(data.texts))]
        part = pd.DataFrame({"id": ids, "text": data.texts, "label": data.labels})
        if data.pairs is not None:
            part["pair"] = data.pairs
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def group_splits(rows: pd.DataFrame, skip_labels: set[str], fractions: dict[str, float], seed: int) -> pd.Series:
    """Split by connected groups: rows sharing a value of any group column end up together.

    Rows whose label is in `skip_labels` (FNC-1's random `unrelated` pairs) do not link their
    values; such a row whose values fall on two sides is dropped (split "").
    """
    import pandas as pd

    columns = [c for c in rows.columns if c.startswith("_group")]
    parent: dict[tuple[int, str], tuple[int, str]] = {}

    def find(node: tuple[int, str]) -> tuple[int, str]:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    row_nodes = [
        [(i, value) for i, value in enumerate(values)] for values in rows[columns].itertuples(index=False, name=None)
    ]
    for nodes, label in zip(row_nodes, rows["label"], strict=True):
        roots = [find(n) for n in nodes]
        if label not in skip_labels:
            for root in roots[1:]:
                parent[find(root)] = find(roots[0])
    components = sorted({find(n) for n in list(parent)})
    draws = np.random.default_rng(seed).random(len(components))
    test, val = fractions.get("test", 0.0), fractions.get("validation", 0.0)
    side = {
        comp: "test" if u < test else "validation" if u < test + val else "train"
        for comp, u in zip(components, draws, strict=True)
    }
    out = []
    for nodes in row_nodes:
        sides = {side[find(n)] for n in nodes}
        out.append(sides.pop() if len(sides) == 1 else "")
    return pd.Series(out, index=rows.index)


def assign_splits(rows: pd.DataFrame, cfg: Config, with_test: bool = True) -> tuple[pd.DataFrame, int]:
    """Split rows that have no split column: by groups if configured, else stratified by label.

    Returns the rows kept and how many were dropped for sitting across two groups' splits.
    """
    from sklearn.model_selection import train_test_split

    frac: dict[str, float] = {str(k): v for k, v in cfg.data.split_fractions.items()}
    if not with_test:
        frac["test"] = 0.0
    val, test = frac.get("validation", 0.0), frac.get("test", 0.0)
    if not 0 < val + test < 1:
        raise PipelineError("data.split_fractions must leave some rows for training")
    rows = rows.copy()
    if cfg.data.group_columns:
        skip = set(cfg.data.group_link_skip_labels or [])
        rows["split"] = group_splits(rows, skip, frac, cfg.data.split_seed)
        kept = rows[rows["split"] != ""]
        return kept, len(rows) - len(kept)
    if cfg.data.multi_label:
        return iterative_splits(rows, val, test, cfg.data.split_seed), 0
    counts = rows["label"].value_counts()
    stratify = rows["label"] if counts.min() >= 3 else None
    rest, test_part = (
        (rows, rows.iloc[:0])
        if test == 0
        else train_test_split(rows, test_size=test, random_state=cfg.data.split_seed, stratify=stratify)
    )
    train_part, val_part = train_test_split(
        rest,
        test_size=val / (1 - test),
        random_state=cfg.data.split_seed,
        stratify=rest["label"] if stratify is not None else None,
    )
    rows.loc[train_part.index, "split"] = "train"
    rows.loc[val_part.index, "split"] = "validation"
    rows.loc[test_part.index, "split"] = "test"
    return rows, 0


def iterative_splits(rows: pd.DataFrame, val: float, test: float, seed: int) -> pd.DataFrame:
    """Multi-label rows split by iterative stratification (Sechidis et al., 2011), so that every
    label, rare ones too, falls into each split in about the split's share."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    names = sorted(set(row_labels(rows)))
    index = {n: i for i, n in enumerate(names)}
    y = np.zeros((len(rows), len(names)), dtype=np.int8)
    for r, cell in enumerate(rows["label"]):
        y[r, [index[label] for label in cell.split(LABEL_SET_SEP)]] = 1
    rows = rows.copy()
    split = np.full(len(rows), "train", dtype=object)
    rest = np.arange(len(rows))
    for name, share in (("test", test), ("validation", val / (1 - test))):
        if share <= 0:
            continue
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=share, random_state=seed)
        _, taken = next(splitter.split(np.zeros(len(rest)), y[rest]))
        split[rest[taken]] = name
        rest = np.delete(rest, taken)
    rows["split"] = split
    return rows


def deduplicate(rows: pd.DataFrame, within_test: bool = True) -> tuple[pd.DataFrame, int]:
    """Keep one copy of each text (or pair and text); a copy in test or validation is dropped from train.

    `within_test=False` keeps repeated test rows, so an official test set is scored as published.
    """
    key = ["pair", "text"] if "pair" in rows.columns else ["text"]
    priority = rows["split"].map({"test": 0, "validation": 1, "train": 2})
    ordered = rows.assign(_p=priority).sort_values(["_p"], kind="stable")
    repeated = ordered.duplicated(key, keep="first")
    if not within_test:
        repeated &= ordered["split"] != "test"
    kept = ordered[~repeated].drop(columns="_p").sort_index()
    return kept, len(rows) - len(kept)


def default_labels(d: DataConfig, rows: pd.DataFrame) -> list[str]:
    """The task's labels when the config names none: the 0/1 columns in order, else those in the data, sorted."""
    if d.label_columns:
        label_map = d.label_map or {}
        return [label_map.get(c, c) for c in d.label_columns]
    return sorted(set(row_labels(rows)))


def label_counts(part: pd.DataFrame, labels: list[str], multi_label: bool) -> dict[str, int]:
    """Rows of each label (a multi-label row counts for each of its labels)."""
    if not multi_label:
        return {lab: int((part["label"] == lab).sum()) for lab in labels}
    counts = dict.fromkeys(labels, 0)
    for label in row_labels(part):
        counts[label] += 1
    return counts


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
    import pandas as pd

    source = resolve_path(cfg.data.source)
    out = resolve_path(cfg.data.prepared_dir)
    inputs = _inputs(cfg)
    for path in inputs:
        if not path.exists():
            raise PipelineError(f"data source not found: {path}")
        if path.is_dir():
            raise PipelineError(f"data source {path} is a folder: give a csv, csv.gz, jsonl or parquet file")
    fingerprint = _fingerprint(cfg, inputs)
    card_path = out / CARD
    if not force and card_path.is_file():
        old_card = json.loads(card_path.read_text(encoding="utf-8"))
        if old_card.get("fingerprint") == fingerprint and (out / "dataset_dict.json").is_file():
            return Prepared(out, old_card, reused=True)

    rows, dropped = load_rows(cfg, source, cfg.data.join)
    extra = extra_train_rows(cfg, rows) if cfg.data.extra_train else None
    dropped["crossing_groups"] = 0
    if "split" not in rows.columns:
        rows, dropped["crossing_groups"] = assign_splits(rows, cfg, with_test=cfg.data.test is None)
    elif "validation" not in cfg.data.split_names:  # the file has train and test only: validation from train
        train_part, dropped["crossing_groups"] = assign_splits(rows[rows["split"] == "train"], cfg, with_test=False)
        rows = pd.concat([train_part, rows[rows["split"] != "train"]], ignore_index=True)
    if extra is not None:
        # train only: validation keeps measuring the task's own data, and its rows (so the
        # choice between configs with and without an extra set) stay the same
        rows = pd.concat([rows, extra.assign(split="train")], ignore_index=True)
    if cfg.data.test:
        test_rows, test_dropped = load_rows(cfg, resolve_path(cfg.data.test.source), cfg.data.test.join, "test")
        rows = pd.concat([rows, test_rows], ignore_index=True)
        dropped = {k: dropped.get(k, 0) + test_dropped.get(k, 0) for k in {**dropped, **test_dropped}}
    rows = rows.drop(columns=[c for c in rows.columns if c.startswith("_group")])
    rows, dropped["duplicate_text"] = deduplicate(rows, within_test=cfg.data.deduplicate_test)
    missing = [s for s in SPLITS if not (rows["split"] == s).any()]
    if missing:
        raise PipelineError(f"split(s) {missing} are empty after cleaning {source.name}")
    labels = cfg.data.labels or default_labels(cfg.data, rows)
    if len(labels) < 2:
        raise PipelineError(
            f"{source.name} has one label only ({', '.join(labels) or 'none'}): a classifier needs at least two"
        )

    tokenizer = load_tokenizer(cfg.model.name)
    # FNC-1 pairs one body with dozens of headlines: tokenize each distinct text once
    unique = list(dict.fromkeys(rows["text"]))
    length_of = dict(
        zip(unique, (len(x) for x in tokenizer(unique, add_special_tokens=True)["input_ids"]), strict=True)
    )
    rows = rows.assign(n_tokens=rows["text"].map(length_of))

    card: dict[str, Any] = {
        "fingerprint": fingerprint,
        "source": str(source),
        "source_sha256": file_digest(source),
        "inputs": {str(p): file_digest(p) for p in inputs},
        "content_digest": content_digest(rows),
        "labels": labels,
        "multi_label": cfg.data.multi_label,
        "text_columns": cfg.data.text_columns,
        "rows_read": int(len(rows) + sum(dropped.values())),
        "dropped": dropped,
        "splits": {},
    }
    for split in SPLITS:
        part = rows[rows["split"] == split]
        card["splits"][split] = {
            "n": len(part),
            "labels": label_counts(part, labels, cfg.data.multi_label),
            "tokens": token_length_stats(list(part["n_tokens"]), cfg.model.max_length),
            "content_digest": content_digest(part),
        }
    dataset = to_dataset_dict(rows, labels, cfg.data.multi_label)
    with atomic_dir(out) as tmp:
        dataset.save_to_disk(str(tmp))
        write_json_atomic(tmp / CARD, card)
    return Prepared(out, card, reused=False)


def to_dataset_dict(rows: pd.DataFrame, labels: list[str], multi_label: bool = False) -> DatasetDict:
    """The splits as a DatasetDict; a multi-label task's `label` is a list of class labels."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value, disable_progress_bars

    disable_progress_bars()

    columns = ["id", *(["pair"] if "pair" in rows.columns else []), "text", "label", "n_tokens"]
    label_feature: Any = ClassLabel(names=labels)
    if multi_label:
        index = {label: i for i, label in enumerate(labels)}
        as_indices = [[index[x] for x in cell.split(LABEL_SET_SEP)] for cell in rows["label"]]
        rows = rows.assign(label=as_indices)
        label_feature = Sequence(ClassLabel(names=labels))
    features = Features(
        {
            **{c: Value("string") for c in columns[:-2]},
            "label": label_feature,
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


def label_names(split: Any) -> list[str]:
    """The class names of a prepared split's `label` feature (single- or multi-label)."""
    feature = split.features["label"]
    return list(getattr(feature, "feature", feature).names)


def split_targets(split: Any) -> np.ndarray:
    """A prepared split's gold labels: class indices, or a 0/1 matrix (articles × labels) when multi-label."""
    feature = split.features["label"]
    if hasattr(feature, "feature"):
        return multi_hot(list(split["label"]), len(feature.feature.names))
    return np.asarray(split["label"])


def load_prepared(cfg: Config) -> tuple[DatasetDict, dict[str, Any]]:
    out = resolve_path(cfg.data.prepared_dir)
    if not (out / CARD).is_file():
        raise PipelineError(f"no prepared data in {out}; run `pipeline prepare` first")
    from datasets import load_from_disk

    card = json.loads((out / CARD).read_text(encoding="utf-8"))
    return load_from_disk(str(out)), card

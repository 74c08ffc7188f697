"""Labelled tables outside the prepared splits: a user's file (`evaluate --data`), the config's extra test and
training sets, label maps, label-stratified samples, and the label sets of multi-label tasks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.config import Config, EvalSetConfig, resolve_path
from pipeline.core.errors import PipelineError
from pipeline.core.io import filter_rows, join_text_columns, read_table


@dataclass
class EvalData:
    texts: list[str]
    labels: list[str]
    source: str
    name: str
    pairs: list[str] | None = None
    digest: str | None = None  # the prepared data's content digest, when the rows come from it
    label_sets: list[list[str]] | None = None  # multi-label: each row's labels (`labels` then shows them joined)

    def subset(self, rows: list[int] | np.ndarray, name: str | None = None) -> EvalData:
        return EvalData(
            [self.texts[i] for i in rows],
            [self.labels[i] for i in rows],
            self.source,
            name or self.name,
            [self.pairs[i] for i in rows] if self.pairs is not None else None,
            label_sets=[self.label_sets[i] for i in rows] if self.label_sets is not None else None,
        )

    def mapped(self, label_map: dict[str, str]) -> EvalData:
        """The same rows with their gold labels renamed by `label_map` (--label-map data_label=model_label)."""
        if not label_map:
            return self
        sets = (
            [list(dict.fromkeys(label_map.get(y, y) for y in s)) for s in self.label_sets] if self.label_sets else None
        )
        labels = [", ".join(s) for s in sets] if sets is not None else [label_map.get(y, y) for y in self.labels]
        return EvalData(self.texts, labels, self.source, self.name, self.pairs, self.digest, sets)


def split_labels(cell: str, separator: str, label_map: dict[str, str]) -> list[str]:
    """The labels of one multi-label cell, mapped, in order, each once."""
    parts = [label_map.get(p.strip(), p.strip()) for p in cell.split(separator)]
    return list(dict.fromkeys(p for p in parts if p))


def multi_hot(index_lists: list[list[int]], k: int) -> np.ndarray:
    y = np.zeros((len(index_lists), k), dtype=np.int8)
    for row, indices in enumerate(index_lists):
        y[row, indices] = 1
    return y


def gold_targets(data: EvalData, model_labels: list[str]) -> np.ndarray:
    """What metrics compare against: label indices, or a 0/1 matrix for a multi-label set."""
    if data.label_sets is None:
        return label_indices(data.labels, model_labels)
    label_indices([label for labels in data.label_sets for label in labels], model_labels)  # unknown ones fail
    index = {label: i for i, label in enumerate(model_labels)}
    return multi_hot([[index[label] for label in labels] for labels in data.label_sets], len(model_labels))


def parse_label_map(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    mapping = {}
    for item in text.split(","):
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise PipelineError(f"--label-map item {item!r} is not of the form data_label=model_label")
        mapping[src.strip()] = dst.strip()
    return mapping


def load_eval_file(
    path: Path,
    text_columns: list[str],
    label_column: str,
    label_map: dict[str, str],
    pair_column: str | None = None,
    where: dict[str, list[str]] | None = None,
    name: str | None = None,
    label_separator: str | None = None,
) -> EvalData:
    """A labelled file; with `label_separator`, each label cell holds several labels (multi-label)."""
    df = read_table(path, [*text_columns, label_column, *([pair_column] if pair_column else [])])
    df = filter_rows(df, where, path)
    texts = join_text_columns(df, text_columns)
    pairs = join_text_columns(df, [pair_column]) if pair_column else None
    cells = list(df[label_column].astype("string").fillna("").str.strip())
    sets = [split_labels(c, label_separator, label_map) for c in cells] if label_separator is not None else None
    labels = [", ".join(s) for s in sets] if sets is not None else [label_map.get(c, c) for c in cells]
    keep = [i for i, (t, y) in enumerate(zip(texts, labels, strict=True)) if t and y]
    if not keep:
        raise PipelineError(f"no rows with both text and label in {path}")
    return EvalData(texts, labels, str(path), name or path.name, pairs, label_sets=sets).subset(keep)


def extra_test_data(cfg: Config, name: str | None = None) -> list[EvalData]:
    """The config's extra test sets (`data.extra_tests`), or the one called `name`."""
    sets = [e for e in cfg.data.extra_tests if name is None or e.name == name]
    if name is not None and not sets:
        known = ", ".join(e.name for e in cfg.data.extra_tests) or "none"
        raise PipelineError(f"no extra test set {name!r} in the config (data.extra_tests: {known})")
    return [load_eval_set(e) for e in sets]


def load_eval_set(e: EvalSetConfig) -> EvalData:
    """A labelled set described in the config (`data.extra_tests`, `data.extra_train`)."""
    path = resolve_path(e.source)
    data = load_eval_file(path, e.text_columns, e.label_column, e.label_map or {}, e.pair_column, e.where, e.name)
    if e.max_rows is not None and e.max_rows < len(data.texts):
        _, y = np.unique(data.labels, return_inverse=True)
        data = data.subset(sample_rows(y, e.max_rows, seed=0))
    if e.max_words is not None:
        data.texts = [" ".join(t.split(" ")[: e.max_words]) for t in data.texts]
    return data


def sample_rows(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices of a label-stratified sample of n rows (all rows when n is None or not smaller)."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split  # lazy: 2.6 s that predict never needs

    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    kept, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=stratify)
    return np.sort(kept)


def label_indices(labels: list[str], model_labels: list[str]) -> np.ndarray:
    unknown = sorted(set(labels) - set(model_labels))
    if unknown:
        raise PipelineError(
            f"labels the model does not know: {', '.join(unknown)} (model labels: {', '.join(model_labels)}; "
            "map them with --label-map data_label=model_label)"
        )
    index = {label: i for i, label in enumerate(model_labels)}
    return np.asarray([index[y] for y in labels])

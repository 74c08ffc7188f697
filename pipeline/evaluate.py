"""Stage 4, evaluate: metrics of a model on the prepared test split or any labelled file, as an MLflow run.

The metric and logging functions here are also what `train` and `baseline` log with, so
every run of a task carries the same metric names and artifacts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import Config, EvalSetConfig
from pipeline.errors import PipelineError
from pipeline.metrics import compute_metrics, log_metrics, log_mistakes

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.modeling import TextClassifier


def log_dataset(df: pd.DataFrame, source: str, name: str, context: str) -> str:
    """Log the rows (text, label and pair if any) as an MLflow dataset input; returns its digest."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    columns = [c for c in ("pair", "text", "label") if c in df.columns]
    ds = from_pandas(df[columns].reset_index(drop=True), source=source, name=name, targets="label")
    mlflow.log_input(ds, context=context)
    return str(ds.digest)


def log_prepared_splits(dataset: Any, source: str, task: str) -> None:
    """Every split of a prepared DatasetDict as a dataset input of the active run."""
    for split in ("train", "validation", "test"):
        frame = dataset[split].select_columns(
            [c for c in ("pair", "text", "label") if c in dataset[split].column_names]
        )
        frame = frame.to_pandas()
        frame["label"] = [dataset[split].features["label"].names[i] for i in frame["label"]]
        log_dataset(frame, source, f"{task}-{split}", split)


@dataclass
class EvalData:
    texts: list[str]
    labels: list[str]
    source: str
    name: str
    pairs: list[str] | None = None
    digest: str | None = None  # the prepared data's content digest, when the rows come from it


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
) -> EvalData:
    from pipeline.io import filter_rows, join_text_columns, read_table

    df = read_table(path, [*text_columns, label_column, *([pair_column] if pair_column else [])])
    df = filter_rows(df, where, path)
    texts = join_text_columns(df, text_columns)
    pairs = join_text_columns(df, [pair_column]) if pair_column else None
    labels = [label_map.get(s, s) for s in df[label_column].astype("string").fillna("").str.strip()]
    keep = [i for i, (t, y) in enumerate(zip(texts, labels, strict=True)) if t and y]
    if not keep:
        raise PipelineError(f"no rows with both text and label in {path}")
    return EvalData(
        [texts[i] for i in keep],
        [labels[i] for i in keep],
        str(path),
        name or path.name,
        [pairs[i] for i in keep] if pairs is not None else None,
    )


def extra_test_data(cfg: Config, name: str | None = None) -> list[EvalData]:
    """The config's extra test sets (`data.extra_tests`), or the one called `name`."""
    sets = [e for e in cfg.data.extra_tests if name is None or e.name == name]
    if name is not None and not sets:
        known = ", ".join(e.name for e in cfg.data.extra_tests) or "none"
        raise PipelineError(f"no extra test set {name!r} in the config (data.extra_tests: {known})")
    return [load_eval_set(e) for e in sets]


def load_eval_set(e: EvalSetConfig) -> EvalData:
    """A labelled set described in the config (`data.extra_tests`, `data.extra_train`)."""
    from pipeline.config import resolve_path

    path = resolve_path(e.source)
    data = load_eval_file(path, e.text_columns, e.label_column, e.label_map or {}, e.pair_column, e.where, e.name)
    if e.max_rows is not None and e.max_rows < len(data.texts):
        _, y = np.unique(data.labels, return_inverse=True)
        rows = sample_rows(y, e.max_rows, seed=0)
        data = EvalData(
            [data.texts[i] for i in rows],
            [data.labels[i] for i in rows],
            data.source,
            data.name,
            [data.pairs[i] for i in rows] if data.pairs is not None else None,
        )
    if e.max_words is not None:
        data.texts = [" ".join(t.split(" ")[: e.max_words]) for t in data.texts]
    return data


def sample_rows(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices of a label-stratified sample of n rows (all rows when n is None or not smaller)."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    kept, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=stratify)
    return np.sort(kept)


def prepared_split_data(cfg: Config, split: str) -> EvalData:
    """One split of the prepared DatasetDict, with label names."""
    from pipeline.data import load_prepared

    dataset, card = load_prepared(cfg)
    rows = dataset[split]
    names = rows.features["label"].names
    pairs = list(rows["pair"]) if "pair" in rows.column_names else None
    return EvalData(
        list(rows["text"]),
        [names[i] for i in rows["label"]],
        card["source"],
        f"{cfg.task}-{split}",
        pairs,
        card["content_digest"],
    )


def prepared_test_data(cfg: Config) -> EvalData:
    return prepared_split_data(cfg, "test")


def split_by_seen_targets(cfg: Config, data: EvalData) -> dict[str, EvalData]:
    """`data` cut in two: rows whose target (the pair) occurs, case-insensitively, in a target or a
    text of the prepared training split, and rows whose target occurs nowhere in it."""
    from pipeline.data import load_prepared

    if data.pairs is None:
        raise PipelineError(f"{data.name} has no target column, so its targets cannot be split into seen and unseen")
    train = load_prepared(cfg)[0]["train"]
    seen_text = "\n".join([*train["text"], *(train["pair"] if "pair" in train.column_names else [])]).lower()
    seen = [pair.strip().lower() in seen_text for pair in data.pairs]
    out = {}
    for name, keep in (("seen", True), ("unseen", False)):
        rows = [i for i, s in enumerate(seen) if s == keep]
        if rows:
            out[name] = EvalData(
                [data.texts[i] for i in rows],
                [data.labels[i] for i in rows],
                data.source,
                f"{data.name}-{name}-targets",
                [data.pairs[i] for i in rows],
            )
    return out


def label_indices(labels: list[str], model_labels: list[str]) -> np.ndarray:
    unknown = sorted(set(labels) - set(model_labels))
    if unknown:
        raise PipelineError(
            f"labels the model does not know: {', '.join(unknown)} (model labels: {', '.join(model_labels)}; "
            "map them with --label-map data_label=model_label)"
        )
    index = {label: i for i, label in enumerate(model_labels)}
    return np.asarray([index[y] for y in labels])


def evaluate(cfg: Config, model_ref: str | None, data: EvalData, run_name: str | None = None) -> dict[str, Any]:
    """Evaluate a registered or local model on `data` inside a new MLflow run."""
    import mlflow

    from pipeline import tracking

    tracking.use_experiment(cfg.mlflow.experiment)
    r = cfg.runtime
    clf, uri = tracking.load_classifier(
        model_ref, cfg.mlflow.registered_model, r.device, r.precision, r.threads, r.eval_batch_size
    )
    label_indices(data.labels, clf.labels)  # unknown labels fail before a run is opened
    with mlflow.start_run(run_name=run_name or f"evaluate-{data.name}") as run:
        mlflow.set_tags({"stage": "evaluate", "task": cfg.task})
        tracking.log_config(cfg)
        result = log_evaluation(cfg, clf, uri, data)
    return {**result, "run_id": run.info.run_id}


def log_evaluation(cfg: Config, clf: TextClassifier, uri: str, data: EvalData) -> dict[str, Any]:
    """Score `clf` on `data` and log the data, its digest and the test metrics to the active run."""
    import mlflow
    import pandas as pd

    y = label_indices(data.labels, clf.labels)
    mlflow.set_tags({"model_uri": uri, "eval_data": data.source})
    frame = pd.DataFrame({"text": data.texts, "label": data.labels})
    if data.pairs is not None:
        frame["pair"] = data.pairs
    digest = log_dataset(frame, data.source, data.name, "test")
    start = time.perf_counter()
    probs = clf.predict_proba(data.texts, data.pairs)
    metrics = compute_metrics(y, probs, clf.labels)
    mlflow.log_metric("test_seconds", time.perf_counter() - start)
    log_metrics(metrics, "test")
    log_mistakes(data.texts, data.pairs, y, probs, clf.labels, "test")
    # the prepared data's digest, the one the training runs carry, so runs on the same data match
    mlflow.set_tag("data_digest", data.digest or digest)
    return {**metrics, "model_uri": uri, "data_digest": data.digest or digest, "data_name": data.name}

"""Stage 4, evaluate: metrics of a model on the prepared test split or any labelled file, as an MLflow run.

`log_evaluation` is also how `log-model` scores a model, so every evaluation carries the same
metric names and artifacts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import Config
from pipeline.core.errors import PipelineError
from pipeline.core.labelled import EvalData, gold_targets
from pipeline.core.metrics import compute_metrics
from pipeline.models.predictor import Predictor
from pipeline.stages.prepare import label_names, load_prepared
from pipeline.tracking import store
from pipeline.tracking.log import log_dataset, log_metrics, log_mistakes
from pipeline.tracking.registry import load_registered


def prepared_split_data(cfg: Config, split: str) -> EvalData:
    """One split of the prepared DatasetDict, with label names."""
    dataset, card = load_prepared(cfg)
    rows = dataset[split]
    names = label_names(rows)
    pairs = list(rows["pair"]) if "pair" in rows.column_names else None
    multi_label = hasattr(rows.features["label"], "feature")
    sets = [[names[i] for i in y] for y in rows["label"]] if multi_label else None
    return EvalData(
        list(rows["text"]),
        [", ".join(s) for s in sets] if sets is not None else [names[i] for i in rows["label"]],
        card["source"],
        f"{cfg.task}-{split}",
        pairs,
        card["content_digest"],
        label_sets=sets,
    )


def prepared_test_data(cfg: Config) -> EvalData:
    return prepared_split_data(cfg, "test")


def split_by_seen_targets(cfg: Config, data: EvalData) -> dict[str, EvalData]:
    """`data` cut in two: rows whose target (the pair) occurs, case-insensitively, in a target or a
    text of the prepared training split, and rows whose target occurs nowhere in it."""
    if data.pairs is None:
        raise PipelineError(f"{data.name} has no target column, so its targets cannot be split into seen and unseen")
    train = load_prepared(cfg)[0]["train"]
    seen_text = "\n".join([*train["text"], *(train["pair"] if "pair" in train.column_names else [])]).lower()
    seen = [pair.strip().lower() in seen_text for pair in data.pairs]
    out = {}
    for name, keep in (("seen", True), ("unseen", False)):
        rows = [i for i, s in enumerate(seen) if s == keep]
        if rows:
            out[name] = data.subset(rows, f"{data.name}-{name}-targets")
    return out


@dataclass
class Evaluation:
    """A model scored on one labelled set: every metric (`compute_metrics`), and where it is logged."""

    metrics: dict[str, Any]
    model_uri: str
    data_digest: str
    data_name: str
    run_id: str = ""

    def summary(self) -> dict[str, Any]:
        """The documented `--json` object of evaluate and zeroshot; the full metrics are in the MLflow run."""
        m = self.metrics
        per_class = {
            label: {k: row[k] for k in ("precision", "recall", "f1", "support")}
            for label, row in m["per_class"].items()
        }
        keys = ("n", "accuracy", "macro_f1", "fnc_score", "micro_f1", "samples_f1", "subset_accuracy", "hamming_loss")
        out = {k: m[k] for k in (*keys, "label_cardinality") if k in m}
        if m.get("multi_label"):  # the documented multi-label name of the per-class table
            return out | {"run_id": self.run_id, "per_label": per_class}
        return out | {"run_id": self.run_id, "per_class": per_class}


def evaluate(cfg: Config, model_ref: str | None, data: EvalData, run_name: str | None = None) -> Evaluation:
    """Evaluate a registered or local model on `data` inside a new MLflow run."""
    import mlflow

    store.use_experiment(cfg.mlflow.experiment)
    r = cfg.runtime
    clf, uri = load_registered(
        model_ref, cfg.mlflow.registered_model, r.device, r.precision, r.threads, r.eval_batch_size
    )
    gold_targets(data, clf.labels)  # unknown labels fail before a run is opened
    if clf.card.multi_label != (data.label_sets is not None):
        kind = "multi-label" if clf.card.multi_label else "single-label"
        raise PipelineError(f"{uri} is a {kind} model, and {data.name} is not {kind}")
    with mlflow.start_run(run_name=run_name or f"evaluate-{data.name}") as run:
        mlflow.set_tags({"stage": "evaluate", "task": cfg.task})
        store.log_config(cfg)
        result = log_evaluation(clf, uri, data)
    result.run_id = run.info.run_id
    return result


def log_evaluation(clf: Predictor, uri: str, data: EvalData) -> Evaluation:
    """Score `clf` on `data` and log the data, its digest and the test metrics to the active run."""
    import mlflow
    import pandas as pd

    y = gold_targets(data, clf.labels)
    mlflow.set_tags({"model_uri": uri, "eval_data": data.source})
    frame = pd.DataFrame({"text": data.texts, "label": data.labels})
    if data.pairs is not None:
        frame["pair"] = data.pairs
    digest = log_dataset(frame, data.source, data.name, "test")
    start = time.perf_counter()
    probs = clf.predict_proba(data.texts, data.pairs)
    thresholds = clf.decision.thresholds
    metrics = compute_metrics(y, probs, clf.labels, thresholds)
    mlflow.log_metric("test_seconds", time.perf_counter() - start)
    log_metrics(metrics, "test")
    log_mistakes(data.texts, data.pairs, y, probs, clf.labels, "test", thresholds, explainer=clf)
    # the prepared data's digest, the one the training runs carry, so runs on the same data match
    mlflow.set_tag("data_digest", data.digest or digest)
    return Evaluation(metrics, uri, data.digest or digest, data.name)

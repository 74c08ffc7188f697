"""Baseline stage: TF-IDF + logistic regression on the prepared data, logged to the task's experiment.

It is what a user would try first; its run sits beside the transformer's in the MLflow UI with
the same metric names. C is chosen on validation macro-F1; test is scored once, at the end. A
multi-label task gets one-vs-rest logistic regression, labels at probability 0.5 (untuned).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import Config
from pipeline.core.metrics import compute_metrics
from pipeline.models.tfidf import TfidfModel, fit_tfidf, tfidf_texts
from pipeline.stages.prepare import prepare, split_targets
from pipeline.tracking import store
from pipeline.tracking.log import log_metrics, log_mistakes, log_prepared_splits
from pipeline.tracking.pyfunc import TfidfBaseline, log_tfidf_pyfunc


@dataclass
class BaselineResult:
    run_id: str
    c: float  # the C chosen on validation
    val: dict[str, Any]
    test: dict[str, Any]
    seconds: float


def run_baseline(cfg: Config) -> BaselineResult:
    import mlflow
    from datasets import load_from_disk

    started = time.perf_counter()
    prepared = prepare(cfg)
    dataset = load_from_disk(str(prepared.path))
    labels: list[str] = prepared.card["labels"]
    # a pair (claim, target or title) is part of what a bag of words should see
    has_pair = "pair" in dataset["train"].column_names
    texts = {
        s: tfidf_texts(dataset[s]["text"], dataset[s]["pair"] if has_pair else None)
        for s in ("train", "validation", "test")
    }
    ys = {s: split_targets(dataset[s]) for s in ("train", "validation", "test")}
    fitted = fit_tfidf(
        cfg.baseline, texts["train"], ys["train"], texts["validation"], ys["validation"], labels, cfg.train.seed
    )
    best_c, scores = fitted.c, fitted.val_macro_f1_by_c

    store.use_experiment(cfg.mlflow.experiment)
    with mlflow.start_run(run_name=f"baseline-tfidf-{cfg.task}") as run:
        mlflow.set_tags(
            {
                "stage": "baseline",
                "task": cfg.task,
                "model": "tfidf+logreg" + ("-one-vs-rest" if cfg.data.multi_label else ""),
                "data_digest": prepared.card["content_digest"],
            }
        )
        store.log_config(cfg)
        mlflow.log_param("baseline.chosen_c", best_c)
        log_prepared_splits(dataset, prepared.card["source"], cfg.task)
        for c, f1 in scores.items():
            mlflow.log_metric(f"val_macro_f1_c{c:g}", f1)
        val = compute_metrics(ys["validation"], fitted.predict_proba(texts["validation"]), labels)
        log_metrics(val, "val")
        test_probs = fitted.predict_proba(texts["test"])
        test = compute_metrics(ys["test"], test_probs, labels)
        log_metrics(test, "test")
        log_mistakes(texts["test"], None, ys["test"], test_probs, labels, "test")
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
        # the numpy form predict's blend uses (npz and JSON), served from code: a baseline someone
        # sends is never unpickled (skops, MLflow's safe sklearn format, took minutes on a large vocabulary)
        pair_column = (cfg.data.pair_column or "pair") if has_pair else None
        log_tfidf_pyfunc(TfidfBaseline(TfidfModel.from_fitted(fitted), labels, pair_column))
    return BaselineResult(run.info.run_id, best_c, val, test, time.perf_counter() - started)

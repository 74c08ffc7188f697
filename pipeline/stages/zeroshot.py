"""Stage 3, zero-shot: classify with labels never trained on, evaluated and logged like a fine-tuned model.

The classifier is `models.zeroshot`'s; this stage scores it on the prepared test split (and
validation, which decides its registry alias) or on any labelled file, as a run of the task's
experiment beside its fine-tuned runs, and logs it as a model, registered on request (an embedding
model with its ONNX export, so that predict runs it without torch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.core import progress
from pipeline.core.config import Config, ZeroShotConfig, resolve_path
from pipeline.core.io import atomic_dir
from pipeline.core.labelled import EvalData, label_indices
from pipeline.core.metrics import compute_metrics
from pipeline.models.loading import save_model
from pipeline.models.predictor import Predictor
from pipeline.models.zeroshot import build_zeroshot, label_phrasings, require_zeroshot
from pipeline.stages.evaluate import Evaluation, log_evaluation, prepared_split_data
from pipeline.stages.export import EXPORT_CHECK_TEXTS, export_fast
from pipeline.stages.prepare import prepare
from pipeline.tracking import store
from pipeline.tracking.log import log_metrics
from pipeline.tracking.registry import register_model


@dataclass
class ZeroShotResult:
    evaluation: Evaluation
    val_macro_f1: float | None
    alias: str | None
    registered_model: str | None
    seconds: float


def run_zeroshot(
    cfg: Config,
    data: EvalData | None,
    labels: list[str] | None = None,
    register: bool = False,
    label_map: dict[str, str] | None = None,
) -> ZeroShotResult:
    """Evaluate the zero-shot classifier on `data` (default: the prepared test split, its labels renamed
    by `label_map`) as an MLflow run; log it as a model, registered on request. On the prepared data the
    validation split is scored too, and it decides the registry alias."""

    started = time.perf_counter()
    zcfg = require_zeroshot(cfg)
    validation = None
    if data is None:
        prepare(cfg)
        data = prepared_split_data(cfg, "test").mapped(label_map or {})
        validation = prepared_split_data(cfg, "validation").mapped(label_map or {})
    clf = build_zeroshot(cfg, labels)
    label_indices(data.labels, clf.labels)  # unknown labels fail before a run is opened
    store.use_experiment(cfg.mlflow.experiment)
    with progress.reporting(
        "zero-shot", len(data.texts) + len(validation.texts if validation else []), counts_texts=True
    ):
        return _evaluate_and_log(cfg, zcfg, clf, data, validation, labels, register, started)


def _evaluate_and_log(
    cfg: Config,
    zcfg: ZeroShotConfig,
    clf: Predictor,
    data: EvalData,
    validation: EvalData | None,
    labels: list[str] | None,
    register: bool,
    started: float,
) -> ZeroShotResult:
    import mlflow

    engine_model = f"zero-shot {zcfg.engine} ({zcfg.encoder if zcfg.engine == 'embedding' else zcfg.nli_model})"
    with mlflow.start_run(run_name=f"zeroshot-{data.name}") as run:
        mlflow.set_tags({"stage": "zeroshot", "task": cfg.task, "model": engine_model, "engine": zcfg.engine})
        store.log_config(cfg)
        mlflow.log_dict(label_phrasings(zcfg, labels), "zeroshot/label_phrasings.json")
        selection = None
        if validation is not None:
            y_val = label_indices(validation.labels, clf.labels)
            selection = compute_metrics(y_val, clf.predict_proba(validation.texts, validation.pairs), clf.labels)
            log_metrics(selection, "val")
        result = log_evaluation(clf, engine_model, data)
        # the registry compares on validation; without one, on the data evaluated
        score = (selection or result.metrics)["macro_f1"]
        folder = resolve_path(zcfg.output_dir)
        with atomic_dir(folder) as tmp:
            save_model(clf, tmp)
            if register and zcfg.engine == "embedding":  # predict, the service and batch then run it without torch
                check = validation or data
                with progress.aside():
                    onnx = export_fast(
                        tmp, check.texts[:EXPORT_CHECK_TEXTS], check.pairs[:EXPORT_CHECK_TEXTS] if check.pairs else None
                    )
                mlflow.set_tag("onnx", onnx)
        registered = register_model(folder, clf.labels, zcfg.registered_model if register else None, score)
    result.run_id = run.info.run_id
    return ZeroShotResult(
        result,
        selection["macro_f1"] if selection else None,
        registered.alias,
        zcfg.registered_model if registered.alias else None,
        time.perf_counter() - started,
    )

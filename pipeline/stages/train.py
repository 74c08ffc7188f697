"""Stage 2, train: fine-tune a sequence classifier, keep the best epoch, evaluate, log and register.

`train()` hands off to named steps: load the splits (`train_data`), choose the rows, set up and
run the epochs with resume (`optimise`), fit the decision on validation and score test
(`finalise`), log and register. One MLflow run holds the resolved config, per-epoch train loss
and validation metrics, the test metrics of the best checkpoint, and the model, registered under
the task's name with alias `champion` (first, or better on validation than the champion) or
`challenger`.
"""

from __future__ import annotations

import random
import shutil
import sys
import time
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, load_config, resolve_path
from pipeline.core.errors import PipelineError
from pipeline.core.lock import hold_lock
from pipeline.models.card import CARD_FILE, FINETUNED, read_card
from pipeline.models.loading import load_model
from pipeline.models.zeroshot import require_zeroshot
from pipeline.stages.evaluate import log_evaluation, prepared_test_data
from pipeline.stages.finalise import fit_decision, score_extra_tests, score_test
from pipeline.stages.optimise import Progress, Session, Setup, build_setup, optimise, start_session
from pipeline.stages.resume import (
    ResumeInfo,
    read_resume_info,
    require_resume_state,
    restore_resume_state,
    resume_dir,
)
from pipeline.stages.train_data import TrainingData, load_training_data, select_rows
from pipeline.tracking import store
from pipeline.tracking.log import log_dataset, log_prepared_splits
from pipeline.tracking.registry import register_model
from pipeline.tracking.store import TolerantLog


@dataclass
class TrainResult:
    run_id: str
    model_dir: Path
    best_epoch: int
    val_macro_f1: float
    test_metrics: dict[str, Any]
    extra_test_metrics: dict[str, dict[str, Any]]
    model_uri: str | None
    alias: str | None
    seconds: float
    steps_per_second: float = 0.0  # optimizer steps over the time spent in them (no evaluation)
    main_process: bool = True  # False in the other processes of a distributed run: they log and report nothing


def train(
    cfg: Config, register: bool = True, show_progress: bool = True, pseudo_labels: bool = False, resume: bool = False
) -> TrainResult:
    """Fine-tune on the prepared train split; with `pseudo_labels`, on the zero-shot classifier's
    confident labels of the train and validation articles instead of their gold labels (self-training),
    registered under `zeroshot.self_training`'s name. With `resume`, continue the interrupted
    training of this config after its last complete epoch."""
    started = time.perf_counter()
    # launched by `accelerate launch` or `torchrun`, each process trains on its share of the batches;
    # the main process alone prepares the data first, tracks, evaluates and registers
    session = start_session(cfg)
    if resume:  # nothing to resume is said before the data are prepared
        require_resume_state(resume_dir(model_folder(cfg, pseudo_labels)))
    with training_lock(cfg, session, pseudo_labels):
        data = load_training_data(cfg, session.accelerator, pseudo_labels)
        resumed = find_resume_state(cfg, data, resume, session)
        gate, rows = select_rows(cfg, data)
        setup = build_setup(cfg, session, data, gate, rows)
        # the batch order, seeded to be repeatable: no secret
        rng = random.Random(cfg.train.seed)  # nosec B311
        state = Progress()
        if resumed is not None:
            restore_resume_state(
                session.accelerator, resume_dir(data.model_dir), (setup.model, setup.optimizer, setup.scheduler)
            )
            rng.setstate(resumed.batch_rng_state())
            state = Progress.resumed_from(resumed, resume_dir(data.model_dir), setup.epochs)
        log = TolerantLog(enabled=session.main)  # a tracking store that goes away stops no step of the training
        with tracking_run(cfg, session, resumed, pseudo_labels) as run:
            if session.main and resumed is None:
                log_inputs(cfg, session, data, setup, pseudo_labels)
            optimise(cfg, session, data, setup, state, rng, run.info.run_id if run else "", show_progress, log)
            if not session.main:
                return TrainResult(
                    "", data.model_dir, state.best_epoch, state.best_f1, {}, {}, None, None, 0.0, 0.0, False
                )
            fitted = fit_decision(cfg, session, data, setup, state, log)
            test = score_test(data, fitted, state.best_val, log)
            extra = score_extra_tests(cfg, fitted.model, log)
            # the model folder is complete and scored: nothing is left to resume
            shutil.rmtree(resume_dir(data.model_dir), ignore_errors=True)
            rate = state.step / state.step_seconds if state.step_seconds else 0.0
            seconds = time.perf_counter() - started
            mlflow = store.import_mlflow()
            log(
                mlflow.log_metrics,
                {"best_epoch": state.best_epoch, "train_seconds": seconds, "train_steps_per_second": rate},
            )
            if log.error is not None:  # the CLI says `pipeline log-model` logs the complete folder later
                raise log.error
            name = data.registered_model if register else None
            registered = register_model(data.model_dir, data.labels, name, fitted.val_macro_f1)
    seconds = time.perf_counter() - started
    return TrainResult(
        run.info.run_id,
        data.model_dir,
        state.best_epoch,
        fitted.val_macro_f1,
        test,
        extra,
        registered.model_uri,
        registered.alias,
        seconds,
        rate,
    )


def model_folder(cfg: Config, pseudo_labels: bool) -> Path:
    """Where the model is written (`models/topic`); self-training writes another folder."""
    return resolve_path(require_zeroshot(cfg).self_training.output_dir if pseudo_labels else cfg.train.output_dir)


def lock_path(cfg: Config, pseudo_labels: bool) -> Path:
    """The lock beside the model folder (`models/topic.lock`)."""
    folder = model_folder(cfg, pseudo_labels)
    return folder.with_name(folder.name + ".lock")


def training_lock(cfg: Config, session: Session, pseudo_labels: bool) -> AbstractContextManager[Any]:
    """One training of a task at a time: the main process holds the lock; its answer is sent to the
    others of a distributed run, so that they all go on or all stop."""
    held = ExitStack()
    refused: str | None = None
    if session.main:
        what = f"{'self-' if pseudo_labels else ''}training of {cfg.task}"
        advice = "or give this one another train.output_dir (--set train.output_dir=models/NAME)"
        try:
            held.enter_context(hold_lock(lock_path(cfg, pseudo_labels), what, advice))
        except PipelineError as err:
            refused = str(err)
    if session.accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        [refused] = broadcast_object_list([refused])
    if refused is not None:
        held.close()
        raise PipelineError(refused)
    return held


def find_resume_state(cfg: Config, data: TrainingData, resume: bool, session: Session) -> ResumeInfo | None:
    state_dir = resume_dir(data.model_dir)
    processes = session.accelerator.num_processes
    resumed = read_resume_info(state_dir, cfg, data.digest, processes) if resume else None
    if resumed is None and state_dir.exists() and session.main:
        print(
            f"note: {state_dir} holds an interrupted training; this one starts anew (--resume continues it)",
            file=sys.stderr,
        )
    return resumed


def tracking_run(
    cfg: Config, session: Session, resumed: ResumeInfo | None, pseudo_labels: bool
) -> AbstractContextManager[Any]:
    """The MLflow run of the main process (the interrupted one when resuming); none in the others."""
    if not session.main:
        return nullcontext()
    mlflow = store.import_mlflow()
    store.use_experiment(cfg.mlflow.experiment)
    if resumed is not None:  # the interrupted run goes on: its curves continue, its inputs are logged already
        run = mlflow.start_run(run_id=resumed.run_id, log_system_metrics=True)
        mlflow.set_tag("resumed_after_epoch", str(resumed.epoch))
        return run
    name = f"train-{cfg.task}" + ("-pseudo-labels" if pseudo_labels else "")
    return mlflow.start_run(run_name=name, log_system_metrics=True)


def log_inputs(cfg: Config, session: Session, data: TrainingData, setup: Setup, pseudo_labels: bool) -> None:
    """What a new training run starts from: tags, the resolved config, its datasets, the gate's share."""
    import pandas as pd

    mlflow = store.import_mlflow()
    fast = ",".join(k for k, on in setup.fast_paths.items() if on) or "none"
    tags = {"stage": "train", "task": cfg.task, "model": cfg.model.name, "data_digest": data.digest}
    tags |= {"device": str(session.device), "precision": session.precision, "fast_paths": fast}
    tags |= {"pseudo_labels": str(pseudo_labels).lower(), "processes": str(session.accelerator.num_processes)}
    mlflow.set_tags(tags)
    store.log_config(cfg)
    source = data.prepared.card["source"]
    if pseudo_labels:
        mlflow.log_metrics(data.pseudo_stats)
        for split in ("train", "validation"):
            frame = {"text": data.texts[split], "label": [data.labels[i] for i in data.ys[split]]}
            log_dataset(pd.DataFrame(frame), source, f"{cfg.task}-{split}-pseudo-labels", split)
    else:
        log_prepared_splits(data.dataset, source, cfg.task)
    mlflow.log_metrics({"train_windows": len(setup.train_windows), "train_articles": len(setup.rows)})
    if (d := setup.distillation) is not None:
        mlflow.set_tag("teacher", d.teacher)
        gold = data.ys["train"][setup.rows]
        agreement = float((d.teacher_logits[: len(gold)].argmax(axis=1) == gold).mean()) if len(gold) else float("nan")
        mlflow.log_metrics(
            {"transfer_rows": len(d.texts), "soft_labels_cached": int(d.cached), "teacher_train_agreement": agreement}
        )
    gate, p_gate = setup.decision.gate, setup.val_route.p_gate
    if gate is not None and p_gate is not None:
        gate_index = data.labels.index(gate.label)
        is_gate, stopped = data.ys["validation"] == gate_index, p_gate >= gate.threshold
        mlflow.log_metrics(
            {
                "val_gate_stopped": float(stopped.mean()),
                "val_gate_precision": float(is_gate[stopped].mean()) if stopped.any() else float("nan"),
                "train_gate_hard_negatives": int((data.ys["train"][setup.rows] == gate_index).sum()),
            }
        )


@dataclass
class LoggedModel:
    run_id: str
    test_macro_f1: float
    n: int
    alias: str | None
    registered_model: str | None


def log_trained_model(folder: Path, register: bool = True) -> LoggedModel:
    """Log a model folder trained while the tracking store was away, as a new run: the config it was
    trained with, its test metrics, the model, and its registry alias (by its validation macro-F1)."""
    config_path = folder / "config.yaml"
    if not (folder / CARD_FILE).is_file() or not config_path.is_file():
        raise PipelineError(f"{folder} is not a trained model folder (it needs {CARD_FILE} and config.yaml)")
    cfg, card = load_config(config_path), read_card(folder)
    if card.kind == FINETUNED and card.training.complete is not True:
        finish = f"`pipeline train --resume -c {config_path}` finishes it, or train again"
        if card.training.complete is None:
            raise PipelineError(f"{folder} was written before model cards said a training was complete: {finish}")
        raise PipelineError(f"{folder} is an unfinished training (its decision never fitted on validation): {finish}")
    r = cfg.runtime
    model = load_model(folder, r.device, r.precision, r.eval_batch_size)
    mlflow = store.import_mlflow()
    store.use_experiment(cfg.mlflow.experiment)
    with mlflow.start_run(run_name=f"train-{cfg.task}-logged-later") as run:
        mlflow.set_tags({"stage": "train", "task": cfg.task, "model": cfg.model.name, "logged_later": "true"})
        store.log_config(cfg)
        val_f1 = card.training.val_macro_f1 if card.training.val_macro_f1 is not None else float("nan")
        mlflow.log_metrics({"val_macro_f1": val_f1, "temperature": card.decision.temperature})
        result = log_evaluation(model, str(folder), prepared_test_data(cfg))
        name = cfg.mlflow.registered_model
        registered = register_model(folder, model.labels, name if register else None, val_f1)
    alias = registered.alias
    return LoggedModel(run.info.run_id, result.metrics["macro_f1"], result.metrics["n"], alias, name if alias else None)

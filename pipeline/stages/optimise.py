"""Train stage, the optimisation: the model, optimizer and schedule, and the epochs of training with early
stopping on validation macro-F1, the best epoch saved as a model folder and the state saved after every
epoch for `--resume`. Runs under `accelerate launch` / `torchrun` too: each process trains on its share
of the batches, the main one validates, saves and logs."""

from __future__ import annotations

import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from pipeline.core import progress
from pipeline.core.config import Config
from pipeline.core.io import atomic_dir
from pipeline.core.metrics import compute_metrics
from pipeline.models.card import DecisionCard, ModelCard, TrainingCard, write_card
from pipeline.models.decision import Decision, Route
from pipeline.models.gate import RelatednessGate
from pipeline.models.runtime import pick_device, pick_precision, set_threads
from pipeline.models.torch_backend import build_classifier, pad_batch, window_logits
from pipeline.stages.distill import NO_LABEL, Distillation, distillation_examples, distillation_loss
from pipeline.stages.resume import ResumeInfo, resume_dir, save_resume_state, saved_val_logits
from pipeline.stages.train_data import (
    TrainingData,
    class_weights,
    drop_pairs,
    length_grouped_batches,
    process_share,
    reading_settings,
    training_windows,
)
from pipeline.text.windows import Windows, encode_windows
from pipeline.tracking.store import TolerantLog


@dataclass
class Session:
    """The processes training together (one, unless launched distributed), on which device and precision."""

    accelerator: Any
    device: Any
    precision: str

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)


def start_session(cfg: Config) -> Session:
    from accelerate import Accelerator

    set_threads(cfg.runtime.threads)
    device = pick_device(cfg.runtime.device)
    precision = pick_precision(cfg.runtime.precision, device)
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision={"fp32": "no"}.get(precision, precision))
    return Session(accelerator, accelerator.device, precision)


@dataclass
class Setup:
    """What the epochs work with."""

    model: Any
    optimizer: Any
    scheduler: Any
    loss_fn: Any
    pad_id: int
    train_windows: Windows
    train_y: np.ndarray
    rows: np.ndarray  # the train rows the transformer learns
    decision: Decision  # a checkpoint's decision, before anything is fitted on validation
    val_route: Route  # the validation texts the gate passes (all of them without a gate)
    val_windows: Windows
    total_steps: int
    epochs: int
    fast_paths: dict[str, bool]
    distillation: Distillation | None = None  # the teacher's soft labels, when the config distils
    teacher_logits: np.ndarray | None = None  # the teacher's logits of each training window


def build_setup(
    cfg: Config, session: Session, data: TrainingData, gate: RelatednessGate | None, rows: np.ndarray
) -> Setup:
    import torch
    from transformers import get_linear_schedule_with_warmup

    m, t = cfg.model, cfg.train
    multi_label = cfg.data.multi_label
    model = build_classifier(m.name, data.labels, m.attention_dropout, m.pooling, multi_label)
    fast_paths = apply_fast_paths(cfg, model, session)
    if multi_label:
        set_prior_bias(model, data.ys["train"][rows])
    train_pairs = data.pairs["train"]
    texts = [data.texts["train"][i] for i in rows]
    pairs = [train_pairs[i] for i in rows] if train_pairs is not None else None
    y, distillation = data.ys["train"][rows], None
    if cfg.distill is not None:
        distillation = distillation_examples(cfg, data.labels, texts, pairs, data.texts["test"])
        texts, y = texts + distillation.texts, np.concatenate([y, np.full(len(distillation.texts), NO_LABEL)])
        pairs = pairs + distillation.pairs if pairs is not None else None
    student_pairs = drop_pairs(pairs, t.pair_dropout, t.seed) if pairs is not None else None
    train_windows, train_y = training_windows(cfg, data.tokenizer, texts, student_pairs, y)
    teacher_logits = distillation.teacher_logits[train_windows.owner] if distillation is not None else None
    decision = Decision(data.labels, m.combine, gate=gate, multi_label=multi_label, article_reading=m.article_reading)
    val_route = decision.route(data.texts["validation"], data.pairs["validation"])
    val_texts = [data.texts["validation"][i] for i in val_route.rows]
    val_pairs = val_route.take(data.pairs["validation"])
    val_windows = encode_windows(data.tokenizer, val_texts, val_pairs, reading_settings(cfg))
    steps_per_epoch = math.ceil(len(train_windows) / t.batch_size / session.accelerator.num_processes)
    total_steps = t.max_steps or steps_per_epoch * t.epochs
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.learning_rate,
        fused=session.device.type in ("cpu", "cuda"),
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(t.warmup_ratio * total_steps), total_steps)
    # the scheduler is stepped by hand, once per step: one prepared by accelerate steps once per process
    model, optimizer = session.accelerator.prepare(model, optimizer)
    weight = class_weights(train_y, len(data.labels), t.class_weights) if t.class_weights != "none" else None
    weight_tensor = torch.tensor(weight).to(session.device) if weight is not None else None
    # multi-label: a binary cross-entropy a label, its positive class weighted by `class_weights`
    loss_fn = (
        torch.nn.BCEWithLogitsLoss(pos_weight=weight_tensor)
        if multi_label
        else torch.nn.CrossEntropyLoss(weight=weight_tensor)
    )
    pad_id = int(data.tokenizer.pad_token_id or 0)
    epochs = min(t.epochs, math.ceil(total_steps / steps_per_epoch))
    return Setup(
        model,
        optimizer,
        scheduler,
        loss_fn,
        pad_id,
        train_windows,
        train_y,
        rows,
        decision,
        val_route,
        val_windows,
        total_steps,
        epochs,
        fast_paths,
        distillation,
        teacher_logits,
    )


def set_prior_bias(model: Any, y: np.ndarray) -> None:
    """A multi-label head starts at each label's training frequency (its bias the prior's log-odds; Lin et
    al., 2017): at zero, every label starts at 0.5, and the first steps of binary cross-entropy over
    dozens of mostly-absent labels push the whole encoder toward "no label", which it does not recover from."""
    import torch

    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Linear) or head.bias is None:
        return
    prior = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)
    with torch.no_grad():
        head.bias.copy_(torch.as_tensor(np.log(prior / (1 - prior)), dtype=head.bias.dtype))


def apply_fast_paths(cfg: Config, model: Any, session: Session) -> dict[str, bool]:
    # "token" in a key's name is a model's token, not a password
    fast_paths = {"first_token_last_layer": False, "rand_dropout": False}  # nosec B105
    if cfg.train.fast_paths:
        from pipeline.models.fast_bert import first_token_last_layer, rand_dropout  # they import torch at their top

        fast_paths["first_token_last_layer"] = first_token_last_layer(model)
        # CUDA's dropout kernel is fast already; the swap pays on CPU only
        fast_paths["rand_dropout"] = session.device.type == "cpu" and rand_dropout(model) > 0
    return fast_paths


@dataclass
class Progress:
    """Where the epochs stand: the best epoch so far and its validation scores."""

    step: int = 0
    step_seconds: float = 0.0  # time spent in optimizer steps (no evaluation)
    best_f1: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    best_val: dict[str, Any] = field(default_factory=dict)
    best_val_logits: np.ndarray | None = None
    first_epoch: int = 1

    @classmethod
    def resumed_from(cls, resumed: ResumeInfo, state_dir: Any, epochs: int) -> Progress:
        return cls(
            resumed.step,
            0.0,
            resumed.best_f1,
            resumed.best_epoch,
            resumed.bad_epochs,
            resumed.best_val,
            saved_val_logits(state_dir),
            epochs + 1 if resumed.stop else resumed.epoch + 1,
        )


def save_checkpoint(
    cfg: Config, data: TrainingData, inner: Any, decision: Decision, epoch: int, f1: float, teacher: str | None = None
) -> None:
    """The model of this epoch as a model folder: weights, tokenizer, gate, card and the resolved config."""
    m = cfg.model
    card = ModelCard(
        kind="finetuned",
        task=cfg.task,
        labels=data.labels,
        text_columns=cfg.data.text_columns,
        pair_column=cfg.data.pair_column,
        pooling=m.pooling,
        windows=reading_settings(cfg),
        decision=DecisionCard(
            combine=m.combine,
            gate_label=decision.gate.label if decision.gate else None,
            multi_label=decision.multi_label,
        ),
        training=TrainingCard(val_macro_f1=f1, epoch=epoch, data_digest=data.digest, complete=False, teacher=teacher),
    )
    with atomic_dir(data.model_dir) as tmp:
        inner.save_pretrained(tmp)
        data.tokenizer.save_pretrained(tmp)
        if decision.gate is not None:
            decision.gate.save(tmp)
        write_card(tmp, card)
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def train_epoch(
    cfg: Config, session: Session, setup: Setup, state: Progress, rng: random.Random, advance: Any, log: TolerantLog
) -> list[float]:
    """One epoch of optimizer steps over this process's share of the batches; the train losses."""
    import mlflow
    import torch

    t, accelerator, model = cfg.train, session.accelerator, setup.model
    model.train()
    batches = length_grouped_batches([len(x) for x in setup.train_windows.input_ids], t.batch_size, rng)
    losses: list[float] = []
    for idx in process_share(batches, accelerator.process_index, accelerator.num_processes):
        if state.step >= setup.total_steps:
            break
        step_start = time.perf_counter()
        batch = pad_batch(setup.train_windows, idx, setup.pad_id)
        target = torch.as_tensor(setup.train_y[idx], device=session.device)
        if target.ndim == 2:  # multi-label: 0/1 floats for the binary cross-entropy
            target = target.float()
        with accelerator.autocast():
            logits = model(**{k: v.to(session.device) for k, v in batch.items()}).logits
        if setup.distillation is not None and setup.teacher_logits is not None:
            teacher = torch.as_tensor(setup.teacher_logits[idx], device=session.device)
            d = setup.distillation
            loss = distillation_loss(logits.float(), target, teacher, d.temperature, d.alpha)
        else:
            loss = setup.loss_fn(logits.float(), target)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        setup.optimizer.step()
        setup.scheduler.step()
        setup.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        losses.append(loss.item())  # .item() waits for the step, so the time below is its own
        state.step_seconds += time.perf_counter() - step_start
        advance(float(np.mean(losses[-20:])))
        if state.step % 10 == 0:
            log(mlflow.log_metric, "train_loss_step", float(np.mean(losses[-10:])), step=state.step)
    return losses


def validate(cfg: Config, session: Session, data: TrainingData, setup: Setup) -> tuple[dict[str, Any], np.ndarray]:
    """The validation metrics of the model as it is now, and its validation window logits."""
    inner = session.accelerator.unwrap_model(setup.model)
    logits = window_logits(
        inner, setup.val_windows, setup.pad_id, cfg.runtime.eval_batch_size, session.device, session.precision
    )
    probs = setup.decision.decide(setup.val_route, logits, setup.val_windows, [1.0])[0]
    return compute_metrics(data.ys["validation"], probs, data.labels), logits


def keep_best(
    cfg: Config,
    session: Session,
    data: TrainingData,
    setup: Setup,
    state: Progress,
    epoch: int,
    val: dict[str, Any],
    logits: np.ndarray,
) -> bool:
    """Save the model if this epoch is the best so far; whether training stops here (early stop, the
    last epoch, the step budget)."""
    from accelerate.utils import broadcast_object_list

    # the main process's score decides for all, so that every process stops at the same epoch
    [val["macro_f1"]] = broadcast_object_list([val["macro_f1"]])
    if val["macro_f1"] > state.best_f1:
        state.best_f1, state.best_epoch, state.bad_epochs = val["macro_f1"], epoch, 0
        state.best_val, state.best_val_logits = val, logits
        if session.main:
            inner = session.accelerator.unwrap_model(setup.model)
            teacher = setup.distillation.teacher if setup.distillation is not None else None
            save_checkpoint(cfg, data, inner, setup.decision, epoch, state.best_f1, teacher)
        return state.step >= setup.total_steps or epoch == setup.epochs
    state.bad_epochs += 1
    return (
        state.bad_epochs > cfg.train.early_stopping_patience or state.step >= setup.total_steps or epoch == setup.epochs
    )


def progress_bar(show: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show,
        console=Console(stderr=True),  # stdout is for results (`--json`)
    )


def optimise(
    cfg: Config,
    session: Session,
    data: TrainingData,
    setup: Setup,
    state: Progress,
    rng: random.Random,
    run_id: str,
    show_progress: bool,
    log: TolerantLog,
) -> None:
    """The epochs from `state.first_epoch` on; the state for `--resume` is saved after each. A tracking
    store that fails stops the logging (`log` keeps its error), never the epochs."""
    import mlflow

    noted = log.error is not None
    show = show_progress and session.main and not progress.quiet()
    # a terminal gets the bar; a log file (a cluster job) gets a line every ~10 s
    lines = (
        progress.reporting("train", setup.total_steps, "steps") if show and not sys.stderr.isatty() else nullcontext()
    )
    with progress_bar(show and sys.stderr.isatty()) as bar, lines:
        task = bar.add_task("train", total=setup.total_steps, completed=state.step, epoch=state.first_epoch, loss=0.0)
        for epoch in range(state.first_epoch, setup.epochs + 1):
            epoch_start = time.perf_counter()

            def advance(loss: float, e: int = epoch) -> None:
                bar.update(task, advance=1, epoch=e, loss=loss)
                progress.advance(1)

            losses = train_epoch(cfg, session, setup, state, rng, advance, log)
            val, logits = validate(cfg, session, data, setup)
            loss = float(np.mean(losses)) if losses else float("nan")
            metrics = {"train_loss": loss, "val_macro_f1_epoch": val["macro_f1"], "val_accuracy_epoch": val["accuracy"]}
            if "micro_f1" in val:
                metrics["val_micro_f1_epoch"] = val["micro_f1"]
            log(mlflow.log_metrics, metrics | {"epoch_seconds": time.perf_counter() - epoch_start}, step=epoch)
            if log.error is not None and not noted:
                noted = True
                bar.console.print(
                    f"note: the MLflow store failed ({first_line(log.error)}); training goes on without logging"
                )
            if session.main:
                f1, accuracy = val["macro_f1"], val["accuracy"]
                micro = f", micro-F1 {val['micro_f1']:.4f}" if "micro_f1" in val else ""
                bar.console.print(
                    f"epoch {epoch}: train loss {loss:.4f}, validation macro-F1 {f1:.4f}{micro}, "
                    f"accuracy {accuracy:.4f}"
                )
            stop = keep_best(cfg, session, data, setup, state, epoch, val, logits)
            if stop and session.main and state.bad_epochs > cfg.train.early_stopping_patience:
                bar.console.print(f"early stop: no better validation macro-F1 for {state.bad_epochs} epochs")
            save_progress(cfg, session, data, setup, state, epoch, stop, rng, run_id)
            if stop:
                break
    session.accelerator.wait_for_everyone()


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def save_progress(
    cfg: Config,
    session: Session,
    data: TrainingData,
    setup: Setup,
    state: Progress,
    epoch: int,
    stop: bool,
    rng: random.Random,
    run_id: str,
) -> None:
    version, internal, gauss_next = rng.getstate()
    info = ResumeInfo(
        epoch,
        state.step,
        state.best_f1,
        state.best_epoch,
        state.bad_epochs,
        stop,
        run_id,
        [version, list(internal), gauss_next],
        {"ece": float(state.best_val["ece"])},
    )
    if state.best_val_logits is None:
        raise RuntimeError("no validation logits to save")
    save_resume_state(
        session.accelerator,
        resume_dir(data.model_dir),
        cfg,
        data.digest,
        info,
        state.best_val_logits,
        (setup.model, setup.optimizer, setup.scheduler),
    )

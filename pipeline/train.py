"""Stage 2, train: fine-tune a sequence classifier, keep the best epoch, evaluate, log and register.

One MLflow run holds the resolved config, per-epoch train loss and validation metrics, the
test metrics of the best checkpoint, and the model, registered under the task's name with
alias `champion` (first, or better on validation than the champion) or `challenger`.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.config import Config, resolve_path
from pipeline.errors import PipelineError
from pipeline.evaluate import extra_test_data, label_indices, log_dataset, log_prepared_splits, sample_rows
from pipeline.gate import RelatednessGate, combine_gate
from pipeline.io import write_json_atomic
from pipeline.metrics import compute_metrics, fit_class_bias, fit_temperature, log_metrics, log_mistakes
from pipeline.modeling import (
    MODEL_META,
    Classifier,
    Windows,
    apply_article_bias,
    apply_class_bias,
    build_classifier,
    combine_windows,
    encode_windows,
    load_tokenizer,
    pad_batch,
    pick_device,
    pick_precision,
    set_threads,
    window_logits,
    windows_per_text,
)
from pipeline.resume import ResumeInfo, read_resume_info, resume_dir, save_resume_state, saved_val_logits
from pipeline.tfidf import TfidfModel, apply_blend, fit_stack, fit_tfidf, log_clipped, stack, tfidf_texts


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


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar-length examples: little padding, still a random order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i], reverse=True)
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def process_share(batches: list[list[int]], index: int, n_processes: int) -> list[list[int]]:
    """The batches process `index` of `n_processes` trains on. Every process gets as many (one with a
    step more would wait forever for the others' gradients): the first batches fill the last round."""
    padded = batches + batches[: -len(batches) % n_processes]
    return padded[index::n_processes]


def class_weights(y: np.ndarray, n_labels: int, how: str = "balanced") -> np.ndarray:
    """Loss weights: inverse class frequency (`balanced`) or its square root (`sqrt`), mean 1 over examples."""
    counts = np.bincount(y, minlength=n_labels).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    if how == "sqrt":
        weights = np.sqrt(weights)
    weights *= len(y) / float((weights * counts).sum())
    return weights.astype(np.float32)


def training_windows(
    cfg: Config, tokenizer: Any, texts: list[str], pairs: list[str] | None, y: np.ndarray
) -> tuple[Windows, np.ndarray]:
    m, t = cfg.model, cfg.train
    # training may see longer or more windows than the model reads at evaluate and predict time
    max_length, stride = t.max_length or m.max_length, m.stride if t.stride is None else t.stride
    max_windows = 1 if t.windows == "first" else t.max_windows or m.max_windows
    windows = encode_windows(
        tokenizer,
        texts,
        pairs,
        max_length,
        stride,
        max_windows,
        m.mark_pair,
        m.evidence_first,
        m.pooling == "mean_mention",
    )
    return windows, y[np.asarray(windows.owner)]


def drop_pairs(pairs: list[str], fraction: float, seed: int) -> list[str]:
    """The pairs with a seeded `fraction` of them blanked: a model trained on titles then also
    works on articles that come without one (most .txt files)."""
    if fraction <= 0:
        return pairs
    blank = np.random.default_rng(seed).random(len(pairs)) < fraction
    return ["" if b else p for p, b in zip(pairs, blank, strict=True)]


@dataclass
class GatedSplit:
    """A split as the model sees it: the rows the gate passes (all rows when there is no gate)."""

    passed: np.ndarray
    p_gate: np.ndarray | None
    windows: Windows

    def probs(self, logits: np.ndarray, how: str, labels: list[str], gate: RelatednessGate | None) -> np.ndarray:
        model_probs = combine_windows(logits, self.windows.owner, len(self.passed), how)
        if gate is None or self.p_gate is None:
            return model_probs
        return combine_gate(self.p_gate, self.passed, model_probs, labels.index(gate.label))


def gated_split(
    cfg: Config, tokenizer: Any, texts: list[str], pairs: list[str] | None, gate: RelatednessGate | None
) -> GatedSplit:
    m = cfg.model
    p_gate = gate.probability(pairs, texts) if gate is not None and pairs is not None else None
    passed = (
        np.flatnonzero(p_gate < gate.threshold) if gate is not None and p_gate is not None else np.arange(len(texts))
    )
    windows = encode_windows(
        tokenizer,
        [texts[i] for i in passed],
        [pairs[i] for i in passed] if pairs is not None else None,
        m.max_length,
        m.stride,
        m.max_windows,
        m.mark_pair,
        m.evidence_first,
        m.pooling == "mean_mention",
    )
    return GatedSplit(passed, p_gate, windows)


def train(
    cfg: Config, register: bool = True, show_progress: bool = True, pseudo_labels: bool = False, resume: bool = False
) -> TrainResult:
    """Fine-tune on the prepared train split; with `pseudo_labels`, on the zero-shot classifier's
    confident labels of the train and validation articles instead of their gold labels (self-training:
    no gold label outside the test split is read), registered under `zeroshot.self_training`'s name.
    With `resume`, continue the interrupted training of this config after its last complete epoch."""
    import mlflow
    import pandas as pd
    import torch
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list, set_seed
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from transformers import get_linear_schedule_with_warmup

    from pipeline import tracking
    from pipeline.data import extra_id_prefix, prepare
    from pipeline.io import atomic_dir
    from pipeline.mlflow_model import log_classifier

    started = time.perf_counter()
    set_threads(cfg.runtime.threads)
    device = pick_device(cfg.runtime.device)
    precision = pick_precision(cfg.runtime.precision, device)
    # launched by `accelerate launch` or `torchrun`, each process trains on its share of the batches;
    # the main process alone prepares the data first, tracks, evaluates and registers
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision={"fp32": "no"}.get(precision, precision))
    device, main = accelerator.device, accelerator.is_main_process
    # then each machine's first process (its disk may not be shared), then the rest, who find it prepared
    with accelerator.main_process_first(), accelerator.local_main_process_first():
        prepared = prepare(cfg)
    from datasets import load_from_disk

    dataset = load_from_disk(str(prepared.path))
    labels: list[str] = prepared.card["labels"]
    set_seed(cfg.train.seed)  # the same in every process: the same weights and the same batch order to share out

    tokenizer = load_tokenizer(cfg.model.name)
    texts = {s: list(dataset[s]["text"]) for s in ("train", "validation", "test")}
    ys = {s: np.asarray(dataset[s]["label"]) for s in ("train", "validation", "test")}
    pairs = {s: list(dataset[s]["pair"]) if "pair" in dataset[s].column_names else None for s in texts}
    registered_model, model_dir = cfg.mlflow.registered_model, resolve_path(cfg.train.output_dir)
    pseudo_stats: dict[str, float] = {}
    if pseudo_labels:
        from pipeline.zeroshot import build_zeroshot, require_zeroshot
        from pipeline.zeroshot import pseudo_labels as zero_shot_labels

        self_training = require_zeroshot(cfg).self_training
        registered_model, model_dir = self_training.registered_model, resolve_path(self_training.output_dir)
        labeller = build_zeroshot(cfg)

        def keep_rows(split: str, rows: list[int] | np.ndarray) -> None:
            texts[split], ys[split] = [texts[split][i] for i in rows], ys[split][rows]
            split_pairs = pairs[split]
            pairs[split] = [split_pairs[i] for i in rows] if split_pairs is not None else None

        # self-training labels the task's own articles; the labelled extra sets are left out
        extra_ids = tuple(extra_id_prefix(e.name) for e in cfg.data.extra_train)
        for split in ("train", "validation"):
            keep_rows(
                split, [i for i, row_id in enumerate(dataset[split]["id"]) if not str(row_id).startswith(extra_ids)]
            )
            kept, y_pseudo = zero_shot_labels(labeller, self_training.keep_fraction, labels, texts[split], pairs[split])
            # how good the kept labels are: reported, never used to choose anything
            pseudo_stats[f"pseudo_{split}_kept"] = len(kept)
            pseudo_stats[f"pseudo_{split}_gold_agreement"] = float((y_pseudo == ys[split][kept]).mean())
            keep_rows(split, kept)
            ys[split] = y_pseudo
    data_digest = prepared.card["content_digest"]
    state_dir = resume_dir(model_dir)
    resumed = read_resume_info(state_dir, cfg, data_digest) if resume else None
    if resumed is None and state_dir.exists() and main:
        print(
            f"note: {state_dir} holds an interrupted training; this one starts anew (--resume continues it)",
            file=sys.stderr,
        )
    m = cfg.model
    gate, rows = None, np.arange(len(texts["train"]))
    if m.gate_label is not None:
        if m.gate_label not in labels or pairs["train"] is None:
            raise PipelineError(f"model.gate_label {m.gate_label!r} needs a pair column and a label in {labels}")
        is_gate = ys["train"] == labels.index(m.gate_label)
        gate, p_train = RelatednessGate.fit(
            m.gate_label, m.gate_threshold, pairs["train"], texts["train"], is_gate, cfg.train.seed
        )
        # the transformer learns every row the gate leaves to it: all other labels, and the
        # gate-label rows the gate is unsure of (hard negatives)
        rows = np.flatnonzero(~is_gate | (p_train < gate.threshold))
    keep = sample_rows(ys["train"][rows], cfg.train.max_examples, cfg.train.seed)
    rows = rows[keep]
    model = build_classifier(m.name, labels, m.attention_dropout, m.pooling)
    fast_paths = {"first_token_last_layer": False, "rand_dropout": False}
    if cfg.train.fast_paths:
        from pipeline.fast_bert import first_token_last_layer, rand_dropout

        fast_paths["first_token_last_layer"] = first_token_last_layer(model)
        # CUDA's dropout kernel is fast already; the swap pays on CPU only
        fast_paths["rand_dropout"] = device.type == "cpu" and rand_dropout(model) > 0
    train_windows, train_y = training_windows(
        cfg,
        tokenizer,
        [texts["train"][i] for i in rows],
        drop_pairs([pairs["train"][i] for i in rows], cfg.train.pair_dropout, cfg.train.seed)
        if pairs["train"] is not None
        else None,
        ys["train"][rows],
    )
    val_split = gated_split(cfg, tokenizer, texts["validation"], pairs["validation"], gate)
    lengths = [len(x) for x in train_windows.input_ids]

    t = cfg.train
    rng = random.Random(t.seed)
    steps_per_epoch = math.ceil(len(train_windows) / t.batch_size / accelerator.num_processes)
    total_steps = t.max_steps or steps_per_epoch * t.epochs
    epochs = min(t.epochs, math.ceil(total_steps / steps_per_epoch))
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.learning_rate,
        fused=device.type in ("cpu", "cuda"),
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(t.warmup_ratio * total_steps), total_steps)
    # the scheduler is stepped by hand, once per step: one prepared by accelerate steps once per process
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if resumed is not None:
        accelerator.load_state(str(state_dir))  # weights, optimizer, scheduler, random states
        rng.setstate(resumed.batch_rng_state())
    weight = (
        torch.tensor(class_weights(train_y, len(labels), t.class_weights)).to(device)
        if t.class_weights != "none"
        else None
    )
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    pad_id = int(tokenizer.pad_token_id or 0)

    run_name = f"train-{cfg.task}" + ("-pseudo-labels" if pseudo_labels else "")
    if main:
        tracking.use_experiment(cfg.mlflow.experiment)
    if not main:
        run_context: Any = nullcontext()
    elif resumed is not None:  # the interrupted run goes on: its curves continue, its inputs are logged already
        run_context = mlflow.start_run(run_id=resumed.run_id, log_system_metrics=True)
    else:
        run_context = mlflow.start_run(run_name=run_name, log_system_metrics=True)
    with run_context as run:
        if main and resumed is not None:
            mlflow.set_tag("resumed_after_epoch", str(resumed.epoch))
        if main and resumed is None:
            mlflow.set_tags(
                {
                    "stage": "train",
                    "task": cfg.task,
                    "model": cfg.model.name,
                    "data_digest": data_digest,
                    "device": str(device),
                    "precision": precision,
                    "fast_paths": ",".join(k for k, on in fast_paths.items() if on) or "none",
                    "pseudo_labels": str(pseudo_labels).lower(),
                    "processes": str(accelerator.num_processes),
                }
            )
            tracking.log_config(cfg)
            if pseudo_labels:
                mlflow.log_metrics(pseudo_stats)
                for split in ("train", "validation"):
                    frame = {"text": texts[split], "label": [labels[i] for i in ys[split]]}
                    log_dataset(
                        pd.DataFrame(frame), prepared.card["source"], f"{cfg.task}-{split}-pseudo-labels", split
                    )
            else:
                log_prepared_splits(dataset, prepared.card["source"], cfg.task)
            mlflow.log_metrics({"train_windows": len(train_windows), "train_articles": len(rows)})
            if gate is not None and val_split.p_gate is not None:
                is_gate = ys["validation"] == labels.index(gate.label)
                stopped = val_split.p_gate >= gate.threshold
                mlflow.log_metrics(
                    {
                        "val_gate_stopped": float(stopped.mean()),
                        "val_gate_precision": float(is_gate[stopped].mean()) if stopped.any() else float("nan"),
                        "train_gate_hard_negatives": int((ys["train"][rows] == labels.index(gate.label)).sum()),
                    }
                )

        best_f1, best_epoch, bad_epochs, step, step_seconds = -1.0, 0, 0, 0, 0.0
        first_epoch = 1
        if resumed is not None:
            best_f1, best_epoch, bad_epochs, step = (
                resumed.best_f1,
                resumed.best_epoch,
                resumed.bad_epochs,
                resumed.step,
            )
            best_val, best_val_logits = resumed.best_val, saved_val_logits(state_dir)
            first_epoch = epochs + 1 if resumed.stop else resumed.epoch + 1
        log = tracking.TolerantLog(enabled=main)  # a tracking server that goes away does not stop the training
        progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not (show_progress and main),
            console=Console(stderr=True),  # stdout is for results (`--json`)
        )
        with progress:
            bar = progress.add_task("train", total=total_steps, completed=step, epoch=first_epoch, loss=float("nan"))
            for epoch in range(first_epoch, epochs + 1):
                epoch_start = time.perf_counter()
                model.train()
                batches = length_grouped_batches(lengths, t.batch_size, rng)
                batches = process_share(batches, accelerator.process_index, accelerator.num_processes)
                losses = []
                for idx in batches:
                    if step >= total_steps:
                        break
                    step_start = time.perf_counter()
                    batch = pad_batch(train_windows, idx, pad_id)
                    target = torch.as_tensor(train_y[idx], device=device)
                    with accelerator.autocast():
                        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
                    loss = loss_fn(logits.float(), target)
                    accelerator.backward(loss)
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    losses.append(loss.item())  # .item() waits for the step, so the time below is its own
                    step_seconds += time.perf_counter() - step_start
                    progress.update(bar, advance=1, epoch=epoch, loss=float(np.mean(losses[-20:])))
                    if step % 10 == 0:
                        log(mlflow.log_metric, "train_loss_step", float(np.mean(losses[-10:])), step=step)
                inner = accelerator.unwrap_model(model)
                val_logits = window_logits(
                    inner, val_split.windows, pad_id, cfg.runtime.eval_batch_size, device, precision
                )
                val = compute_metrics(ys["validation"], val_split.probs(val_logits, m.combine, labels, gate), labels)
                log(
                    mlflow.log_metrics,
                    {
                        "train_loss": float(np.mean(losses)) if losses else float("nan"),
                        "val_macro_f1_epoch": val["macro_f1"],
                        "val_accuracy_epoch": val["accuracy"],
                        "epoch_seconds": time.perf_counter() - epoch_start,
                    },
                    step=epoch,
                )
                if main:
                    progress.console.print(
                        f"epoch {epoch}: train loss {np.mean(losses) if losses else float('nan'):.4f}, "
                        f"validation macro-F1 {val['macro_f1']:.4f}, accuracy {val['accuracy']:.4f}"
                    )
                # the main process's score decides for all, so that every process stops at the same epoch
                [val["macro_f1"]] = broadcast_object_list([val["macro_f1"]])
                if val["macro_f1"] > best_f1:
                    best_f1, best_epoch, bad_epochs = val["macro_f1"], epoch, 0
                    best_val, best_val_logits = val, val_logits
                    if main:
                        clf = Classifier(
                            inner,
                            tokenizer,
                            labels,
                            m.max_length,
                            m.stride,
                            m.max_windows,
                            m.combine,
                            device,
                            precision,
                            pooling=m.pooling,
                            gate=gate,
                            mark_pair=m.mark_pair,
                            evidence_first=m.evidence_first,
                        )
                        with atomic_dir(model_dir) as tmp:
                            clf.save(
                                tmp,
                                {
                                    "task": cfg.task,
                                    "text_columns": cfg.data.text_columns,
                                    "pair_column": cfg.data.pair_column,
                                    "val_macro_f1": best_f1,
                                    "epoch": epoch,
                                    "data_digest": data_digest,
                                },
                            )
                            (tmp / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
                    stop = False
                else:
                    bad_epochs += 1
                    stop = bad_epochs > t.early_stopping_patience
                    if stop and main:
                        progress.console.print(f"early stop: no better validation macro-F1 for {bad_epochs} epochs")
                stop = stop or step >= total_steps or epoch == epochs
                version, internal, gauss_next = rng.getstate()
                progress_now = ResumeInfo(
                    epoch,
                    step,
                    best_f1,
                    best_epoch,
                    bad_epochs,
                    stop,
                    run.info.run_id if run is not None else "",
                    [version, list(internal), gauss_next],
                    {"ece": float(best_val["ece"])},
                )
                save_resume_state(accelerator, state_dir, cfg, data_digest, progress_now, best_val_logits)
                if stop:
                    break

        accelerator.wait_for_everyone()
        if log.error is not None:  # the model is on disk; `pipeline log-model` logs it later
            raise log.error
        if not main:
            return TrainResult("", model_dir, best_epoch, best_f1, {}, {}, None, None, 0.0, main_process=False)
        assert run is not None  # the main process tracks
        # every combination is scored on validation so the configured choice can be checked
        for how in ("mean_logits", "max_logits", "mean_probs", "first"):
            probs = val_split.probs(best_val_logits, how, labels, gate)
            mlflow.log_metric(f"val_macro_f1_{how}", compute_metrics(ys["validation"], probs, labels)["macro_f1"])

        def val_probs_at(temperature: float) -> np.ndarray:
            return val_split.probs(best_val_logits / temperature, m.combine, labels, gate)

        # temperature scaling on validation, stored with the model and applied wherever it predicts
        temperature = fit_temperature(val_probs_at, ys["validation"])
        meta_path = model_dir / MODEL_META
        meta = {**json.loads(meta_path.read_text(encoding="utf-8")), "temperature": temperature}
        val_probs = val_probs_at(temperature)
        if m.tfidf_blend:
            val_probs, blend_stats = fit_tfidf_blend(cfg, texts, pairs, ys, labels, val_probs, model_dir)
            mlflow.log_metrics(blend_stats)
            best_f1 = compute_metrics(ys["validation"], val_probs, labels)["macro_f1"]
            weights = [blend_stats["blend_transformer_weight"], blend_stats["blend_tfidf_weight"]]
            meta |= {"tfidf_blend": weights, "val_macro_f1": best_f1}
        if t.class_bias:
            bias = [float(b) for b in fit_class_bias(val_probs, ys["validation"])]
            val_probs = apply_class_bias(val_probs, bias)
            best_f1 = compute_metrics(ys["validation"], val_probs, labels)["macro_f1"]
            meta |= {"class_bias": bias, "val_macro_f1": best_f1}
            mlflow.log_metrics({f"class_bias_{label}": b for label, b in zip(labels, bias, strict=True)})
        write_json_atomic(meta_path, meta)
        best = Classifier.load(model_dir, str(device), precision, cfg.runtime.eval_batch_size)
        if t.article_bias_set:
            best.article_bias = fit_article_bias(best, cfg, t.article_bias_set)
            meta["article_bias"] = best.article_bias
            write_json_atomic(meta_path, meta)
            mlflow.log_metrics({f"article_bias_{c}": b for c, b in zip(labels, best.article_bias, strict=True)})
        log_metrics(compute_metrics(ys["validation"], val_probs, labels), "val")
        test_uncalibrated, test = best.predict_proba_at(texts["test"], pairs["test"], [1.0, temperature])
        test_metrics = compute_metrics(ys["test"], test, labels)
        test_metrics["ece_uncalibrated"] = compute_metrics(ys["test"], test_uncalibrated, labels)["ece"]
        log_metrics(test_metrics, "test")
        log_mistakes(texts["test"], pairs["test"], ys["test"], test, labels, "test")
        mlflow.log_metrics(
            {
                "temperature": temperature,
                "val_ece_uncalibrated": best_val["ece"],
                "test_ece_uncalibrated": test_metrics["ece_uncalibrated"],
            }
        )
        extra_metrics = {}
        for extra in extra_test_data(cfg):
            y_extra = label_indices(extra.labels, labels)
            if best.gate is not None:
                extra_metrics[extra.name] = compute_metrics(
                    y_extra, best.predict_proba(extra.texts, extra.pairs), labels
                )
            else:  # every window combination is logged, so article-level settings can be chosen on a dev set
                logits, windows = best.window_logits(extra.texts, extra.pairs)
                hows = ("mean_logits", "max_logits", "mean_probs", "first")
                combined = [
                    combine_windows(logits / best.temperature, windows.owner, len(extra.texts), how) for how in hows
                ]
                # one TF-IDF pass per set, stacked with every combination
                blended = apply_blend(combined, best.tfidf, best.blend, extra.texts, extra.pairs)
                n_windows = windows_per_text(windows, len(extra.texts))
                blended = [
                    apply_article_bias(apply_class_bias(probs, best.class_bias), n_windows, best.article_bias)
                    for probs in blended
                ]
                for how, probs in zip(hows, blended, strict=True):
                    scored = compute_metrics(y_extra, probs, labels)
                    mlflow.log_metric(f"test_{extra.name}_macro_f1_{how}", scored["macro_f1"])
                    if how == best.combine:
                        extra_metrics[extra.name] = scored
            log_metrics(extra_metrics[extra.name], f"test_{extra.name}")
        steps_per_second = step / step_seconds if step_seconds else 0.0
        mlflow.log_metrics(
            {
                "best_epoch": best_epoch,
                "train_seconds": time.perf_counter() - started,
                "train_steps_per_second": steps_per_second,
            }
        )

        info = log_classifier(model_dir, labels, registered_model if register else None)
        alias = None
        if register and info.registered_model_version is not None:
            alias = tracking.assign_alias(registered_model, str(info.registered_model_version), best_f1)
            mlflow.set_tag("registered", f"{registered_model} v{info.registered_model_version} @{alias}")
        model_uri = (
            f"models:/{registered_model}/{info.registered_model_version}"
            if register and info.registered_model_version is not None
            else info.model_uri
        )
    if best_epoch == 0:
        raise PipelineError("training produced no checkpoint")
    shutil.rmtree(state_dir, ignore_errors=True)  # the training is complete: nothing left to resume
    return TrainResult(
        run.info.run_id,
        model_dir,
        best_epoch,
        best_f1,
        test_metrics,
        extra_metrics,
        model_uri,
        alias,
        time.perf_counter() - started,
        steps_per_second,
    )


def fit_article_bias(model: Classifier, cfg: Config, set_name: str) -> list[float]:
    """Offsets for texts longer than one window, fitted for macro-F1 on the labelled articles of
    the extra test set `set_name` (its scores are then in-sample)."""
    [articles] = extra_test_data(cfg, set_name)
    n_windows = model.windows_per_text(articles.texts, articles.pairs)
    rows = np.flatnonzero(n_windows > 1)
    if len(rows) == 0:
        raise PipelineError(f"train.article_bias_set {set_name!r} has no text longer than one window")
    probs = model.predict_proba(
        [articles.texts[i] for i in rows], [articles.pairs[i] for i in rows] if articles.pairs else None
    )
    y = label_indices([articles.labels[i] for i in rows], model.labels)
    return [float(b) for b in fit_class_bias(probs, y)]


def fit_tfidf_blend(
    cfg: Config,
    texts: dict[str, list[str]],
    pairs: dict[str, list[str] | None],
    ys: dict[str, np.ndarray],
    labels: list[str],
    val_probs: np.ndarray,
    model_dir: Path,
) -> tuple[np.ndarray, dict[str, float]]:
    """Fit the TF-IDF model on train (C chosen on validation), stack it with the transformer's
    validation probabilities (weights fitted on validation log loss), save it beside the model;
    returns the blended validation probabilities and what to log."""
    train_texts, val_texts = (tfidf_texts(texts[s], pairs[s]) for s in ("train", "validation"))
    fitted = fit_tfidf(cfg.baseline, train_texts, ys["train"], val_texts, ys["validation"], labels, cfg.train.seed)
    tfidf = TfidfModel.from_fitted(fitted)
    log_val_tfidf, log_val_transformer = tfidf.log_proba(val_texts), log_clipped(val_probs)
    weights = fit_stack(log_val_transformer, log_val_tfidf, ys["validation"])
    tfidf.save(model_dir)
    blended = stack(log_val_transformer, log_val_tfidf, weights)
    return blended, {
        "blend_transformer_weight": weights[0],
        "blend_tfidf_weight": weights[1],
        "blend_tfidf_c": fitted.c,
        "val_macro_f1_transformer": compute_metrics(ys["validation"], val_probs, labels)["macro_f1"],
        "val_macro_f1_tfidf": compute_metrics(ys["validation"], np.exp(log_val_tfidf), labels)["macro_f1"],
    }


def log_trained_model(folder: Path, register: bool = True) -> dict[str, Any]:
    """Log a model folder trained while the tracking store was away, as a new run: the config it was
    trained with, its test metrics, the model, and its registry alias (by its validation macro-F1)."""
    import mlflow

    from pipeline import tracking
    from pipeline.config import load_config
    from pipeline.evaluate import log_evaluation, prepared_test_data
    from pipeline.mlflow_model import log_classifier
    from pipeline.modeling import load_model

    meta_path, config_path = folder / MODEL_META, folder / "config.yaml"
    if not meta_path.is_file() or not config_path.is_file():
        raise PipelineError(f"{folder} is not a trained model folder (it needs {MODEL_META} and config.yaml)")
    cfg = load_config(config_path)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    r = cfg.runtime
    clf = load_model(folder, r.device, r.precision, r.eval_batch_size)
    tracking.use_experiment(cfg.mlflow.experiment)
    with mlflow.start_run(run_name=f"train-{cfg.task}-logged-later") as run:
        mlflow.set_tags({"stage": "train", "task": cfg.task, "model": cfg.model.name, "logged_later": "true"})
        tracking.log_config(cfg)
        val_f1 = float(meta.get("val_macro_f1", float("nan")))
        mlflow.log_metrics({"val_macro_f1": val_f1, "temperature": float(meta.get("temperature", 1.0))})
        result = log_evaluation(cfg, clf, str(folder), prepared_test_data(cfg))
        name = cfg.mlflow.registered_model
        info = log_classifier(folder, clf.labels, name if register else None)
        alias = None
        if register and info.registered_model_version is not None:
            alias = tracking.assign_alias(name, str(info.registered_model_version), val_f1)
            mlflow.set_tag("registered", f"{name} v{info.registered_model_version} @{alias}")
    return {**result, "run_id": run.info.run_id, "alias": alias, "registered_model": name if alias else None}

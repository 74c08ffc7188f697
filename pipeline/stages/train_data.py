"""Train stage, the data: the prepared splits (or their zero-shot pseudo-labels), the rows the transformer
learns (after the relatedness gate and any sample), and the windows and batches it trains on."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import Config, resolve_path
from pipeline.core.errors import PipelineError
from pipeline.core.labelled import sample_rows
from pipeline.models.gate import RelatednessGate
from pipeline.models.runtime import load_tokenizer
from pipeline.models.zeroshot import build_zeroshot, pseudo_labels, require_zeroshot
from pipeline.stages.prepare import Prepared, extra_id_prefix, prepare, split_targets
from pipeline.text.windows import Windows, WindowSettings, encode_windows

SPLITS = ("train", "validation", "test")


@dataclass
class TrainingData:
    """The splits as the model learns and is scored on them, and where the model goes."""

    prepared: Prepared
    dataset: Any  # datasets.DatasetDict
    labels: list[str]
    tokenizer: Any
    texts: dict[str, list[str]]
    ys: dict[str, np.ndarray]  # class indices; a 0/1 matrix (articles × labels) for a multi-label task
    pairs: dict[str, list[str] | None]
    registered_model: str
    model_dir: Path
    pseudo_stats: dict[str, float] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return str(self.prepared.card["content_digest"])

    def keep_rows(self, split: str, rows: list[int] | np.ndarray) -> None:
        self.texts[split], self.ys[split] = [self.texts[split][i] for i in rows], self.ys[split][rows]
        split_pairs = self.pairs[split]
        self.pairs[split] = [split_pairs[i] for i in rows] if split_pairs is not None else None


def load_training_data(cfg: Config, accelerator: Any, with_pseudo_labels: bool) -> TrainingData:
    """The prepared splits; the main process prepares them first, then each machine's first process
    (its disk may not be shared), then the rest, who find them prepared."""
    from accelerate.utils import set_seed
    from datasets import load_from_disk

    with accelerator.main_process_first(), accelerator.local_main_process_first():
        prepared = prepare(cfg)
    dataset = load_from_disk(str(prepared.path))
    set_seed(cfg.train.seed)  # the same in every process: the same weights and the same batch order to share out
    data = TrainingData(
        prepared,
        dataset,
        list(prepared.card["labels"]),
        load_tokenizer(cfg.model.name),
        {s: list(dataset[s]["text"]) for s in SPLITS},
        {s: split_targets(dataset[s]) for s in SPLITS},
        {s: list(dataset[s]["pair"]) if "pair" in dataset[s].column_names else None for s in SPLITS},
        cfg.mlflow.registered_model,
        resolve_path(cfg.train.output_dir),
    )
    if with_pseudo_labels:
        use_pseudo_labels(cfg, data)
    return data


def use_pseudo_labels(cfg: Config, data: TrainingData) -> None:
    """Self-training: the zero-shot classifier's confident labels of the train and validation articles
    replace their gold labels (no gold label outside the test split is read)."""
    self_training = require_zeroshot(cfg).self_training
    data.registered_model, data.model_dir = self_training.registered_model, resolve_path(self_training.output_dir)
    labeller = build_zeroshot(cfg)
    # self-training labels the task's own articles; the labelled extra sets are left out
    extra_ids = tuple(extra_id_prefix(e.name) for e in cfg.data.extra_train)
    for split in ("train", "validation"):
        ids = data.dataset[split]["id"]
        data.keep_rows(split, [i for i, row_id in enumerate(ids) if not str(row_id).startswith(extra_ids)])
        kept, y_pseudo = pseudo_labels(
            labeller, self_training.keep_fraction, data.labels, data.texts[split], data.pairs[split]
        )
        # how good the kept labels are: reported, never used to choose anything
        data.pseudo_stats[f"pseudo_{split}_kept"] = len(kept)
        data.pseudo_stats[f"pseudo_{split}_gold_agreement"] = float((y_pseudo == data.ys[split][kept]).mean())
        data.keep_rows(split, kept)
        data.ys[split] = y_pseudo


def select_rows(cfg: Config, data: TrainingData) -> tuple[RelatednessGate | None, np.ndarray]:
    """The relatedness gate, if the config has one, and the train rows the transformer learns."""
    m, train_ys = cfg.model, data.ys["train"]
    gate, rows = None, np.arange(len(data.texts["train"]))
    if m.gate_label is not None:
        pairs = data.pairs["train"]
        if m.gate_label not in data.labels or pairs is None:
            raise PipelineError(f"model.gate_label {m.gate_label!r} needs a pair column and a label in {data.labels}")
        is_gate = train_ys == data.labels.index(m.gate_label)
        gate, p_train = RelatednessGate.fit(
            m.gate_label, m.gate_threshold, pairs, data.texts["train"], is_gate, cfg.train.seed
        )
        # the transformer learns every row the gate leaves to it: all other labels, and the
        # gate-label rows the gate is unsure of (hard negatives)
        rows = np.flatnonzero(~is_gate | (p_train < gate.threshold))
    # a multi-label sample is stratified by each row's first label
    strata = train_ys[rows] if train_ys.ndim == 1 else train_ys[rows].argmax(axis=1)
    keep = sample_rows(strata, cfg.train.max_examples, cfg.train.seed)
    return gate, rows[keep]


def reading_settings(cfg: Config) -> WindowSettings:
    """How the model reads a text at evaluate and predict time."""
    m = cfg.model
    return WindowSettings(
        max_length=m.max_length,
        stride=m.stride,
        max_windows=m.max_windows,
        mark_pair=m.mark_pair,
        evidence_first=m.evidence_first,
        mention_pool=m.pooling == "mean_mention",
    )


def training_settings(cfg: Config) -> WindowSettings:
    """The windows training reads: they may be longer or more than the ones the model reads later."""
    m, t = cfg.model, cfg.train
    return reading_settings(cfg).model_copy(
        update={
            "max_length": t.max_length or m.max_length,
            "stride": m.stride if t.stride is None else t.stride,
            "max_windows": 1 if t.windows == "first" else t.max_windows or m.max_windows,
        }
    )


def training_windows(
    cfg: Config, tokenizer: Any, texts: list[str], pairs: list[str] | None, y: np.ndarray
) -> tuple[Windows, np.ndarray]:
    settings = training_settings(cfg)
    if settings.stride >= settings.max_length // 2:
        raise PipelineError(
            f"train.stride ({settings.stride}) must be under half of max_length ({settings.max_length})"
        )
    windows = encode_windows(tokenizer, texts, pairs, settings)
    return windows, y[np.asarray(windows.owner)]


def drop_pairs(pairs: list[str], fraction: float, seed: int) -> list[str]:
    """The pairs with a seeded `fraction` of them blanked: a model trained on titles then also
    works on articles that come without one (most .txt files)."""
    if fraction <= 0:
        return pairs
    blank = np.random.default_rng(seed).random(len(pairs)) < fraction
    return ["" if b else p for p, b in zip(pairs, blank, strict=True)]


def class_weights(y: np.ndarray, n_labels: int, how: str = "balanced") -> np.ndarray:
    """Loss weights: inverse class frequency (`balanced`) or its square root (`sqrt`), mean 1 over examples.
    For a multi-label `y` (0/1 matrix), the positive-class weights of each label's binary loss:
    negatives over positives, or its square root."""
    if y.ndim == 2:
        positives = y.sum(axis=0).astype(np.float64)
        ratio = np.where(positives > 0, (len(y) - positives) / np.maximum(positives, 1), 1.0)
        return (np.sqrt(ratio) if how == "sqrt" else ratio).astype(np.float32)
    counts = np.bincount(y, minlength=n_labels).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    if how == "sqrt":
        weights = np.sqrt(weights)
    weights *= len(y) / float((weights * counts).sum())
    return weights.astype(np.float32)


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

"""Train stage, knowledge distillation: a larger teacher's soft labels for the student to learn.

`distillation_examples` gives the rows the student learns beyond the gold ones, the transfer set
(unlabelled news sentences paired with a name they mention, from `distill.transfer_sources`, with no
sentence of any test set in it), and the teacher's logits for the labelled train rows and the transfer
rows. The logits are cached in `distill.soft_labels` with the digest of the examples they are for, so
a training whose examples are unchanged reads them and never needs the teacher. `distillation_loss`
is Hinton et al.'s: alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · cross-entropy on the gold
labels, the transfer rows taking the first term only.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import Config, DistillConfig, TransferSourceConfig, resolve_path
from pipeline.core.errors import PipelineError
from pipeline.core.io import filter_rows, join_text_columns, normalise_text, read_table
from pipeline.core.labelled import extra_test_data
from pipeline.text.sentences import sentence_spans
from pipeline.text.targets import main_targets, mention_form

NO_LABEL = -100  # torch's cross-entropy ignore_index: a transfer row has no gold label
MIN_WORDS, MAX_WORDS = 8, 60  # a transfer sentence: long enough to hold a stance, short like NewsMTSC's
SOFT_LABELS_VERSION = 1


@dataclass
class Distillation:
    """The transfer rows and the teacher's logits of the labelled rows then the transfer rows."""

    texts: list[str]
    pairs: list[str]
    teacher_logits: np.ndarray  # [labelled rows + transfer rows, labels]
    teacher: str  # the teacher's canonical URI
    cached: bool  # read from distill.soft_labels rather than computed now
    temperature: float
    alpha: float


def sentence_key(text: str) -> str:
    return " ".join(normalise_text(text).lower().split())


def held_out_sentences(cfg: Config, test_texts: list[str]) -> set[str]:
    """Every sentence of the test split and of every extra test set: none may enter the transfer set."""
    texts = list(test_texts)
    for data in extra_test_data(cfg):
        texts += data.texts
    return {sentence_key(text[a:b]) for text in texts for a, b in sentence_spans(text)}


def source_pairs(source: TransferSourceConfig, held_out: set[str], limit: int, seed: int) -> list[tuple[str, str]]:
    """Up to `limit` (sentence, name) pairs of one source, from its articles in a seeded order: each
    sentence that mentions one of its article's main names, with that name (a person's full name
    first: NewsMTSC's and PerSenT's targets are mostly people); one pair a sentence."""
    path = resolve_path(source.source)
    df = filter_rows(read_table(path, [*source.text_columns, *(source.where or {})]), source.where, path)
    articles = join_text_columns(df, source.text_columns)
    random.Random(seed).shuffle(articles)  # nosec B311 -- a repeatable sample, no secret
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for article in articles:
        if len(pairs) >= limit:
            break
        names = sorted(main_targets(article), key=lambda n: len(n.split()) < 2)
        for a, b in sentence_spans(article):
            sentence = article[a:b].strip()
            key = sentence_key(sentence)
            if not MIN_WORDS <= len(sentence.split()) <= MAX_WORDS or key in held_out or key in seen:
                continue
            for name in names:
                if (form := mention_form(sentence, name)) is not None:
                    pairs.append((sentence, form))
                    seen.add(key)
                    break
    return pairs


def transfer_set(cfg: Config, d: DistillConfig, test_texts: list[str], seed: int) -> tuple[list[str], list[str]]:
    """`d.transfer_size` (sentence, name) pairs drawn evenly from the sources, in a seeded order."""
    if not d.transfer_size:
        return [], []
    held_out = held_out_sentences(cfg, test_texts)
    per_source = [source_pairs(s, held_out, d.transfer_size, seed) for s in d.transfer_sources]
    rng = random.Random(seed)  # nosec B311 -- a repeatable sample, no secret
    for pairs in per_source:
        rng.shuffle(pairs)
    drawn: list[tuple[str, str]] = []
    while len(drawn) < d.transfer_size and any(per_source):  # round robin: no source outweighs the others
        for pairs in per_source:
            if pairs and len(drawn) < d.transfer_size:
                drawn.append(pairs.pop())
    return [s for s, _ in drawn], [n for _, n in drawn]


def examples_digest(texts: list[str], pairs: list[str], labels: list[str]) -> str:
    h = hashlib.sha256(f"v{SOFT_LABELS_VERSION}\x1e{'|'.join(labels)}".encode())
    for text, pair in zip(texts, pairs, strict=True):
        h.update(f"\x1e{pair}\x1f{text}".encode())
    return h.hexdigest()


def read_soft_labels(path: Path, digest: str) -> tuple[np.ndarray, str] | None:
    """The cached logits and teacher URI when `path` holds them for these examples."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["digest"]) != digest:
                return None
            return np.asarray(f["logits"], dtype=np.float32), str(f["teacher"])
    except (OSError, ValueError, KeyError) as err:
        raise PipelineError(
            f"cannot read the soft labels in {path} ({err}); delete the file to recompute them"
        ) from None


def write_soft_labels(path: Path, digest: str, logits: np.ndarray, teacher: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")  # each process of a distributed run its own
    np.savez_compressed(tmp, digest=np.array(digest), logits=logits.astype(np.float32), teacher=np.array(teacher))
    tmp.replace(path)


def teacher_logits(
    ref: str, texts: list[str], pairs: list[str] | None, device: str, batch_size: int
) -> tuple[np.ndarray, str]:
    """The teacher transformer's logits of each example (the mean over its windows), before any blend:
    the student has a TF-IDF member of its own."""
    from pipeline.models.loading import load_torch
    from pipeline.tracking.registry import resolve_model

    folder, uri = resolve_model(ref)
    teacher = load_torch(folder, device, "auto", batch_size)
    logits, windows = teacher.backend.window_logits(texts, pairs)
    owner = np.asarray(windows.owner)
    counts = np.bincount(owner, minlength=len(texts)).astype(np.float32)
    total = np.zeros((len(texts), logits.shape[1]), dtype=np.float32)
    np.add.at(total, owner, logits)
    return total / np.maximum(counts, 1)[:, None], uri


def distillation_examples(
    cfg: Config, labels: list[str], train_texts: list[str], train_pairs: list[str] | None, test_texts: list[str]
) -> Distillation:
    """The transfer set and the teacher's logits for `train_*` (the labelled rows the student learns)
    then the transfer rows: from the cache when it was made for these examples, else from the teacher."""
    d = cfg.distill
    if d is None:
        raise PipelineError("this config has no distill section")
    transfer_texts, transfer_pairs = transfer_set(cfg, d, test_texts, cfg.train.seed)
    texts = [*train_texts, *transfer_texts]
    pairs = [*train_pairs, *transfer_pairs] if train_pairs is not None else None  # no pairs: no transfer set
    digest = examples_digest(texts, pairs or [""] * len(texts), labels)
    path = resolve_path(d.soft_labels)
    cached = read_soft_labels(path, digest)
    if cached is not None:
        logits, uri = cached
    else:
        try:
            logits, uri = teacher_logits(d.teacher, texts, pairs, cfg.runtime.device, cfg.runtime.eval_batch_size)
        except PipelineError as err:
            raise PipelineError(
                f"no soft labels for these examples in {d.soft_labels} and no teacher ({err}); train the teacher "
                "(make train-target-stance-teacher) or train on the gold labels alone (--set distill=null)"
            ) from None
        if logits.shape[1] != len(labels):
            raise PipelineError(f"the teacher {uri} has {logits.shape[1]} labels, the task {len(labels)}")
        write_soft_labels(path, digest, logits, uri)
    return Distillation(transfer_texts, transfer_pairs, logits, uri, cached is not None, d.temperature, d.alpha)


def distillation_loss(logits: Any, target: Any, teacher: Any, temperature: float, alpha: float) -> Any:
    """alpha · T² · KL(softmax(teacher / T) ‖ softmax(logits / T)) over every row, plus (1 − alpha) ·
    cross-entropy over the rows with a gold label (target != NO_LABEL)."""
    import torch
    from torch.nn import functional

    t = temperature
    kl = functional.kl_div(
        functional.log_softmax(logits / t, dim=-1),
        functional.log_softmax(teacher / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    labelled = target != NO_LABEL
    ce = functional.cross_entropy(logits[labelled], target[labelled]) if bool(labelled.any()) else torch.zeros_like(kl)
    return alpha * t * t * kl + (1 - alpha) * ce

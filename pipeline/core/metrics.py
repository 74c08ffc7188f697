"""Metrics shared by every stage (train, baseline, zero-shot, evaluate, promote); `tracking.log` logs them.

Beyond accuracy and F1, every scored split gets what needs class probabilities: log-loss,
per-class ROC-AUC and PR-AUC, expected calibration error with a reliability diagram, and a
bootstrap 95% interval for macro-F1. Temperature scaling (fitted on validation) lives here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

FNC_LABELS = {"agree", "disagree", "discuss", "unrelated"}
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 20261127
CALIBRATION_BINS = 15


def fnc_relative_score(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> float:
    """FNC-1's official score as a percentage of the best possible.

    0.25 for getting related vs `unrelated` right; 0.75 more for the exact related class.
    """
    unrelated = labels.index("unrelated")
    true_related, pred_related = y_true != unrelated, y_pred != unrelated
    score = 0.25 * (true_related == pred_related).sum() + 0.75 * (true_related & (y_true == y_pred)).sum()
    best = 0.25 * len(y_true) + 0.75 * true_related.sum()
    return float(100.0 * score / best) if best else 0.0


def macro_f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Macro-F1 of one confusion matrix [k, k] or of a stack of them [b, k, k]; absent classes score 0."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    predicted, actual = cm.sum(axis=-2), cm.sum(axis=-1)
    denominator = predicted + actual
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return np.asarray(f1.mean(axis=-1))


def bootstrap_confusions(y_true: np.ndarray, y_pred: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """Confusion matrices [b, k, k] of the resamples `idx` [b, n]."""
    codes = y_true[idx] * k + y_pred[idx]
    offsets = np.arange(len(idx))[:, None] * k * k
    counts = np.bincount((codes + offsets).ravel(), minlength=len(idx) * k * k)
    return counts.reshape(len(idx), k, k)


def resample_indices(n: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def bootstrap_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> tuple[float, float]:
    """95% percentile interval of macro-F1 over resamples of the rows."""
    if len(y_true) == 0:
        return float("nan"), float("nan")
    idx = resample_indices(len(y_true))
    # in chunks: one [samples, n] code array for FNC-1's 25k test pairs would take 200 MB
    scores = np.concatenate(
        [
            macro_f1_from_confusion(bootstrap_confusions(y_true, y_pred, k, idx[i : i + 100]))
            for i in range(0, len(idx), 100)
        ]
    )
    low, high = np.percentile(scores, [2.5, 97.5])
    return float(low), float(high)


def calibration_bins(y_true: np.ndarray, probs: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Top-label reliability: per equal-width confidence bin, its count, mean confidence and accuracy."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        out.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": n,
                "confidence": float(confidence[mask].mean()) if n else float("nan"),
                "accuracy": float(correct[mask].mean()) if n else float("nan"),
            }
        )
    return out


def expected_calibration_error(bins: list[dict[str, float]]) -> float:
    total = sum(b["n"] for b in bins)
    if not total:
        return float("nan")
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"]) / total)


def _per_class_auc(y_true: np.ndarray, probs: np.ndarray, k: int) -> tuple[list[float | None], list[float | None]]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    roc: list[float | None] = []
    pr: list[float | None] = []
    for i in range(k):
        positive = y_true == i
        if positive.all() or not positive.any():  # undefined with one class present
            roc.append(None)
            pr.append(None)
            continue
        roc.append(float(roc_auc_score(positive, probs[:, i])))
        pr.append(float(average_precision_score(positive, probs[:, i])))
    return roc, pr


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Every metric of one scored split; FNC-1's score when the labels are FNC-1's."""
    from sklearn.metrics import confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

    k = len(labels)
    y_pred = probs.argmax(axis=1)
    index = list(range(k))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=index, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=index)
    row_sums = cm.sum(axis=1, keepdims=True)
    roc, pr = _per_class_auc(y_true, probs, k)
    bins = calibration_bins(y_true, probs)
    low, high = bootstrap_macro_f1(y_true, y_pred, k)
    clipped = np.clip(probs, 1e-12, 1.0)
    extra = {"fnc_score": fnc_relative_score(y_true, y_pred, labels)} if set(labels) == FNC_LABELS else {}
    return {
        "n": len(y_true),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(f1_score(y_true, y_pred, labels=index, average="macro", zero_division=0)),
        "macro_f1_ci95": [low, high],
        "weighted_f1": float(f1_score(y_true, y_pred, labels=index, average="weighted", zero_division=0)),
        "log_loss": float(log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True), labels=index))
        if len(y_true)
        else float("nan"),
        "ece": expected_calibration_error(bins),
        "per_class": {
            label: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(s[i]),
                "roc_auc": roc[i],
                "pr_auc": pr[i],
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": np.divide(
            cm, row_sums, out=np.zeros(cm.shape, dtype=np.float64), where=row_sums > 0
        ).tolist(),
        "calibration_bins": bins,
        "labels": labels,
        **extra,
    }


def fit_temperature(probs_at: Callable[[float], np.ndarray], y_true: np.ndarray) -> float:
    """The temperature T whose probabilities `probs_at(T)` (softmax of logits / T, however a model
    combines them) have the lowest log-loss on `y_true` (Guo et al., 2017)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        probs = probs_at(float(np.exp(log_t)))
        return float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0)).mean())

    found = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-3})
    return float(np.exp(found.x))


def fit_class_bias(probs: np.ndarray, y_true: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Per-class offsets on the log-probabilities whose argmax has the highest macro-F1 on `y_true`
    (coordinate ascent over a grid; the smallest offset wins a tie). A model trained to lower the
    loss under-predicts rare classes; macro-F1 weighs each class alike, so the decision rule is
    fitted to it on validation."""
    from sklearn.metrics import f1_score

    log_p = np.log(np.clip(probs, 1e-12, 1.0))
    labels = np.arange(probs.shape[1])
    bias = np.zeros(probs.shape[1])
    grid = sorted(np.linspace(-3.0, 3.0, 61), key=abs)

    def score(b: np.ndarray) -> float:
        return float(f1_score(y_true, (log_p + b).argmax(axis=1), labels=labels, average="macro", zero_division=0))

    best = score(bias)
    for _ in range(rounds):
        moved = False
        for k in labels:
            for value in grid:
                trial = bias.copy()
                trial[k] = value
                f1 = score(trial)
                if f1 > best + 1e-9:
                    best, bias, moved = f1, trial, True
        if not moved:
            break
    return bias

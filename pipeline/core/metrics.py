"""Metrics shared by every stage (train, baseline, zero-shot, evaluate, promote); `tracking.log` logs them.

Beyond accuracy and F1, every scored split gets what needs class probabilities: log-loss,
per-class ROC-AUC and PR-AUC, expected calibration error with a reliability diagram, and a
bootstrap 95% interval for macro-F1. Temperature scaling (fitted on validation) lives here too.

Multi-label tasks pass gold labels as a 0/1 matrix (articles × labels) and per-label probabilities:
`compute_metrics` then gives micro-, macro- and samples-F1, subset accuracy, Hamming loss and label
cardinality (scikit-learn), with the labels chosen by per-label thresholds (`label_sets`), fitted on
validation by `fit_thresholds`.
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


def reliability_bins(confidence: np.ndarray, hit: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Per equal-width bin of `confidence`: its count, mean confidence and share of hits."""
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
                "accuracy": float(hit[mask].mean()) if n else float("nan"),
            }
        )
    return out


def calibration_bins(y_true: np.ndarray, probs: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Top-label reliability: per equal-width confidence bin, its count, mean confidence and accuracy."""
    return reliability_bins(probs.max(axis=1), probs.argmax(axis=1) == y_true, bins)


def expected_calibration_error(bins: list[dict[str, float]]) -> float:
    total = sum(b["n"] for b in bins)
    if not total:
        return float("nan")
    return float(sum(b["n"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"]) / total)


def _per_class_auc(positives: np.ndarray, probs: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """ROC-AUC and PR-AUC of each column of `probs` against the 0/1 column of `positives` (None where one
    value only is present: undefined)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    roc: list[float | None] = []
    pr: list[float | None] = []
    for j in range(positives.shape[1]):
        positive = positives[:, j] == 1
        if positive.all() or not positive.any():
            roc.append(None)
            pr.append(None)
            continue
        roc.append(float(roc_auc_score(positive, probs[:, j])))
        pr.append(float(average_precision_score(positive, probs[:, j])))
    return roc, pr


def per_class_table(labels: list[str], *columns: Any) -> dict[str, dict[str, Any]]:
    """{label: precision, recall, f1, support, roc_auc, pr_auc} from those six per-class columns."""
    p, r, f, s, roc, pr = columns
    return {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(s[i]),
            "roc_auc": roc[i],
            "pr_auc": pr[i],
        }
        for i, label in enumerate(labels)
    }


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, labels: list[str], thresholds: list[float] | None = None
) -> dict[str, Any]:
    """Every metric of one scored split; FNC-1's score when the labels are FNC-1's. A 0/1 matrix
    `y_true` is a multi-label split, its labels chosen at `thresholds` (default 0.5)."""
    if y_true.ndim == 2:
        return multilabel_metrics(y_true, probs, labels, thresholds)
    from sklearn.metrics import confusion_matrix, f1_score, log_loss, precision_recall_fscore_support

    k = len(labels)
    y_pred = probs.argmax(axis=1)
    index = list(range(k))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=index, zero_division=0)
    cm = confusion_matrix(y_true, y_pred, labels=index)
    row_sums = cm.sum(axis=1, keepdims=True)
    roc, pr = _per_class_auc(np.eye(k, dtype=np.int8)[y_true], probs)
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
        "per_class": per_class_table(labels, p, r, f, s, roc, pr),
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
    combines them; sigmoids for a multi-label `y_true`) have the lowest log-loss on `y_true` (Guo et al., 2017)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        probs = probs_at(float(np.exp(log_t)))
        if y_true.ndim == 2:
            return binary_log_loss(y_true, probs)
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


# --- multi-label --------------------------------------------------------------------------------

THRESHOLD_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 ... 0.95


def binary_log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy over every (article, label)."""
    p = np.clip(probs, 1e-12, 1 - 1e-12)
    return float(-(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)).mean())


def label_sets(probs: np.ndarray, thresholds: list[float] | np.ndarray | None) -> np.ndarray:
    """The labels chosen for each article (0/1, articles × labels): every label at or above its
    threshold, and an article with none gets its single most likely label."""
    at = np.asarray(thresholds, dtype=np.float64) if thresholds is not None else np.full(probs.shape[1], 0.5)
    chosen = probs >= at[None, :]
    none = ~chosen.any(axis=1)
    chosen[np.flatnonzero(none), probs[none].argmax(axis=1)] = True
    return chosen.astype(np.int8)


def _label_f1(y_true: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    tp = (y_true & chosen).sum(axis=0)
    denominator = y_true.sum(axis=0) + chosen.sum(axis=0)
    return np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)


def fit_thresholds(probs: np.ndarray, y_true: np.ndarray, how: str) -> list[float]:
    """Per-label thresholds fitted on (validation) rows: `fixed` 0.5; `global` the one threshold with the
    best micro-F1; `per_label` then, label by label, the threshold with a better F1 of that label than the
    global one (ties keep the global). Macro-F1 weighs rare labels alike, and their probabilities run low."""
    from sklearn.metrics import f1_score

    k = probs.shape[1]
    if how == "fixed":
        return [0.5] * k
    y = y_true.astype(bool)
    micro = {t: f1_score(y, label_sets(probs, [t] * k), average="micro", zero_division=0) for t in THRESHOLD_GRID}
    best = max(THRESHOLD_GRID, key=lambda t: (micro[t], -abs(t - 0.5)))
    thresholds = [best] * k
    if how == "per_label":
        base = _label_f1(y, probs >= best)
        for j in np.flatnonzero(y.any(axis=0)):  # a label absent from validation keeps the global threshold
            scores = {t: _label_f1(y[:, [j]], probs[:, [j]] >= t)[0] for t in THRESHOLD_GRID}
            top = max(THRESHOLD_GRID, key=lambda t: (scores[t], -abs(t - best)))
            if scores[top] > base[j] + 1e-9:
                thresholds[j] = top
    return [float(t) for t in thresholds]


def resampled_label_macro_f1(y_true: np.ndarray, chosen: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Macro-F1 of each resample `idx` [b, n] of the rows, from 0/1 gold and chosen labels (articles ×
    labels; a single-label task's one-hot rows give its usual macro-F1)."""
    y, c = y_true.astype(bool), chosen.astype(bool)
    tp, total = (y & c).astype(np.int32), y.astype(np.int32) + c.astype(np.int32)
    scores = []
    for i in range(0, len(idx), 50):  # in chunks: [50, n, k] at a time
        part = idx[i : i + 50]
        tps, totals = tp[part].sum(axis=1), total[part].sum(axis=1)  # [b, k]
        f1 = np.divide(2 * tps, totals, out=np.zeros(tps.shape), where=totals > 0)
        scores.append(f1.mean(axis=1))
    return np.concatenate(scores)


def bootstrap_label_macro_f1(y_true: np.ndarray, chosen: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of multi-label macro-F1 over resamples of the articles."""
    if len(y_true) == 0:
        return float("nan"), float("nan")
    scores = resampled_label_macro_f1(y_true, chosen, resample_indices(len(y_true)))
    low, high = np.percentile(scores, [2.5, 97.5])
    return float(low), float(high)


def binary_calibration_bins(
    y_true: np.ndarray, probs: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Reliability of every (article, label) probability: per bin, mean probability and share of gold labels."""
    return reliability_bins(probs.ravel(), y_true.ravel(), bins)


def multilabel_metrics(
    y_true: np.ndarray, probs: np.ndarray, labels: list[str], thresholds: list[float] | None
) -> dict[str, Any]:
    """Every metric of one multi-label split (scikit-learn's definitions)."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support

    y = y_true.astype(np.int8)
    chosen = label_sets(probs, thresholds)
    p, r, f, s = precision_recall_fscore_support(y, chosen, zero_division=0)
    roc, pr = _per_class_auc(y, probs)
    bins = binary_calibration_bins(y, probs)
    empty = len(y) == 0

    def f1(average: str) -> float:
        return float("nan") if empty else float(f1_score(y, chosen, average=average, zero_division=0))

    return {
        "multi_label": True,
        "n": len(y),
        "accuracy": float("nan") if empty else float(accuracy_score(y, chosen)),  # subset accuracy
        "subset_accuracy": float("nan") if empty else float(accuracy_score(y, chosen)),
        "micro_f1": f1("micro"),
        "macro_f1": f1("macro"),
        "samples_f1": f1("samples"),
        "weighted_f1": f1("weighted"),
        "macro_f1_ci95": list(bootstrap_label_macro_f1(y, chosen)),
        "hamming_loss": float("nan") if empty else float(hamming_loss(y, chosen)),
        "label_cardinality": float(y.sum(axis=1).mean()) if not empty else float("nan"),
        "predicted_label_cardinality": float(chosen.sum(axis=1).mean()) if not empty else float("nan"),
        "log_loss": float("nan") if empty else binary_log_loss(y, probs),
        "ece": expected_calibration_error(bins),
        "per_class": per_class_table(labels, p, r, f, s, roc, pr),
        "thresholds": [float(t) for t in (thresholds if thresholds is not None else [0.5] * len(labels))],
        "calibration_bins": bins,
        "labels": labels,
    }

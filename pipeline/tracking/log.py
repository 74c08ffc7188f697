"""What a run logs beside its parameters: metrics with their figures and tables, the most confident mistakes, datasets.

Every stage logs through these, so every run of a task carries the same metric names and artifacts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.metrics import CALIBRATION_BINS, label_sets

if TYPE_CHECKING:
    from pipeline.models.predictor import Predictor

MISTAKES_SHOWN = 25
WHY_SENTENCES, WHY_CHARS = 2, 200  # top sentences shown per mistake, characters of each
LABEL_KEYS_TAG = "metric_label_names"  # {name in metric keys: label}, for the labels the two differ
_UNSAFE = re.compile(r"[^\w.\-]+")
LABEL_KEY_LENGTH = 100  # MLflow takes keys up to 250 characters, prefix and metric name included


def label_keys(labels: Sequence[str]) -> dict[str, str]:
    """Each label's name in metric keys (`test_f1_<name>`): what is neither a letter, a digit, `_`,
    `.` nor `-` becomes `_` (MLflow's UI makes a `/` a chart group: `Sci/Tech` -> `Sci_Tech`). A
    label that is safe as it is keeps its name; one whose name is taken gets `_2`, `_3`, ... in the
    labels' order, so that keys stay distinct."""
    safe = {label: _UNSAFE.sub("_", str(label)).strip("_")[:LABEL_KEY_LENGTH] or "label" for label in labels}
    out = {label: name for label, name in safe.items() if name == label}
    used = set(out.values())
    for label in labels:
        if label in out:
            continue
        name, n = safe[label], 2
        while name in used:
            name, n = f"{safe[label]}_{n}", n + 1
        used.add(name)
        out[label] = name
    return {label: out[label] for label in labels}


def _figures(metrics: dict[str, Any], title: str) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    labels = metrics["labels"]
    size = (1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2)
    figures = {}
    if metrics.get("multi_label"):
        figures["per_label_f1"] = _per_label_figure(metrics, title)
    for name, key, fmt in (
        ()
        if metrics.get("multi_label")
        else (
            ("confusion_matrix", "confusion_matrix", "d"),
            ("confusion_matrix_normalized", "confusion_matrix_normalized", ".2f"),
        )
    ):
        fig, ax = plt.subplots(figsize=size)
        ConfusionMatrixDisplay(np.asarray(metrics[key]), display_labels=labels).plot(
            ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45, values_format=fmt
        )
        ax.set_title(f"{title} (n={metrics['n']}, macro-F1 {metrics['macro_f1']:.3f})")
        fig.tight_layout()
        figures[name] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    bins = [b for b in metrics["calibration_bins"] if b["n"]]
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.bar(
        [(b["low"] + b["high"]) / 2 for b in bins],
        [b["accuracy"] for b in bins],
        width=1.0 / CALIBRATION_BINS,
        edgecolor="black",
        alpha=0.7,
        label="accuracy in bin",
    )
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color="C1")
    what = (
        ("label probability", "share of gold labels")
        if metrics.get("multi_label")
        else ("confidence (top label)", "accuracy")
    )
    ax.set(xlabel=what[0], ylabel=what[1], xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"{title} reliability (ECE {metrics['ece']:.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    figures["reliability_diagram"] = fig
    return figures


def _per_label_figure(metrics: dict[str, Any], title: str) -> Any:
    """Multi-label: each label's F1, most frequent label first, with its support."""
    import matplotlib.pyplot as plt

    rows = sorted(metrics["per_class"].items(), key=lambda kv: -kv[1]["support"])
    fig, ax = plt.subplots(figsize=(6, 0.22 * len(rows) + 1.5))
    ax.barh([f"{label} ({row['support']})" for label, row in rows], [row["f1"] for label, row in rows])
    ax.invert_yaxis()
    ax.set(xlabel="F1", xlim=(0, 1))
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"{title} per label (micro-F1 {metrics['micro_f1']:.3f}, macro-F1 {metrics['macro_f1']:.3f})")
    fig.tight_layout()
    return fig


SCALARS = ("accuracy", "macro_f1", "weighted_f1", "log_loss", "ece", "fnc_score")
MULTI_LABEL_SCALARS = ("micro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "label_cardinality")


def log_metrics(metrics: dict[str, Any], prefix: str) -> None:
    """Scalars as `{prefix}_<metric>` and `{prefix}_<metric>_<label>` (the label as `label_keys` names
    it; the labels renamed there in the tag `metric_label_names`); the metrics JSON, a per-class table
    (the label and its `metric_key_label`), confusion matrices (counts, normalised) and a reliability
    diagram as artifacts (multi-label: a per-label F1 chart instead of the confusion matrices)."""
    import matplotlib.pyplot as plt
    import mlflow
    import pandas as pd

    flat = {f"{prefix}_{key}": metrics[key] for key in (*SCALARS, *MULTI_LABEL_SCALARS) if key in metrics}
    flat[f"{prefix}_macro_f1_ci_low"], flat[f"{prefix}_macro_f1_ci_high"] = metrics["macro_f1_ci95"]
    keys = label_keys(list(metrics["per_class"]))
    for label, row in metrics["per_class"].items():
        for key in ("precision", "recall", "f1", "roc_auc", "pr_auc"):
            if row[key] is not None:
                flat[f"{prefix}_{key}_{keys[label]}"] = row[key]
    mlflow.log_metrics(flat)
    renamed = {name: label for label, name in keys.items() if name != label}
    if renamed and len(tag := json.dumps(renamed, ensure_ascii=False)) <= 8000:  # MLflow's longest tag value
        mlflow.set_tag(LABEL_KEYS_TAG, tag)
    mlflow.log_dict(metrics, f"{prefix}/metrics.json")
    table = pd.DataFrame(
        [{"label": label, "metric_key_label": keys[label], **row} for label, row in metrics["per_class"].items()]
    )
    if "thresholds" in metrics:
        table["threshold"] = metrics["thresholds"]
    mlflow.log_table(table, f"{prefix}/per_class.json")
    for name, fig in _figures(metrics, prefix).items():
        mlflow.log_figure(fig, f"{prefix}/{name}.png")
        plt.close(fig)


def multilabel_mistakes(
    texts: list[str], y_true: np.ndarray, probs: np.ndarray, labels: list[str], thresholds: list[float] | None
) -> Any:
    """Multi-label: the articles whose label set is wrong, the surest wrong call first (a label given at a
    high probability that is not gold, or a gold label left out at a low one)."""
    import pandas as pd

    chosen = label_sets(probs, thresholds)
    wrongness = np.where(chosen != y_true, np.where(chosen == 1, probs, 1 - probs), 0.0).max(axis=1)
    wrong = np.flatnonzero((chosen != y_true).any(axis=1))
    wrong = wrong[np.argsort(-wrongness[wrong], kind="stable")][:MISTAKES_SHOWN]

    def names(row: np.ndarray, i: Any) -> str:
        return " ".join(f"{labels[j]} ({probs[i, j]:.2f})" for j in np.flatnonzero(row))

    rows = [
        {
            "row": int(i),
            "gold": names(y_true[i], i),
            "predicted": names(chosen[i], i),
            "surest_error": round(float(wrongness[i]), 4),
            "text": texts[i][:600],
        }
        for i in wrong
    ]
    return pd.DataFrame(rows, columns=["row", "gold", "predicted", "surest_error", "text"])


def mistakes_table(
    texts: list[str],
    pairs: list[str] | None,
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    thresholds: list[float] | None = None,
) -> Any:
    """The most confident wrong predictions, most confident first, with their text."""
    import pandas as pd

    if y_true.ndim == 2:
        return multilabel_mistakes(texts, y_true, probs, labels, thresholds)
    y_pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    wrong = wrong[np.argsort(-probs[wrong, y_pred[wrong]], kind="stable")][:MISTAKES_SHOWN]
    rows = []
    for i in wrong:
        row = {
            "row": int(i),
            "gold": labels[y_true[i]],
            "predicted": labels[y_pred[i]],
            "confidence": round(float(probs[i, y_pred[i]]), 4),
            "gold_probability": round(float(probs[i, y_true[i]]), 4),
        }
        if pairs is not None:
            row["pair"] = pairs[i]
        row["text"] = texts[i][:600]
        rows.append(row)
    return pd.DataFrame(
        rows,
        columns=["row", "gold", "predicted", "confidence", "gold_probability", *(["pair"] if pairs else []), "text"],
    )


def log_mistakes(
    texts: list[str],
    pairs: list[str] | None,
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    prefix: str,
    thresholds: list[float] | None = None,
    explainer: Predictor | None = None,
) -> None:
    """The most confident mistakes as an MLflow table; with an `explainer` (the model), why each happened."""
    import mlflow

    table = mistakes_table(texts, pairs, y_true, probs, labels, thresholds)
    if explainer is not None and len(table):
        table["why"] = why_column(explainer, texts, pairs, table)
    mlflow.log_table(table, f"{prefix}/mistakes.json")


def why_column(explainer: Predictor, texts: list[str], pairs: list[str] | None, table: Any) -> list[str]:
    """Each mistake's top sentences for the label the model gave (its most likely one), with their weights."""
    from pipeline.models.explain import explain_many

    rows = [int(i) for i in table["row"]]
    explanations = explain_many(explainer, [texts[i] for i in rows], [pairs[i] for i in rows] if pairs else None)
    return [" | ".join(f"({s.weight:+.2f}) {s.text[:WHY_CHARS]}" for s in e.top(WHY_SENTENCES)) for e in explanations]


def log_dataset(df: Any, source: str, name: str, context: str) -> str:
    """Log the rows (text, label and pair if any) as an MLflow dataset input; returns its digest."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    columns = [c for c in ("pair", "text", "label") if c in df.columns]
    ds = from_pandas(df[columns].reset_index(drop=True), source=source, name=name, targets="label")
    mlflow.log_input(ds, context=context)
    return str(ds.digest)


def log_prepared_splits(dataset: Any, source: str, task: str) -> None:
    """Every split of a prepared DatasetDict as a dataset input of the active run."""
    for split in ("train", "validation", "test"):
        frame = dataset[split].select_columns(
            [c for c in ("pair", "text", "label") if c in dataset[split].column_names]
        )
        frame = frame.to_pandas()
        feature = dataset[split].features["label"]
        names = getattr(feature, "feature", feature).names
        frame["label"] = [
            " ".join(names[i] for i in y) if hasattr(feature, "feature") else names[y] for y in frame["label"]
        ]
        log_dataset(frame, source, f"{task}-{split}", split)

"""What a run logs beside its parameters: metrics with their figures and tables, the most confident mistakes, datasets.

Every stage logs through these, so every run of a task carries the same metric names and artifacts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core.metrics import CALIBRATION_BINS

MISTAKES_SHOWN = 25


def _figures(metrics: dict[str, Any], title: str) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    labels = metrics["labels"]
    size = (1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2)
    figures = {}
    for name, key, fmt in (
        ("confusion_matrix", "confusion_matrix", "d"),
        ("confusion_matrix_normalized", "confusion_matrix_normalized", ".2f"),
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
    ax.set(xlabel="confidence (top label)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(f"{title} reliability (ECE {metrics['ece']:.3f})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    figures["reliability_diagram"] = fig
    return figures


def log_metrics(metrics: dict[str, Any], prefix: str) -> None:
    """Scalars as `{prefix}_<metric>` and `{prefix}_<metric>_<label>`; the metrics JSON, a per-class
    table, confusion matrices (counts, normalised) and a reliability diagram as artifacts."""
    import matplotlib.pyplot as plt
    import mlflow
    import pandas as pd

    flat = {
        f"{prefix}_{key}": metrics[key]
        for key in ("accuracy", "macro_f1", "weighted_f1", "log_loss", "ece", "fnc_score")
        if key in metrics
    }
    flat[f"{prefix}_macro_f1_ci_low"], flat[f"{prefix}_macro_f1_ci_high"] = metrics["macro_f1_ci95"]
    for label, row in metrics["per_class"].items():
        for key in ("precision", "recall", "f1", "roc_auc", "pr_auc"):
            if row[key] is not None:
                flat[f"{prefix}_{key}_{label}"] = row[key]
    mlflow.log_metrics(flat)
    mlflow.log_dict(metrics, f"{prefix}/metrics.json")
    table = pd.DataFrame([{"label": label, **row} for label, row in metrics["per_class"].items()])
    mlflow.log_table(table, f"{prefix}/per_class.json")
    for name, fig in _figures(metrics, prefix).items():
        mlflow.log_figure(fig, f"{prefix}/{name}.png")
        plt.close(fig)


def mistakes_table(
    texts: list[str], pairs: list[str] | None, y_true: np.ndarray, probs: np.ndarray, labels: list[str]
) -> Any:
    """The most confident wrong predictions, most confident first, with their text."""
    import pandas as pd

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
    texts: list[str], pairs: list[str] | None, y_true: np.ndarray, probs: np.ndarray, labels: list[str], prefix: str
) -> None:
    import mlflow

    mlflow.log_table(mistakes_table(texts, pairs, y_true, probs, labels), f"{prefix}/mistakes.json")


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
        frame["label"] = [dataset[split].features["label"].names[i] for i in frame["label"]]
        log_dataset(frame, source, f"{task}-{split}", split)

"""Per-label test F1 of the newest `reuters` training run: the 10 most frequent categories and the rare ones.

Reads the run's `test/metrics.json` from the MLflow store (the project's, or MLFLOW_TRACKING_URI):

    make train-reuters && .venv/bin/python research/own_labels/reuters_report.py
"""

from __future__ import annotations

import json
import sys

import numpy as np

from pipeline.tracking import store


def main(experiment: str = "reuters") -> None:
    mlflow = store.import_mlflow()
    runs = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string="tags.stage = 'train'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs.empty:
        sys.exit(f"no training run in experiment {experiment!r}: run `make train-reuters`")
    run_id = runs.iloc[0]["run_id"]
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="test/metrics.json")
    with open(path, encoding="utf-8") as f:
        m = json.load(f)
    print(
        f"run {run_id}: test n={m['n']}, micro-F1 {m['micro_f1']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
        f"samples-F1 {m['samples_f1']:.4f}, subset accuracy {m['subset_accuracy']:.4f}, "
        f"Hamming loss {m['hamming_loss']:.5f}"
    )
    rows = sorted(m["per_class"].items(), key=lambda kv: -kv[1]["support"])
    print(
        "10 most frequent categories (test support): "
        + ", ".join(f"{label} {r['f1']:.3f} ({r['support']})" for label, r in rows[:10])
    )
    for low, high in ((1, 5), (5, 20), (20, 100), (100, 10_000)):
        part = [r["f1"] for _, r in rows if low <= r["support"] < high]
        if part:
            print(
                f"test support {low}-{high - 1}: {len(part)} categories, mean F1 {np.mean(part):.3f}, "
                f"F1 0 for {sum(f == 0 for f in part)}"
            )
    rare = [f"{label} {r['f1']:.2f} ({r['support']})" for label, r in rows if r["support"] < 5]
    print("categories with fewer than 5 test articles: " + ", ".join(rare))


if __name__ == "__main__":
    main(*sys.argv[1:])

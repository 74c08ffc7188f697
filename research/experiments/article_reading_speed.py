"""Experiment (issue 29): how fast the target-stance model reads whole articles by their mention
sentences (`model.article_reading: mention_sentences`) against by their windows, side by side.

    PIPELINE_HOME=... .venv/bin/python research/experiments/article_reading_speed.py models:/target_stance/champion

Reads PerSenT `random_test` (579 articles, each with its target entity) with the same loaded model,
only the Decision's reading changed, in alternating rounds in one process; best of 3.
"""

from __future__ import annotations

import sys
import time

import pandas as pd

from pipeline.core.config import load_config, resolve_path
from pipeline.models.loading import load_model
from pipeline.tracking.registry import resolve_model

PERSENT = "../shared/data/persent_dev_random_test.csv.gz"


def main(ref: str) -> None:
    cfg = load_config(resolve_path("configs/target_stance.yaml"))
    frame = pd.read_csv(PERSENT)
    frame = frame[frame["split"] == "random_test"]
    texts, pairs = frame["DOCUMENT"].astype(str).tolist(), frame["TARGET_ENTITY"].astype(str).tolist()
    model = load_model(resolve_model(ref)[0], "cpu", "auto", 32, cfg.runtime.threads)
    readings = {how: model.decision.but(article_reading=how) for how in ("mention_sentences", "windows")}
    times: dict[str, list[float]] = {how: [] for how in readings}
    for _ in range(3):
        for how, decision in readings.items():
            model.decision = decision
            start = time.perf_counter()
            model.predict_proba(texts, pairs)
            times[how].append(time.perf_counter() - start)
    for how, spent in times.items():
        best = min(spent)
        print(f"{how}: {type(model.backend).__name__}, {len(texts) / best:.1f} articles/s (best of 3: {best:.1f} s)")


if __name__ == "__main__":
    main(sys.argv[1])

"""Experiment (issue 29): predict speed of the distilled student against the model it replaced, side by side.

    .venv/bin/python research/experiments/student_speed.py models:/target_stance/1 models:/target_stance/2

`make bench` compares a topic model with `transformers.pipeline`, which cannot run a mean-mention
head; both target-stance models are loaded as `pipeline predict` loads them (ONNX where exported)
and on PyTorch, and score NewsMTSC devtest_rw (the prepared test split) in alternating rounds, in
one process.
"""

from __future__ import annotations

import sys
import time

from datasets import load_from_disk

from pipeline.core.config import load_config, resolve_path
from pipeline.models.loading import load_model, load_torch
from pipeline.tracking.registry import resolve_model


def main(refs: list[str]) -> None:
    cfg = load_config(resolve_path("configs/target_stance.yaml"))
    test = load_from_disk(str(resolve_path(cfg.data.prepared_dir)))["test"]
    texts, pairs = list(test["text"]), list(test["pair"])
    models = {ref: load_model(resolve_model(ref)[0], "cpu", "auto", 32, cfg.runtime.threads) for ref in refs}
    models |= {f"{ref} (PyTorch)": load_torch(resolve_model(ref)[0], "cpu", "auto", 32) for ref in refs}
    for model in models.values():
        model.predict_proba(texts[:64], pairs[:64])  # warm-up
    times: dict[str, list[float]] = {ref: [] for ref in models}
    for _ in range(3):
        for ref, model in models.items():
            start = time.perf_counter()
            model.predict_proba(texts, pairs)
            times[ref].append(time.perf_counter() - start)
    for ref, spent in times.items():
        best = min(spent)
        print(f"{ref}: {type(models[ref].backend).__name__}, {len(texts) / best:.1f} pairs/s (best of 3: {best:.2f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])

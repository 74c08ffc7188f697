"""Issue 24's check that the layered package decides as the flat one did, on the same trained models.

Run it once with the old checkout first on PYTHONPATH, once with this one, on the same model folders
and prepared test splits; each run writes the probabilities of every model on both its paths
(ONNX where exported, and PyTorch), and the second run compares them with the first's:

    PYTHONPATH=OLD_CHECKOUT python research/compare_before_after.py MODELS_DIR PREPARED_DIR before.npz
    python research/compare_before_after.py MODELS_DIR PREPARED_DIR after.npz --against before.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from datasets import load_from_disk

TASKS = {"topic": "topic", "stance": "stance", "target_stance": "target_stance", "topic_zeroshot": "topic"}
MAX_ROWS = 3000  # FNC-1's test split has 25k pairs: its first 3,000 are enough to see a change


def loaders():
    """(fast path, PyTorch path) loaders of whichever package is on the path."""
    try:
        from pipeline.models.loading import load_model, load_torch

        return load_model, lambda folder: load_torch(folder, "cpu", "auto")
    except ImportError:
        from pipeline.modeling import Classifier, load_model

        return load_model, lambda folder: Classifier.load(folder, "cpu", "auto")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", type=Path)
    parser.add_argument("prepared", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--against", type=Path)
    args = parser.parse_args()
    fast, torch_path = loaders()
    arrays, seconds = {}, {}
    for folder_name, task in TASKS.items():
        folder = args.models / folder_name
        if not (folder / "pipeline.json").is_file():
            continue
        test = load_from_disk(str(args.prepared / task))["test"]
        texts = list(test["text"])[:MAX_ROWS]
        pairs = list(test["pair"])[:MAX_ROWS] if "pair" in test.column_names else None
        is_zeroshot = "zeroshot" in json.loads((folder / "pipeline.json").read_text()).get("kind", "finetuned")
        for path, load in (("fast", fast), ("torch", None if is_zeroshot else torch_path)):
            if load is None:
                continue
            start = time.perf_counter()
            model = load(folder)
            arrays[f"{folder_name}/{path}"] = model.predict_proba(texts, pairs)
            seconds[f"{folder_name}/{path}"] = time.perf_counter() - start
            print(f"{folder_name}/{path}: {len(texts)} rows, {seconds[f'{folder_name}/{path}']:.1f} s", file=sys.stderr)
    np.savez(args.out, **arrays)
    if args.against is None:
        return
    with np.load(args.against) as before:
        for key, probs in arrays.items():
            old = before[key]
            same = float((old.argmax(axis=1) == probs.argmax(axis=1)).mean())
            largest = np.abs(old - probs).max()
            print(f"{key}: n={len(probs)} same label {same:.4%}, largest probability difference {largest:.2e}")


if __name__ == "__main__":
    main()

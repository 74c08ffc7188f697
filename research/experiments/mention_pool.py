"""Experiment, not a stage: does pooling the target's mentions help target stance (TD-BERT style)?

    python scripts/experiments/mention_pool.py [--seeds 1 2] [--arms mean mean_mention] [--epochs 3]

The A/B behind `model.pooling: mean_mention`, in a plain loop apart from `pipeline train` (random
batches, no TF-IDF blend, no fast paths), so that only the head differs. Reads the prepared NewsMTSC
splits of configs/target_stance.yaml (`pipeline prepare` writes them), trains all-MiniLM-L6-v2 once
per arm and seed with the config's optimiser settings, and prints validation macro-F1 per epoch and
test (`devtest_rw`) at the best validation epoch. Validation decides; test is for the record.
"""

import argparse
import math
import random
import time

import numpy as np
import torch
from datasets import load_from_disk
from pipeline.modeling import Windows, build_classifier, encode_windows, load_tokenizer, pad_batch, window_logits
from sklearn.metrics import f1_score
from transformers import get_linear_schedule_with_warmup

PREPARED = "data/prepared/target_stance"
LABELS = ["against", "favor", "neutral"]  # the prepared label ids' order (the config's `data.labels`)
MAX_LENGTH, STRIDE, BATCH, LR, WEIGHT_DECAY, WARMUP = 128, 32, 16, 1e-4, 0.01, 0.1


def predict(model: torch.nn.Module, windows: Windows, pad_id: int) -> np.ndarray:
    return window_logits(model, windows, pad_id, 64, torch.device("cpu"), "bf16").argmax(axis=1)


def run(arm: str, seed: int, epochs: int, data: dict[str, tuple[Windows, np.ndarray]], pad_id: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = build_classifier("minilm", LABELS, 0.0, arm)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}], lr=LR
    )
    train_windows, train_y = data["train"]
    steps = math.ceil(len(train_windows) / BATCH) * epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(WARMUP * steps), steps)
    rng = random.Random(seed)
    best, best_test, started = -1.0, -1.0, time.time()
    for epoch in range(1, epochs + 1):
        model.train()  # from_pretrained hands the model over in eval mode, without dropout
        order = list(range(len(train_windows)))
        rng.shuffle(order)
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(**pad_batch(train_windows, idx, pad_id)).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(train_y[idx]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        val = f1_score(data["validation"][1], predict(model, data["validation"][0], pad_id), average="macro")
        test = f1_score(data["test"][1], predict(model, data["test"][0], pad_id), average="macro")
        if val > best:
            best, best_test = val, test
        print(f"{arm:<12} seed {seed} epoch {epoch}: validation {val:.4f}  ({time.time() - started:.0f} s)", flush=True)
    print(f"{arm:<12} seed {seed} BEST validation {best:.4f}  test {best_test:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--arms", nargs="+", default=["mean", "mean_mention"], choices=["mean", "mean_mention"])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    tokenizer = load_tokenizer("minilm")
    pad_id = int(tokenizer.pad_token_id or 0)
    dataset = load_from_disk(PREPARED)
    data = {}
    for split in ("train", "validation", "test"):
        d = dataset[split]
        # sentences: one window each, so window i is sentence i
        windows = encode_windows(tokenizer, d["text"], d["pair"], MAX_LENGTH, STRIDE, 1, mention_pool=True)
        data[split] = (windows, np.array(d["label"]))
    for seed in args.seeds:
        for arm in args.arms:
            run(arm, seed, args.epochs, data, pad_id)


if __name__ == "__main__":
    main()

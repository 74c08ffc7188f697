"""Reuters-21578, how to join the transformer and the TF-IDF model, compared on validation only.

Takes the trained `models/reuters` (after `make train-reuters`), its two members' validation
probabilities, and scores each way of joining them with per-label thresholds fitted on one half of
validation and scored on the other (two-fold, so the thresholds are not scored where they were fitted).

    .venv/bin/python research/own_labels/reuters_blend.py
"""

from __future__ import annotations

import numpy as np
from datasets import load_from_disk
from sklearn.metrics import f1_score

from pipeline.core.config import load_config, resolve_path
from pipeline.core.metrics import fit_thresholds, label_sets
from pipeline.models.decision import combine_windows
from pipeline.models.loading import load_torch
from pipeline.models.tfidf import TfidfModel, fit_stack, log_clipped, stack, tfidf_texts
from pipeline.stages.prepare import split_targets


def two_fold(probs: np.ndarray, y: np.ndarray, how: str = "per_label") -> tuple[float, float]:
    halves = np.array_split(np.random.default_rng(0).permutation(len(y)), 2)
    chosen = np.zeros_like(y)
    for fit, score in (halves, halves[::-1]):
        chosen[score] = label_sets(probs[score], fit_thresholds(probs[fit], y[fit], how))
    return f1_score(y, chosen, average="micro"), f1_score(y, chosen, average="macro", zero_division=0)


def main() -> None:
    cfg = load_config(resolve_path("configs/reuters.yaml"))
    folder = resolve_path(cfg.train.output_dir)
    data = load_from_disk(str(resolve_path(cfg.data.prepared_dir)))["validation"]
    texts, pairs, y = list(data["text"]), list(data["pair"]), split_targets(data)
    model = load_torch(folder, "cpu", "auto", 32)
    logits, windows = model.backend.window_logits(texts, pairs)
    d = model.decision
    p_t = combine_windows(logits / d.temperature, windows.owner, len(texts), d.combine, multi_label=True)
    p_tfidf = np.exp(TfidfModel.load(folder).log_proba(tfidf_texts(texts, pairs)))
    lt, lf = log_clipped(p_t), log_clipped(p_tfidf)
    ways = {
        "transformer alone": p_t,
        "TF-IDF alone": p_tfidf,
        f"stacked, weights {d.blend}": stack(lt, lf, d.blend or (1.0, 0.0), multi_label=True),
        "mean of probabilities": (p_t + p_tfidf) / 2,
        "max of probabilities": np.maximum(p_t, p_tfidf),
    }
    refit = fit_stack(lt, lf, y)
    ways[f"stacked, refitted {tuple(round(w, 3) for w in refit)}"] = stack(lt, lf, refit, multi_label=True)
    print(f"validation n={len(y)}, labels present {(y.sum(0) > 0).sum()} of {y.shape[1]}")
    for name, probs in ways.items():
        fixed = label_sets(probs, [0.5] * y.shape[1])
        micro_half, macro_half = (
            f1_score(y, fixed, average="micro"),
            f1_score(y, fixed, average="macro", zero_division=0),
        )
        micro, macro = two_fold(probs, y)
        g_micro, g_macro = two_fold(probs, y, "global")
        print(
            f"{name:<45} 0.5: {micro_half:.4f} / {macro_half:.4f}; global: {g_micro:.4f} / {g_macro:.4f}; "
            f"per label: {micro:.4f} / {macro:.4f}"
        )


if __name__ == "__main__":
    main()

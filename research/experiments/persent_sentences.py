"""Experiment (issue 29, item 3): read a PerSenT article by its sentences that mention the target?

    .venv/bin/python research/experiments/persent_sentences.py MODEL_DIR [MODEL_DIR ...]

A target-stance model learns NewsMTSC sentences; `pipeline predict` reads an article as up to 8
windows of 128 tokens (mean of their logits) with offsets fitted on PerSenT `dev`. The alternative:
classify each sentence that mentions the target (full name or last word), as the model was trained,
and combine them, each weighted by the model's confidence (max probability ** beta) and by its place
among the mentions (1 / (1 + rank) ** gamma), as a weighted mean of log-probabilities; articles with
no such sentence keep the window reading. Both readings get class offsets; every figure is 5-fold
cross-validated on `dev` (offsets fitted on 4 folds, scored on the fifth, 5 shuffles): dev alone
chooses. `random_test` is printed for the reading dev chose, with offsets fitted on all of dev.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from pipeline.core.config import load_config, resolve_path
from pipeline.core.labelled import extra_test_data, label_indices
from pipeline.core.metrics import fit_class_bias
from pipeline.models.decision import apply_article_bias
from pipeline.models.loading import load_torch
from pipeline.text.sentences import sentence_spans
from pipeline.text.targets import mention_form


def cross_validated(probs: np.ndarray, long: np.ndarray, y: np.ndarray, shuffles: int = 5) -> float:
    scores = []
    for seed in range(shuffles):
        predicted = np.zeros(len(y), dtype=int)
        for fit, held_out in StratifiedKFold(5, shuffle=True, random_state=seed).split(probs, y):
            rows = fit[long[fit]]
            bias = list(fit_class_bias(probs[rows], y[rows]))
            predicted[held_out] = apply_article_bias(probs[held_out], long[held_out].astype(int) + 1, bias).argmax(1)
        scores.append(f1_score(y, predicted, average="macro"))
    return float(np.mean(scores))


def mention_sentences(texts: list[str], pairs: list[str]) -> tuple[list[str], list[str], list[int], list[int]]:
    """Every sentence that mentions its article's target: texts, pairs, owner article, rank among them."""
    out_t, out_p, owner, rank = [], [], [], []
    for i, (text, target) in enumerate(zip(texts, pairs, strict=True)):
        k = 0
        for a, b in sentence_spans(text):
            sentence = text[a:b].strip()
            if (form := mention_form(sentence, target)) is not None:
                out_t.append(sentence)
                out_p.append(form)
                owner.append(i)
                rank.append(k)
                k += 1
    return out_t, out_p, owner, rank


def aggregate(
    sentence_probs: np.ndarray, owner: np.ndarray, rank: np.ndarray, window_probs: np.ndarray, beta: float, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-article probabilities from its mention sentences (window reading where it has none); and
    which articles were read by their sentences."""
    out, by_sentences = window_probs.copy(), np.zeros(len(window_probs), dtype=bool)
    log_p = np.log(np.clip(sentence_probs, 1e-9, 1.0))
    weights = sentence_probs.max(1) ** beta / (1.0 + rank) ** gamma
    for article in np.unique(owner):
        rows = owner == article
        mean = (weights[rows, None] * log_p[rows]).sum(0) / weights[rows].sum()
        e = np.exp(mean - mean.max())
        out[article], by_sentences[article] = e / e.sum(), True
    return out, by_sentences


def main(folder: Path) -> None:
    cfg = load_config(resolve_path("configs/target_stance.yaml"))  # the PerSenT sets it names
    model = load_torch(folder, "cpu", "auto", 64)
    model.decision = model.decision.but(article_bias=None)  # refitted here, per reading
    scored = {}
    for name in ("persent_dev", "persent_random_test"):
        [data] = extra_test_data(cfg, name)
        y = label_indices(data.labels, model.labels)
        window_probs = model.predict_proba(data.texts, data.pairs)
        long = model.windows_per_text(data.texts, data.pairs) > 1
        s_texts, s_pairs, owner, rank = mention_sentences(data.texts, data.pairs or [])
        sentence_probs = model.predict_proba(s_texts, s_pairs)
        scored[name] = (y, window_probs, long, sentence_probs, np.asarray(owner), np.asarray(rank))
        print(f"{name}: {len(y)} articles, {len(s_texts)} mention sentences, {len(set(owner))} articles with one")
    y, window_probs, long, sentence_probs, owner, rank = scored["persent_dev"]
    results = {("windows", 0.0, 0.0): cross_validated(window_probs, long, y)}
    for beta, gamma in itertools.product([0.0, 1.0, 2.0], [0.0, 0.5, 1.0, 2.0]):
        probs, _ = aggregate(sentence_probs, owner, rank, window_probs, beta, gamma)
        results[("sentences", beta, gamma)] = cross_validated(probs, np.ones(len(y), dtype=bool), y)
    for (how, beta, gamma), f1 in sorted(results.items(), key=lambda kv: -kv[1]):
        print(
            f"dev, 5-fold CV macro-F1 {f1:.4f}: {how}" + (f" beta={beta} gamma={gamma}" if how == "sentences" else "")
        )
    how, beta, gamma = max(results, key=lambda k: results[k])
    for reading in {("windows", 0.0, 0.0), (how, beta, gamma)}:
        fitted = []
        for name in ("persent_dev", "persent_random_test"):
            y, window_probs, long, sentence_probs, owner, rank = scored[name]
            if reading[0] == "windows":
                probs, rows = window_probs, long
            else:
                probs, _ = aggregate(sentence_probs, owner, rank, window_probs, reading[1], reading[2])
                rows = np.ones(len(y), dtype=bool)
            fitted.append((probs, rows, y))
        (dp, dr, dy), (tp, tr, ty) = fitted
        bias = list(fit_class_bias(dp[dr], dy[dr]))
        test_f1 = f1_score(ty, apply_article_bias(tp, tr.astype(int) + 1, bias).argmax(1), average="macro")
        print(f"random_test macro-F1 {test_f1:.4f} ({reading}, offsets fitted on all of dev)")


if __name__ == "__main__":
    for arg in sys.argv[1:] or [str(resolve_path("models/target_stance"))]:
        print(f"== {arg}")
        main(Path(arg))

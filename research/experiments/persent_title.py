"""Experiment, not a stage: should PerSenT's articles be read with their title in front?

    python scripts/experiments/persent_title.py [MODEL_DIR]   # default models/target_stance

A target-stance model's article offsets (`train.article_bias_set`) are fitted on PerSenT `dev`.
For each way of building the article text (the body, as the config reads it; the title, a blank
line and the body, as an article file holds it), prints the 5-fold cross-validated macro-F1 of the
offsets on `dev` (5 shuffles: the figure that decides), then `random_test` with the offsets fitted
on all of `dev`, for the record.
"""

import sys
from pathlib import Path

import numpy as np
from pipeline.io import read_table
from pipeline.metrics import fit_class_bias
from pipeline.modeling import Classifier, apply_article_bias
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

SOURCE = Path("../shared/data/persent_dev_random_test.csv.gz")
LABELS = {"Positive": "favor", "Negative": "against", "Neutral": "neutral"}


def cross_validated_f1(probs: np.ndarray, n_windows: np.ndarray, y: np.ndarray, shuffles: int = 5) -> float:
    scores = []
    for seed in range(shuffles):
        predicted = np.zeros(len(y), dtype=int)
        for fit, held_out in StratifiedKFold(5, shuffle=True, random_state=seed).split(probs, y):
            articles = fit[n_windows[fit] > 1]
            bias = list(fit_class_bias(probs[articles], y[articles]))
            predicted[held_out] = apply_article_bias(probs[held_out], n_windows[held_out], bias).argmax(axis=1)
        scores.append(f1_score(y, predicted, average="macro"))
    return float(np.mean(scores))


def main(folder: Path) -> None:
    clf = Classifier.load(folder, "auto", "auto", 64)
    clf.article_bias = None  # refitted here for each way of reading
    rows = read_table(SOURCE, ["split", "TITLE", "TARGET_ENTITY", "DOCUMENT", "TRUE_SENTIMENT"])
    for how in ("body", "title + body"):
        scored = {}
        for split in ("dev", "random_test"):
            part = rows[rows["split"] == split]
            body = part["DOCUMENT"].fillna("").str.strip()
            texts = (body if how == "body" else part["TITLE"].fillna("").str.strip() + "\n\n" + body).tolist()
            targets = part["TARGET_ENTITY"].astype(str).tolist()
            y = np.array([clf.labels.index(LABELS[v]) for v in part["TRUE_SENTIMENT"]])
            scored[split] = (clf.predict_proba(texts, targets), clf.windows_per_text(texts, targets), y)
        probs, n_windows, y = scored["dev"]
        bias = list(fit_class_bias(probs[n_windows > 1], y[n_windows > 1]))
        test_probs, test_windows, test_y = scored["random_test"]
        test_f1 = f1_score(test_y, apply_article_bias(test_probs, test_windows, bias).argmax(axis=1), average="macro")
        print(
            f"{how:<13} dev 5-fold CV {cross_validated_f1(probs, n_windows, y):.4f}  "
            f"offsets {np.round(bias, 2).tolist()}  random_test {test_f1:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "models/target_stance"))

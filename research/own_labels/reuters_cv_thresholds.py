"""Reuters-21578, the TF-IDF half: per-label thresholds fitted on out-of-fold train probabilities
instead of on validation, where 17 categories have no article and most rare ones one or two.

For each C (balanced one-vs-rest logistic regression): 5-fold out-of-fold probabilities of train,
thresholds fitted on them (global, then per label where that beats it), the model refitted on all of
train, scored on validation, which took no part in any fit here. Validation only; test is untouched.

    .venv/bin/pipeline prepare -c configs/reuters.yaml
    .venv/bin/python research/own_labels/reuters_cv_thresholds.py
"""

from __future__ import annotations

import time

import numpy as np
from datasets import load_from_disk
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import KFold
from sklearn.multiclass import OneVsRestClassifier

from pipeline.core.config import load_config, resolve_path
from pipeline.core.metrics import fit_thresholds, label_sets
from pipeline.models.tfidf import _vectorizer, tfidf_texts
from pipeline.stages.prepare import split_targets


def scores(y: np.ndarray, chosen: np.ndarray) -> str:
    present = np.flatnonzero(y.sum(0) > 0)
    micro = f1_score(y, chosen, average="micro", zero_division=0)
    macro = f1_score(y[:, present], chosen[:, present], average="macro", zero_division=0)
    return f"micro {micro:.4f} macro {macro:.4f}"


def main() -> None:
    cfg = load_config(resolve_path("configs/reuters.yaml"))
    data = load_from_disk(str(resolve_path(cfg.data.prepared_dir)))
    texts = {s: tfidf_texts(data[s]["text"], data[s]["pair"]) for s in ("train", "validation")}
    y = {s: split_targets(data[s]) for s in ("train", "validation")}
    k = y["train"].shape[1]
    print(f"train {len(y['train'])}, validation {len(y['validation'])} ({(y['validation'].sum(0) > 0).sum()} labels)")
    for c in cfg.baseline.c_grid:
        start = time.perf_counter()

        def fit(x_texts: list[str], y_fit: np.ndarray, c: float = c) -> tuple[object, object]:
            vectorizer = _vectorizer(cfg.baseline)
            x = vectorizer.fit_transform(x_texts)
            linear = LogisticRegression(C=c, solver="liblinear", class_weight="balanced", max_iter=2000)
            # a label with no positive in a fold's train part: that fold predicts it never
            present = np.flatnonzero(y_fit.sum(0) > 0)
            return vectorizer, (OneVsRestClassifier(linear).fit(x, y_fit[:, present]), present)

        def proba(model: tuple[object, object], x_texts: list[str]) -> np.ndarray:
            vectorizer, (classifier, present) = model
            out = np.zeros((len(x_texts), k))
            out[:, present] = classifier.predict_proba(vectorizer.transform(x_texts))  # type: ignore[attr-defined]
            return out

        oof = np.zeros(y["train"].shape)
        for fit_rows, held in KFold(5, shuffle=True, random_state=0).split(texts["train"]):
            model = fit([texts["train"][i] for i in fit_rows], y["train"][fit_rows])
            oof[held] = proba(model, [texts["train"][i] for i in held])
        whole = fit(texts["train"], y["train"])
        p_val = proba(whole, texts["validation"])
        yv = y["validation"]
        lines = {
            "0.5": label_sets(p_val, [0.5] * k),
            "global, out-of-fold": label_sets(p_val, fit_thresholds(oof, y["train"], "global")),
            "per label, out-of-fold": label_sets(p_val, fit_thresholds(oof, y["train"], "per_label")),
            "per label, on validation (in-sample)": label_sets(p_val, fit_thresholds(p_val, yv, "per_label")),
        }
        print(f"C={c:g} ({time.perf_counter() - start:.0f} s)")
        for name, chosen in lines.items():
            print(f"  thresholds {name:<38} {scores(yv, chosen)}")
        np.save(resolve_path(f"data/reuters_oof_c{c:g}.npy"), oof)


if __name__ == "__main__":
    main()

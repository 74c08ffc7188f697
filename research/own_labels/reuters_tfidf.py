"""Reuters-21578, the TF-IDF half alone: one-vs-rest logistic regression by C and class weighting,
scored on validation with 0.5 thresholds and with thresholds fitted on validation (in-sample there).

Read validation only (test is left for the registered model):

    make install && .venv/bin/pipeline prepare -c configs/reuters.yaml
    .venv/bin/python research/own_labels/reuters_tfidf.py
"""

from __future__ import annotations

import time

from datasets import load_from_disk
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from pipeline.core.config import load_config, resolve_path
from pipeline.core.metrics import compute_metrics, fit_thresholds
from pipeline.models.tfidf import _vectorizer, tfidf_texts
from pipeline.stages.prepare import label_names, split_targets


def main() -> None:
    cfg = load_config(resolve_path("configs/reuters.yaml"))
    data = load_from_disk(str(resolve_path(cfg.data.prepared_dir)))
    labels = label_names(data["train"])
    texts = {s: tfidf_texts(data[s]["text"], data[s]["pair"]) for s in ("train", "validation")}
    y = {s: split_targets(data[s]) for s in ("train", "validation")}
    vectorizer = _vectorizer(cfg.baseline)
    x_train, x_val = vectorizer.fit_transform(texts["train"]), vectorizer.transform(texts["validation"])
    for weight in (None, "balanced"):
        for c in (3.0, 10.0, 30.0, 100.0):
            start = time.perf_counter()
            linear = LogisticRegression(C=c, solver="liblinear", class_weight=weight, max_iter=2000)
            probs = OneVsRestClassifier(linear).fit(x_train, y["train"]).predict_proba(x_val)
            at_half = compute_metrics(y["validation"], probs, labels)
            fitted = compute_metrics(
                y["validation"], probs, labels, fit_thresholds(probs, y["validation"], "per_label")
            )
            print(
                f"class_weight={weight} C={c:g}: 0.5 micro {at_half['micro_f1']:.4f} macro {at_half['macro_f1']:.4f}; "
                f"fitted micro {fitted['micro_f1']:.4f} macro {fitted['macro_f1']:.4f} "
                f"({time.perf_counter() - start:.0f} s)"
            )


if __name__ == "__main__":
    main()

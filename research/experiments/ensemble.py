"""Experiment, not a stage: is a seed ensemble (or a weight soup) of trained models better than one?

    python scripts/experiments/ensemble.py MODEL_DIR MODEL_DIR [MODEL_DIR ...]

The model folders are trainings of one config under different `train.seed`. Prints macro-F1 on
validation, test and the config's NewsMTSC-style extra tests (sentences; article sets are skipped
as slow) for each model alone, their geometric-mean ensemble and their uniform weight average; each
both as the transformer alone and stacked with the first folder's TF-IDF model, the stacking
weights fitted on validation as `pipeline train` fits them. Validation decides; test is for the
record.
"""

import copy
import sys
from pathlib import Path

import numpy as np
from pipeline.config import load_config
from pipeline.evaluate import extra_test_data, label_indices, prepared_split_data
from pipeline.modeling import Classifier
from pipeline.tfidf import TFIDF_VOCAB, TfidfModel, fit_stack, log_clipped, stack, tfidf_texts
from sklearn.metrics import f1_score


def main(folders: list[Path]) -> None:
    cfg = load_config(folders[0] / "config.yaml")
    sets = {"validation": prepared_split_data(cfg, "validation"), "test": prepared_split_data(cfg, "test")}
    for e in extra_test_data(cfg):
        if np.median([len(t) for t in e.texts]) < 1000:  # sentences, not whole articles
            sets[e.name] = e
    members = []
    for folder in folders:
        clf = Classifier.load(folder, "auto", "auto", 64)
        clf.tfidf = clf.blend = clf.class_bias = clf.article_bias = None  # the transformer alone
        members.append(clf)
    ys = {k: label_indices(d.labels, members[0].labels) for k, d in sets.items()}
    tfidf = TfidfModel.load(folders[0]) if (folders[0] / TFIDF_VOCAB).is_file() else None
    log_tfidf = {k: tfidf.log_proba(tfidf_texts(d.texts, d.pairs)) for k, d in sets.items()} if tfidf else {}

    def report(name: str, probs: dict[str, np.ndarray]) -> None:
        def f1(p: dict[str, np.ndarray]) -> str:
            return "  ".join(f"{k} {f1_score(ys[k], p[k].argmax(1), average='macro'):.4f}" for k in sets)

        print(f"{name:<28} alone    {f1(probs)}")
        if log_tfidf:
            w = fit_stack(log_clipped(probs["validation"]), log_tfidf["validation"], ys["validation"])
            print(f"{'':<28} blended  {f1({k: stack(log_clipped(probs[k]), log_tfidf[k], w) for k in sets})}")

    each = [{k: clf.predict_proba(d.texts, d.pairs) for k, d in sets.items()} for clf in members]
    for folder, probs in zip(folders, each, strict=True):
        report(folder.name, probs)
    geometric = {k: np.exp(np.mean([np.log(p[k]) for p in each], axis=0)) for k in sets}
    report(f"ensemble of {len(each)}", {k: v / v.sum(axis=1, keepdims=True) for k, v in geometric.items()})
    soup = copy.deepcopy(members[0])
    states = [m.model.state_dict() for m in members]
    soup.model.load_state_dict({n: sum(s[n].float() for s in states) / len(states) for n in states[0]})
    soup.temperature = 1.0
    report("uniform weight soup", {k: soup.predict_proba(d.texts, d.pairs) for k, d in sets.items()})


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python scripts/experiments/ensemble.py MODEL_DIR MODEL_DIR [MODEL_DIR ...]")
    main([Path(p) for p in sys.argv[1:]])

"""Why a model gave a label: sentence occlusion, TF-IDF terms, and how faithful both are.

A sentence's weight is the drop in the label's log-probability when the article is read without
that sentence. The article and each of its one-sentence-shorter copies go to the predictor in one
call, so their windows are batched together: an explanation costs a few forward passes, and every
backend (torch, ONNX, zero-shot, blended, gated) is explained by the same code. A blended model's
TF-IDF half also names its terms, each with its contribution to the label's score.

Faithfulness (DeYoung et al., ERASER, 2020): comprehensiveness is how much the label's probability
drops when the top-k sentences are removed; sufficiency is how much it drops when only they are
kept (lower is better). Both are compared with k sentences drawn at random.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pipeline.core import progress
from pipeline.core.errors import PipelineError
from pipeline.models.predictor import Predictor
from pipeline.models.tfidf import tfidf_texts
from pipeline.text.sentences import only, sentence_spans, without

TOP_TERMS = 10
FAITHFULNESS_KS = (1, 3)
FLOOR = 1e-12  # probabilities are clipped here before a log


@dataclass
class SentenceWeight:
    text: str
    start: int  # character offsets in the explained text
    end: int
    weight: float  # log p(label | article) - log p(label | article without this sentence)


@dataclass
class Explanation:
    label: str
    score: float  # p(label | article)
    sentences: list[SentenceWeight]
    terms: list[dict[str, Any]] = field(default_factory=list)  # [{"term", "weight"}], blended models only

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def top(self, k: int) -> list[SentenceWeight]:
        return sorted(self.sentences, key=lambda s: -s.weight)[:k]


def label_index(clf: Predictor, label: str | None, probs: np.ndarray) -> int:
    if label is None:
        return int(probs.argmax())
    if label not in clf.labels:
        raise PipelineError(f"unknown label {label!r} (the model's labels: {', '.join(clf.labels)})")
    return clf.labels.index(label)


def explain_many(
    clf: Predictor, texts: list[str], pairs: list[str] | None = None, labels: list[str | None] | None = None
) -> list[Explanation]:
    """An explanation of each text (its predicted label, or the one given), all in one predictor call."""
    spans = [sentence_spans(t) for t in texts]
    variants: list[str] = []
    variant_pairs: list[str] = []
    for i, (text, s) in enumerate(zip(texts, spans, strict=True)):
        variants += [text, *(without(text, s, {j}) for j in range(len(s)))]
        variant_pairs += [pairs[i] if pairs else ""] * (len(s) + 1)
    with progress.aside():
        probs = clf.predict_proba(variants, variant_pairs if pairs is not None else None)
    out, row = [], 0
    for i, (text, s) in enumerate(zip(texts, spans, strict=True)):
        full, dropped = probs[row], probs[row + 1 : row + 1 + len(s)]
        row += len(s) + 1
        k = label_index(clf, labels[i] if labels else None, full)
        weights = np.log(max(full[k], FLOOR)) - np.log(np.clip(dropped[:, k], FLOOR, None))
        sentences = [SentenceWeight(text[a:b], a, b, round(float(w), 6)) for (a, b), w in zip(s, weights, strict=True)]
        terms = tfidf_terms(clf, text, pairs[i] if pairs else None, k)
        out.append(Explanation(clf.labels[k], round(float(full[k]), 6), sentences, terms))
    return out


def explain(clf: Predictor, text: str, pair: str | None = None, label: str | None = None) -> Explanation:
    return explain_many(clf, [text], [pair or ""] if pair is not None else None, [label])[0]


def tfidf_terms(clf: Predictor, text: str, pair: str | None, label: int) -> list[dict[str, Any]]:
    """The TF-IDF half's top terms for `label`, weighted by the share of the blend it carries."""
    d = clf.decision
    if d.tfidf is None or d.blend is None:
        return []
    bag = tfidf_texts([text], [pair] if pair is not None else None)[0]
    share = d.blend[1]
    terms = d.tfidf.term_weights(bag, label, TOP_TERMS)
    return [{"term": term, "weight": round(weight * share, 6)} for term, weight in terms]


@dataclass
class Faithfulness:
    n: int  # articles scored (those with more sentences than the largest k)
    comprehensiveness: dict[str, float]  # top1, top3, random1, random3
    sufficiency: dict[str, float]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def explainable_rows(texts: list[str], ks: tuple[int, ...] = FAITHFULNESS_KS) -> list[int]:
    """The texts with more sentences than the largest k: the ones faithfulness can score."""
    keep = [i for i, t in enumerate(texts) if len(sentence_spans(t)) > max(ks)]
    if not keep:
        raise PipelineError(f"no text has more than {max(ks)} sentences to explain")
    return keep


def faithfulness(
    clf: Predictor,
    texts: list[str],
    pairs: list[str] | None = None,
    ks: tuple[int, ...] = FAITHFULNESS_KS,
    seed: int = 0,
    chunk: int = 8,
) -> Faithfulness:
    """Comprehensiveness and sufficiency of the explanations of `texts` (their predicted labels), at each
    k, against k random sentences; texts with no more sentences than the largest k are left out."""
    rng = np.random.default_rng(seed)
    keep = explainable_rows(texts, ks)
    comp: dict[str, list[float]] = {f"{kind}{k}": [] for kind in ("top", "random") for k in ks}
    suff: dict[str, list[float]] = {key: [] for key in comp}
    for start in range(0, len(keep), chunk):
        rows = keep[start : start + chunk]
        chunk_texts = [texts[i] for i in rows]
        chunk_pairs = [pairs[i] for i in rows] if pairs is not None else None
        explanations = explain_many(clf, chunk_texts, chunk_pairs)
        variants, variant_pairs, keys = [], [], []
        for j, (text, e) in enumerate(zip(chunk_texts, explanations, strict=True)):
            spans = [(s.start, s.end) for s in e.sentences]
            order = np.argsort([-s.weight for s in e.sentences], kind="stable")
            for k in ks:
                for kind, picked in (("top", order[:k]), ("random", rng.choice(len(spans), k, replace=False))):
                    chosen = {int(x) for x in picked}
                    variants += [without(text, spans, chosen), only(text, spans, chosen)]
                    variant_pairs += [chunk_pairs[j] if chunk_pairs else ""] * 2
                    keys.append((j, f"{kind}{k}"))
        with progress.aside():
            probs = clf.predict_proba(variants, variant_pairs if pairs is not None else None)
        for v, (j, key) in enumerate(keys):
            e = explanations[j]
            k = clf.labels.index(e.label)
            comp[key].append(e.score - float(probs[2 * v, k]))
            suff[key].append(e.score - float(probs[2 * v + 1, k]))
        progress.advance(len(rows))
    return Faithfulness(
        len(keep),
        {key: round(float(np.mean(v)), 6) for key, v in comp.items()},
        {key: round(float(np.mean(v)), 6) for key, v in suff.items()},
    )

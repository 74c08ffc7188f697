"""The decision: everything between a backend's window logits and an article's class probabilities.

Every backend (torch, ONNX, zero-shot encoders) only turns windows into logits; one `Decision`,
built from the model card, does the rest, in this order:

1. route: which texts the backend must read at all. A relatedness gate (claim stance) answers
   the pairs it is sure are unrelated; with `tfidf_first` the TF-IDF model answers the texts it
   is sure of. The others go to the backend.
2. combine each text's windows (`combine`), at a temperature fitted on validation;
3. the gate's and the transformer's probabilities joined, or the TF-IDF blend stacked on;
4. per-class offsets (`class_bias`), and offsets for texts longer than one window (`article_bias`).

With `article_reading: mention_sentences` the Predictor reads a pair text longer than one window (an
article) as its sentences that mention the pair, each through steps 1-4 as a sentence, and joins them
with `mean_log_probs` before the article offsets.

A multi-label model (`multi_label`) reads its logits through a sigmoid a label instead of a softmax,
blends per label, and `chosen` gives each text every label at or above its threshold (at least one).

Torch, ONNX, the MLflow pyfunc, evaluate and train's own scoring all call it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.metrics import label_sets
from pipeline.models.card import DecisionCard, ModelCard
from pipeline.models.gate import RelatednessGate, combine_gate
from pipeline.models.tfidf import TfidfModel, log_clipped, stack, tfidf_texts
from pipeline.text.windows import Windows

COMBINE_METHODS = ("mean_logits", "max_logits", "mean_probs", "first")


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def combine_windows(
    logits: np.ndarray, owner: list[int], n_articles: int, how: str, multi_label: bool = False
) -> np.ndarray:
    """Per-article class probabilities from per-window logits (per-label sigmoids when `multi_label`)."""
    owners = np.asarray(owner)
    probs = np.zeros((n_articles, logits.shape[1]), dtype=np.float64)
    activation = sigmoid if multi_label else softmax
    for article in range(n_articles):
        rows = logits[owners == article]
        if how == "first":
            probs[article] = activation(rows[0])
        elif how == "mean_logits":
            probs[article] = activation(rows.mean(axis=0))
        elif how == "max_logits":
            probs[article] = activation(rows.max(axis=0))
        elif how == "mean_probs":
            probs[article] = activation(rows).mean(axis=0)
        else:
            raise PipelineError(f"unknown window combination {how!r} ({', '.join(COMBINE_METHODS)})")
    return probs


def mean_log_probs(probs: np.ndarray, owner: np.ndarray, n_texts: int) -> np.ndarray:
    """Per-text probabilities from those of its units (`owner[i]`: the text of row i): the softmax of
    their mean log-probability, so a unit sure of a class counts for more than a mean of probabilities."""
    log_p = np.log(np.clip(probs, 1e-9, 1.0))
    sums = np.zeros((n_texts, probs.shape[1]))
    np.add.at(sums, owner, log_p)
    means = sums / np.bincount(owner, minlength=n_texts)[:, None]
    return softmax(means)


def apply_class_bias(probs: np.ndarray, bias: list[float] | None) -> np.ndarray:
    """Probabilities times exp(bias), renormalised: the decision rule fitted on validation
    (`train.class_bias`); no bias leaves them as they are."""
    if not bias:
        return probs
    shifted = probs * np.exp(np.asarray(bias))[None, :]
    return shifted / shifted.sum(axis=1, keepdims=True)


def apply_article_bias(probs: np.ndarray, n_windows: np.ndarray, bias: list[float] | None) -> np.ndarray:
    """`apply_class_bias` on the texts longer than one window (articles) only. A model trained on
    sentences reads an article's windows with another class balance, so articles get offsets
    fitted on labelled articles (`train.article_bias_set`); sentences keep the validation rule."""
    if not bias:
        return probs
    articles = n_windows > 1
    out = probs.copy()
    out[articles] = apply_class_bias(probs[articles], bias)
    return out


@dataclass
class Route:
    """Which of `n` texts the backend reads (`rows`), and what answers the others."""

    n: int
    rows: np.ndarray
    p_gate: np.ndarray | None = None  # the gate's P(gate label) of every text
    log_tfidf: np.ndarray | None = None  # the TF-IDF model's log-probabilities of every text

    def take(self, items: list[str] | None) -> list[str] | None:
        return [items[i] for i in self.rows] if items is not None else None


@dataclass
class Decision:
    labels: list[str]
    combine: str = "mean_logits"
    temperature: float = 1.0  # window logits are divided by it
    gate: RelatednessGate | None = None
    tfidf: TfidfModel | None = None
    blend: tuple[float, float] | None = None  # stacking weights (transformer, TF-IDF)
    tfidf_first: float | None = None
    class_bias: list[float] | None = None
    article_bias: list[float] | None = None
    multi_label: bool = False
    thresholds: list[float] | None = None  # multi-label: per label (None: 0.5)
    article_reading: str = "windows"  # or "mention_sentences": see Predictor

    @classmethod
    def from_card(cls, card: ModelCard, folder: Path) -> Decision:
        d = card.decision
        return cls(
            labels=list(card.labels),
            combine=d.combine,
            temperature=d.temperature,
            gate=RelatednessGate.load(folder) if d.gate_label else None,
            tfidf=TfidfModel.load(folder) if d.tfidf_blend else None,
            blend=d.tfidf_blend,
            tfidf_first=d.tfidf_first,
            class_bias=d.class_bias,
            article_bias=d.article_bias,
            multi_label=d.multi_label,
            thresholds=d.thresholds,
            article_reading=d.article_reading,
        )

    def to_card(self) -> DecisionCard:
        return DecisionCard(
            combine=self.combine,  # type: ignore[arg-type]
            temperature=self.temperature,
            gate_label=self.gate.label if self.gate else None,
            tfidf_blend=self.blend,
            tfidf_first=self.tfidf_first,
            class_bias=self.class_bias,
            article_bias=self.article_bias,
            multi_label=self.multi_label,
            thresholds=self.thresholds,
            article_reading=self.article_reading,  # type: ignore[arg-type]
        )

    def chosen(self, probs: np.ndarray) -> np.ndarray:
        """0/1 (texts × labels): a multi-label model's labels at or above their thresholds (the most
        likely one where none is), a single-label model's most likely label."""
        if self.multi_label:
            return label_sets(probs, self.thresholds)
        out = np.zeros(probs.shape, dtype=np.int8)
        out[np.arange(len(probs)), probs.argmax(axis=1)] = 1
        return out

    def save(self, folder: Path) -> None:
        """The gate's and the TF-IDF model's files (the rest of the decision is in the card)."""
        if self.gate is not None:
            self.gate.save(folder)
        if self.tfidf is not None:
            self.tfidf.save(folder)

    def but(self, **changes: object) -> Decision:
        """A copy with some settings changed (train fits them one after the other)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def blended(self) -> bool:
        return self.tfidf is not None and self.blend is not None

    def route(self, texts: list[str], pairs: list[str] | None) -> Route:
        n = len(texts)
        if self.gate is not None:
            if pairs is None:
                raise PipelineError("this two-stage model classifies pairs: give the pair column (claim or headline)")
            p_gate = self.gate.probability(pairs, texts)
            return Route(n, np.flatnonzero(p_gate < self.gate.threshold), p_gate=p_gate)
        if self.tfidf is not None and self.blend is not None:
            log_tfidf = self.tfidf.log_proba(tfidf_texts(texts, pairs))
            if self.tfidf_first is None:
                return Route(n, np.arange(n), log_tfidf=log_tfidf)
            # the expensive model reads only the texts the cheap one is unsure of
            unsure = np.exp(log_tfidf).max(axis=1) < self.tfidf_first
            return Route(n, np.flatnonzero(unsure), log_tfidf=log_tfidf)
        return Route(n, np.arange(n))

    def decide(
        self,
        route: Route,
        logits: np.ndarray,
        windows: Windows,
        temperatures: list[float] | None = None,
        combine: str | None = None,
        n_windows: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Probabilities of all `route.n` texts, one array per temperature (default: the fitted one),
        from the logits of the windows of the routed texts. `n_windows` (windows per text, every
        text) is needed only with `article_bias`."""
        out = []
        for t in temperatures or [self.temperature]:
            model_probs = combine_windows(
                logits / t, windows.owner, len(route.rows), combine or self.combine, self.multi_label
            )
            probs = self._join(route, model_probs)
            probs = apply_class_bias(probs, self.class_bias)
            if self.article_bias:
                if n_windows is None:
                    raise ValueError("article_bias needs the number of windows of every text")
                probs = apply_article_bias(probs, n_windows, self.article_bias)
            out.append(probs)
        return out

    def _join(self, route: Route, model_probs: np.ndarray) -> np.ndarray:
        """The backend's probabilities of the routed texts joined with what answered the others."""
        if route.p_gate is not None and self.gate is not None:
            return combine_gate(route.p_gate, route.rows, model_probs, self.labels.index(self.gate.label))
        if route.log_tfidf is not None and self.blend is not None:
            blended = np.exp(route.log_tfidf)
            if len(route.rows):
                blended[route.rows] = stack(
                    log_clipped(model_probs), route.log_tfidf[route.rows], self.blend, self.multi_label
                )
            return blended
        return model_probs

"""Two-stage classification, stage one: a relatedness gate in front of the fine-tuned model.

For claim stance (FNC-1) three quarters of the pairs are `unrelated`: the headline is about
another story. Word overlap tells those apart cheaply, so a logistic regression on four
TF-IDF similarity features of (pair, text) gives P(gate label), and the two stages combine as
follows: the gate takes off the pairs it is sure are unrelated (P >= its threshold), and the
transformer, trained on every other pair including the gate's unsure unrelated ones, decides
the rest among all labels. The gate is stored as JSON beside the model, no pickle.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.text.evidence import SENTENCE_END

if TYPE_CHECKING:
    from sklearn.feature_extraction.text import TfidfVectorizer

GATE_FILE = "gate.json"
FEATURES = ["cosine", "best_sentence_cosine", "word_overlap", "name_overlap"]
WORD = re.compile(r"\w+")
NAME = re.compile(r"\b[A-Z][a-z]+\b")


def _vectorizer(vocabulary: dict[str, int] | None = None) -> TfidfVectorizer:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(sublinear_tf=True, stop_words="english", vocabulary=vocabulary)


def _overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(1, len(a))


def similarity_features(vectorizer: TfidfVectorizer, pairs: list[str], texts: list[str]) -> np.ndarray:
    """Rows of FEATURES: how much of the pair (headline, claim) the text talks about."""
    p, t = vectorizer.transform(pairs), vectorizer.transform(texts)
    cosine = np.asarray(p.multiply(t).sum(axis=1)).ravel()
    sentence_matrices: dict[str, Any] = {}  # a body recurs with many headlines
    best = np.zeros(len(texts))
    for i, text in enumerate(texts):
        if text not in sentence_matrices:
            sentences = [s for s in SENTENCE_END.split(text) if s.strip()][:60] or [text]
            sentence_matrices[text] = vectorizer.transform(sentences)
        best[i] = (sentence_matrices[text] @ p[i].T).max()
    words = [
        _overlap(set(WORD.findall(a.lower())), set(WORD.findall(b.lower()))) for a, b in zip(pairs, texts, strict=True)
    ]
    names = [_overlap(set(NAME.findall(a)), set(NAME.findall(b))) for a, b in zip(pairs, texts, strict=True)]
    return np.column_stack([cosine, best, words, names])


@dataclass
class RelatednessGate:
    """P(label == gate label | pair, text) from similarity features."""

    label: str
    threshold: float  # at or above it the gate decides; below, the transformer does
    vocabulary: dict[str, int]
    idf: list[float]
    coef: list[float]
    intercept: float

    def _fitted_vectorizer(self) -> TfidfVectorizer:
        vectorizer = _vectorizer(self.vocabulary)
        vectorizer.fit(["x"])  # sets up the fitted state; idf_ is overwritten next
        vectorizer.idf_ = np.asarray(self.idf)
        return vectorizer

    @classmethod
    def fit(
        cls, label: str, threshold: float, pairs: list[str], texts: list[str], is_label: np.ndarray, seed: int
    ) -> tuple[RelatednessGate, np.ndarray]:
        """The fitted gate and its probabilities on the rows it was fitted on."""
        from sklearn.linear_model import LogisticRegression

        vectorizer = _vectorizer()
        vectorizer.fit(list(dict.fromkeys(pairs)) + list(dict.fromkeys(texts)))
        x = similarity_features(vectorizer, pairs, texts)
        lr = LogisticRegression(C=10.0, max_iter=1000, random_state=seed).fit(x, is_label.astype(int))
        vocabulary = {str(k): int(v) for k, v in vectorizer.vocabulary_.items()}
        idf = vectorizer.idf_.tolist()
        gate = cls(label, threshold, vocabulary, idf, lr.coef_[0].tolist(), float(lr.intercept_[0]))
        return gate, gate._logistic(x)

    def _logistic(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-(x @ np.asarray(self.coef) + self.intercept))))

    def probability(self, pairs: list[str], texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return self._logistic(similarity_features(self._fitted_vectorizer(), pairs, texts))

    def save(self, folder: Path) -> None:
        data = {
            "label": self.label,
            "threshold": self.threshold,
            "features": FEATURES,
            "coef": self.coef,
            "intercept": self.intercept,
        }
        data |= {"idf": self.idf, "vocabulary": self.vocabulary}
        (folder / GATE_FILE).write_text(json.dumps(data), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> RelatednessGate:
        data = json.loads((folder / GATE_FILE).read_text(encoding="utf-8"))
        return cls(
            data["label"],
            float(data["threshold"]),
            data["vocabulary"],
            data["idf"],
            data["coef"],
            float(data["intercept"]),
        )


def combine_gate(p_gate: np.ndarray, passed: np.ndarray, model_probs: np.ndarray, gate_index: int) -> np.ndarray:
    """Full class probabilities: the model's on the rows the gate passed; on the rows it
    stopped, the gate's probability for its label and the rest shared evenly."""
    n_labels = model_probs.shape[1]
    out = np.repeat(((1.0 - p_gate) / (n_labels - 1))[:, None], n_labels, axis=1)
    out[:, gate_index] = p_gate
    out[passed] = model_probs
    return out

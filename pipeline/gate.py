"""Two-stage classification, stage one: a relatedness gate in front of the fine-tuned model.

For claim stance (FNC-1) three quarters of the pairs are `unrelated`: the headline is about
another story. Word overlap tells those apart cheaply, so a logistic regression on four
TF-IDF similarity features of (pair, text) gives P(gate label); the transformer is trained on,
and only run on, the pairs the gate passes, and the two combine as
P(y) = P(related) * P(y | related). The gate is stored as JSON beside the model, no pickle.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sklearn.feature_extraction.text import TfidfVectorizer

GATE_FILE = "gate.json"
FEATURES = ["cosine", "best_sentence_cosine", "word_overlap", "name_overlap"]
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
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
    def fit(cls, label: str, pairs: list[str], texts: list[str], is_label: np.ndarray, seed: int) -> RelatednessGate:
        from sklearn.linear_model import LogisticRegression

        vectorizer = _vectorizer()
        vectorizer.fit(list(dict.fromkeys(pairs)) + list(dict.fromkeys(texts)))
        x = similarity_features(vectorizer, pairs, texts)
        lr = LogisticRegression(C=10.0, max_iter=1000, random_state=seed).fit(x, is_label.astype(int))
        vocabulary = {str(k): int(v) for k, v in vectorizer.vocabulary_.items()}
        return cls(label, vocabulary, vectorizer.idf_.tolist(), lr.coef_[0].tolist(), float(lr.intercept_[0]))

    def probability(self, pairs: list[str], texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        x = similarity_features(self._fitted_vectorizer(), pairs, texts)
        return np.asarray(1.0 / (1.0 + np.exp(-(x @ np.asarray(self.coef) + self.intercept))))

    def save(self, folder: Path) -> None:
        data = {"label": self.label, "features": FEATURES, "coef": self.coef, "intercept": self.intercept}
        data |= {"idf": self.idf, "vocabulary": self.vocabulary}
        (folder / GATE_FILE).write_text(json.dumps(data), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> RelatednessGate:
        data = json.loads((folder / GATE_FILE).read_text(encoding="utf-8"))
        return cls(data["label"], data["vocabulary"], data["idf"], data["coef"], float(data["intercept"]))


def combine_gate(
    p_gate: np.ndarray, passed: np.ndarray, head_probs: np.ndarray, labels: list[str], gate_label: str
) -> np.ndarray:
    """Full class probabilities from the gate and the head's probabilities on the passed rows.

    Rows the gate stopped get the gate's probability for its label and share the rest evenly.
    """
    gate_index = labels.index(gate_label)
    head_index = np.asarray([i for i, label in enumerate(labels) if label != gate_label])
    out = np.zeros((len(p_gate), len(labels)))
    out[:, gate_index] = p_gate
    rest = (1.0 - p_gate)[:, None]
    out[:, head_index] = rest / len(head_index)
    out[np.ix_(passed, head_index)] = rest[passed] * head_probs
    return out

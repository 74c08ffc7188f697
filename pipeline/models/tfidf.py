"""TF-IDF + logistic regression: the baseline stage's model, and the second member of a blend.

`fit_tfidf` fits it with scikit-learn (C chosen on validation macro-F1), for `pipeline baseline`
and for training with `model.tfidf_blend`; for a multi-label task, one-vs-rest (a binary logistic
regression a label, sigmoid probabilities). A blended classifier stacks the two models'
log-probabilities, p ∝ p_transformer^a · p_tfidf^b, with a and b fitted on validation log loss
(`fit_stack`). At predict time `TfidfModel` applies the fitted vectorizer and classifier in
numpy: importing scikit-learn costs 2.6 s, more than the whole ONNX predict path. A test checks
that it gives scikit-learn's probabilities.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import BaselineConfig
from pipeline.core.errors import PipelineError
from pipeline.core.metrics import compute_metrics

TFIDF_VOCAB, TFIDF_WEIGHTS = "tfidf_vocabulary.json", "tfidf_weights.npz"
TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern


def tfidf_texts(texts: list[str], pairs: list[str] | None) -> list[str]:
    """What the bag of words sees: the pair (claim, target or title), if any, then the text."""
    if pairs is None:
        return list(texts)
    return [f"{p}\n\n{t}" for p, t in zip(pairs, texts, strict=True)]


def _vectorizer(settings: BaselineConfig) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    # TfidfModel.features reproduces exactly these settings
    return TfidfVectorizer(
        sublinear_tf=True,
        ngram_range=(1, settings.ngram_max),
        max_features=settings.max_features,
        min_df=2,
        strip_accents="unicode",
    )


@dataclass
class FittedTfidf:
    vectorizer: Any  # sklearn TfidfVectorizer
    classifier: Any  # sklearn LogisticRegression, or OneVsRestClassifier of them (multi-label)
    c: float
    val_macro_f1_by_c: dict[float, float]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.classifier.predict_proba(self.vectorizer.transform(texts)))


def fit_tfidf(
    settings: BaselineConfig,
    train_texts: list[str],
    y_train: np.ndarray,
    val_texts: list[str],
    y_val: np.ndarray,
    labels: list[str],
    seed: int,
) -> FittedTfidf:
    """The vectorizer is fitted once on train; only C is searched, on validation macro-F1. A 0/1 matrix
    `y_train` (multi-label) fits one-vs-rest."""
    from sklearn.linear_model import LogisticRegression  # lazy: predict applies the model without sklearn
    from sklearn.multiclass import OneVsRestClassifier

    multi_label = y_train.ndim == 2
    if not multi_label and len(set(y_train.tolist())) < len(labels):
        missing = sorted(set(labels) - {labels[i] for i in set(y_train.tolist())})
        raise PipelineError(f"the TF-IDF model needs train examples of every label; none of {missing}")
    vectorizer = _vectorizer(settings)
    x_train = vectorizer.fit_transform(train_texts)
    x_val = vectorizer.transform(val_texts)

    def fit(c: float) -> Any:
        weight = None if settings.class_weight == "none" else settings.class_weight
        linear = LogisticRegression(C=c, solver=settings.solver, class_weight=weight, max_iter=2000, random_state=seed)
        return (OneVsRestClassifier(linear) if multi_label else linear).fit(x_train, y_train)

    # each C is fitted once and the chosen model kept: fitting it again only repeated the work
    models = {c: fit(c) for c in settings.c_grid}
    scores = {c: compute_metrics(y_val, m.predict_proba(x_val), labels)["macro_f1"] for c, m in models.items()}
    best_c = max(settings.c_grid, key=lambda c: (scores[c], -c))
    return FittedTfidf(vectorizer, models[best_c], best_c, scores)


def _strip_accents(text: str) -> str:
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


@dataclass
class TfidfModel:
    """A fitted TF-IDF + logistic regression model as plain arrays, applied without scikit-learn."""

    terms: list[str]  # the vocabulary, in column order
    idf: np.ndarray  # (n_terms,)
    coef: np.ndarray  # (n_labels, n_terms); one row for two labels, as scikit-learn stores it
    intercept: np.ndarray  # (n_labels,) or (1,)
    ngram_max: int
    multi_label: bool = False  # one-vs-rest: a sigmoid a label
    _index: dict[str, int] | None = None

    @classmethod
    def from_fitted(cls, fitted: FittedTfidf) -> TfidfModel:
        v = fitted.vectorizer
        terms = [""] * len(v.vocabulary_)
        for term, i in v.vocabulary_.items():
            terms[i] = term
        coef, intercept = _linear_weights(fitted.classifier, len(terms))
        return cls(
            terms, np.asarray(v.idf_, dtype=np.float64), coef, intercept, int(v.ngram_range[1]), _is_one_vs_rest(fitted)
        )

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Column indices and values of one L2-normalised sublinear TF-IDF row."""
        if self._index is None:
            self._index = {t: i for i, t in enumerate(self.terms)}
        tokens = TOKEN.findall(_strip_accents(text.lower()))
        grams = Counter(tokens)
        for n in range(2, self.ngram_max + 1):
            grams.update(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        hits = [(self._index[g], c) for g, c in grams.items() if g in self._index]
        if not hits:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        idx = np.asarray([i for i, _ in hits], dtype=np.int64)
        values = np.asarray([1.0 + math.log(c) for _, c in hits]) * self.idf[idx]
        return idx, values / np.linalg.norm(values)

    def term_weights(self, text: str, label: int, top: int) -> list[tuple[str, float]]:
        """The `top` terms of `text` by their contribution to `label`'s score (TF-IDF value times the
        label's weight, less the mean over labels for a softmax model, where only differences count)."""
        idx, values = self.features(text)
        if not len(idx):
            return []
        coef = self.coef[:, idx]
        if self.multi_label:
            weights = coef[label]
        elif coef.shape[0] == 1:  # binary: the one row scores the second label
            weights = coef[0] / 2 if label == 1 else -coef[0] / 2
        else:
            weights = coef[label] - coef.mean(axis=0)
        contribution = weights * values
        order = np.argsort(-np.abs(contribution), kind="stable")[:top]
        return [(self.terms[idx[i]], float(contribution[i])) for i in order]

    def log_proba(self, texts: list[str]) -> np.ndarray:
        scores = np.zeros((len(texts), self.coef.shape[0]))
        for row, text in enumerate(texts):
            idx, values = self.features(text)
            scores[row] = self.coef[:, idx] @ values
        scores += self.intercept
        if self.multi_label:
            return np.asarray(-np.logaddexp(0.0, -scores))  # log sigmoid
        if self.coef.shape[0] == 1:  # binary: scikit-learn's single row scores the second label
            scores = np.column_stack([np.zeros(len(texts)), scores[:, 0]])
        return _log_softmax(scores)

    def save(self, folder: Path) -> None:
        (folder / TFIDF_VOCAB).write_text(
            json.dumps({"ngram_max": self.ngram_max, "multi_label": self.multi_label, "terms": self.terms}),
            encoding="utf-8",
        )
        np.savez(folder / TFIDF_WEIGHTS, idf=self.idf, coef=self.coef, intercept=self.intercept)

    @classmethod
    def load(cls, folder: Path) -> TfidfModel:
        if not (folder / TFIDF_VOCAB).is_file() or not (folder / TFIDF_WEIGHTS).is_file():
            raise PipelineError(f"{folder} is a blended model but its TF-IDF files are missing")
        vocab = json.loads((folder / TFIDF_VOCAB).read_text(encoding="utf-8"))
        with np.load(folder / TFIDF_WEIGHTS, allow_pickle=False) as w:
            return cls(
                list(vocab["terms"]),
                w["idf"],
                w["coef"],
                w["intercept"],
                int(vocab["ngram_max"]),
                bool(vocab.get("multi_label", False)),
            )


def _is_one_vs_rest(fitted: FittedTfidf) -> bool:
    return hasattr(fitted.classifier, "estimators_")


def _linear_weights(classifier: Any, n_terms: int) -> tuple[np.ndarray, np.ndarray]:
    """coef (labels × terms) and intercepts of a logistic regression or of one-vs-rest ones. A label
    one-vs-rest saw only one value of gets a constant probability (scikit-learn's constant predictor)."""
    if not hasattr(classifier, "estimators_"):
        return np.asarray(classifier.coef_, dtype=np.float64), np.asarray(classifier.intercept_, dtype=np.float64)
    coef, intercept = np.zeros((len(classifier.estimators_), n_terms)), np.zeros(len(classifier.estimators_))
    for j, estimator in enumerate(classifier.estimators_):
        if hasattr(estimator, "coef_"):
            coef[j], intercept[j] = estimator.coef_[0], estimator.intercept_[0]
        else:
            p = float(np.clip(np.ravel(estimator.y_)[0], 1e-6, 1 - 1e-6))
            intercept[j] = math.log(p / (1 - p))
    return coef, intercept


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)))


def _logit(log_p: np.ndarray) -> np.ndarray:
    p = np.clip(np.exp(log_p), 1e-12, 1 - 1e-12)
    return np.asarray(np.log(p) - np.log1p(-p))


def stack(
    log_p_transformer: np.ndarray, log_p_tfidf: np.ndarray, weights: tuple[float, float], multi_label: bool = False
) -> np.ndarray:
    """Probabilities ∝ p_transformer^a · p_tfidf^b; multi-label, per label: sigmoid(a·logit p_t + b·logit p_tfidf)."""
    a, b = weights
    if multi_label:
        return np.asarray(1.0 / (1.0 + np.exp(-(a * _logit(log_p_transformer) + b * _logit(log_p_tfidf)))))
    return np.exp(_log_softmax(a * log_p_transformer + b * log_p_tfidf))


def fit_stack(log_p_transformer: np.ndarray, log_p_tfidf: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Non-negative (a, b) that minimise the log loss of `stack` on the given (validation) rows (binary
    cross-entropy for a multi-label 0/1 `y`); a smooth criterion, where counting a few hundred validation
    errors jumps from weight to weight."""
    from scipy.optimize import minimize

    rows = np.arange(len(y))
    logit_t, logit_tfidf = (_logit(x) for x in (log_p_transformer, log_p_tfidf)) if y.ndim == 2 else (None, None)

    def log_loss(ab: np.ndarray) -> float:
        if logit_t is not None and logit_tfidf is not None:
            z = ab[0] * logit_t + ab[1] * logit_tfidf
            return float((np.logaddexp(0.0, z) - y * z).mean())
        return float(-_log_softmax(ab[0] * log_p_transformer + ab[1] * log_p_tfidf)[rows, y].mean())

    result = minimize(log_loss, np.asarray([1.0, 0.0]), bounds=[(0.0, None), (0.0, None)], method="L-BFGS-B")
    return float(result.x[0]), float(result.x[1])


def log_clipped(probs: np.ndarray) -> np.ndarray:
    return np.asarray(np.log(np.clip(probs, 1e-12, None)))


# thresholds tried for answering with the TF-IDF model alone (`fit_tfidf_first`)
TFIDF_FIRST_GRID = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 ... 0.95


def fit_tfidf_first(
    p_tfidf: np.ndarray, p_full: np.ndarray, grid: tuple[float, ...] = TFIDF_FIRST_GRID
) -> float | None:
    """The lowest threshold at which answering with the TF-IDF model alone, wherever its top
    probability reaches it, changes no label the blended model gives these (validation) rows;
    None when every threshold of the grid changes one."""
    full, sure_of = p_full.argmax(axis=1), p_tfidf.max(axis=1)
    for threshold in sorted(grid):
        sure = sure_of >= threshold
        if (p_tfidf[sure].argmax(axis=1) == full[sure]).all():
            return float(threshold)
    return None

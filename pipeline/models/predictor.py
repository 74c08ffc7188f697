"""One predictor for every kind of model: a backend that turns windows into logits, and the Decision after it.

Each text is tokenised once: the windows the backend reads are the ones the Decision counts. Long
lists are scored in chunks, so a stage's progress moves and memory stays bounded. A model whose
decision reads articles by their mention sentences (`article_reading`) is given those sentences in
place of the article, then their probabilities are joined back into the article's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.core import progress
from pipeline.models.card import ModelCard
from pipeline.models.decision import Decision, apply_article_bias, mean_log_probs
from pipeline.text.targets import mention_sentences
from pipeline.text.windows import Windows, windows_per_text

CHUNK_TEXTS = 512  # texts scored in one pass of the backend


class Backend(Protocol):
    """What the Decision needs of a model: the windows it reads, and their logits."""

    def windows(self, texts: list[str], pairs: list[str] | None) -> Windows: ...

    def window_logits(self, texts: list[str], pairs: list[str] | None) -> tuple[np.ndarray, Windows]: ...


@dataclass
class Predictor:
    card: ModelCard
    backend: Backend
    decision: Decision

    @property
    def labels(self) -> list[str]:
        return self.card.labels

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        return self.predict_proba_at(texts, pairs)[0]

    def predict_proba_at(
        self,
        texts: list[str],
        pairs: list[str] | None,
        temperatures: list[float] | None = None,
        combines: list[str] | None = None,
    ) -> list[np.ndarray]:
        """Probabilities at each temperature (default: the fitted one), or with each window combination
        (`combines`), from one pass of the backend."""
        settings: list[tuple[float, str | None]] = [(t, None) for t in temperatures or [self.decision.temperature]]
        if combines:
            settings = [(self.decision.temperature, how) for how in combines]
        if not texts:
            return [np.zeros((0, len(self.labels))) for _ in settings]
        parts = []
        for start in range(0, len(texts), CHUNK_TEXTS):
            chunk = texts[start : start + CHUNK_TEXTS]
            parts.append(self._chunk_proba(chunk, pairs[start : start + CHUNK_TEXTS] if pairs else None, settings))
            progress.advance_texts(len(chunk))
        return [np.concatenate([part[k] for part in parts]) for k in range(len(settings))]

    def _chunk_proba(
        self, texts: list[str], pairs: list[str] | None, settings: list[tuple[float, str | None]]
    ) -> list[np.ndarray]:
        if pairs is not None and self.decision.article_reading == "mention_sentences":
            return self._by_mention_sentences(texts, pairs, settings)
        return self._read(texts, pairs, settings, self.decision)

    def _by_mention_sentences(
        self, texts: list[str], pairs: list[str], settings: list[tuple[float, str | None]]
    ) -> list[np.ndarray]:
        """Articles (texts over one window) read as their sentences that mention the pair, each as the
        model learnt sentences; a sentence, or an article with no such sentence, as itself."""
        n_windows = self.windows_per_text(texts, pairs)
        unit_texts, unit_pairs, owner = [], [], []
        for i, (text, pair) in enumerate(zip(texts, pairs, strict=True)):
            units = mention_sentences(text, pair) if n_windows[i] > 1 else []
            for unit_text, unit_pair in units or [(text, pair)]:
                unit_texts.append(unit_text)
                unit_pairs.append(unit_pair)
                owner.append(i)
        per_unit = self._read(unit_texts, unit_pairs, settings, self.decision.but(article_bias=None))
        joined = [mean_log_probs(probs, np.asarray(owner), len(texts)) for probs in per_unit]
        return [apply_article_bias(probs, n_windows, self.decision.article_bias) for probs in joined]

    def _read(
        self, texts: list[str], pairs: list[str] | None, settings: list[tuple[float, str | None]], decision: Decision
    ) -> list[np.ndarray]:
        route = decision.route(texts, pairs)
        logits, windows = np.zeros((0, len(self.labels))), Windows.empty()
        if len(route.rows):  # else the gate or the TF-IDF model answered every text
            logits, windows = self.backend.window_logits(texts_of(texts, route.rows), route.take(pairs))
        n_windows = self.windows_per_text(texts, pairs, route.rows, windows) if decision.article_bias else None
        return [decision.decide(route, logits, windows, [t], how, n_windows)[0] for t, how in settings]

    def windows_per_text(
        self, texts: list[str], pairs: list[str] | None, read: np.ndarray | None = None, windows: Windows | None = None
    ) -> np.ndarray:
        """How many windows the model reads of each text; `read` texts' `windows` are known already."""
        counts = np.zeros(len(texts), dtype=np.int64)
        if read is not None and windows is not None:
            counts[read] = windows_per_text(windows, len(read))
        rest = np.setdiff1d(np.arange(len(texts)), read if read is not None else [])
        if len(rest):
            others = self.backend.windows(texts_of(texts, rest), [pairs[i] for i in rest] if pairs else None)
            counts[rest] = windows_per_text(others, len(rest))
        return counts


def texts_of(texts: list[str], rows: np.ndarray) -> list[str]:
    return [texts[i] for i in rows]

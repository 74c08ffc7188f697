"""Which unlabelled articles to label next: uncertainty of the model's probabilities, and diversity.

`margin` ranks by how close the two most likely labels are, `entropy` by the entropy of the
probabilities (a multi-label model: the mean binary entropy of its labels). `diverse` takes the
most uncertain `POOL_FACTOR × n` and picks `n` of them by k-centre (farthest first) over article
embeddings, counting the articles already labelled as centres (the core-set pick of Sener and
Savarese, 2018), so a batch is not many copies of one story.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pipeline.core.errors import PipelineError

STRATEGIES = ("margin", "entropy", "diverse", "random")
POOL_FACTOR = 5


def uncertainty(probs: np.ndarray, how: str, multi_label: bool = False) -> np.ndarray:
    """Higher is more uncertain: 1 - (p1 - p2) for `margin`, the entropy for `entropy` (and `diverse`)."""
    p = np.clip(probs, 1e-12, 1.0)
    if multi_label:
        q = np.clip(1.0 - probs, 1e-12, 1.0)
        return np.asarray(-(p * np.log(p) + q * np.log(q)).mean(axis=1))
    if how == "margin":
        top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.column_stack([np.zeros(len(p)), p])
        return np.asarray(1.0 - (top2[:, 1] - top2[:, 0]))
    return np.asarray(-(p * np.log(p)).sum(axis=1))


def k_centre(vectors: np.ndarray, n: int, centres: np.ndarray | None = None) -> list[int]:
    """`n` rows of `vectors` picked farthest-first from `centres` (rows of known points) and each other;
    the first pick, with no centres, is row 0 (the most uncertain)."""
    if n <= 0 or not len(vectors):
        return []
    if centres is not None and len(centres):
        nearest = np.min(np.linalg.norm(vectors[:, None, :] - centres[None, :, :], axis=2), axis=1)
        picked: list[int] = []
    else:
        picked = [0]
        nearest = np.linalg.norm(vectors - vectors[0], axis=1)
    while len(picked) < min(n, len(vectors)):
        nearest[picked] = -1.0
        best = int(np.argmax(nearest))
        picked.append(best)
        nearest = np.minimum(nearest, np.linalg.norm(vectors - vectors[best], axis=1))
    return picked


def pick(
    probs: np.ndarray,
    strategy: str,
    n: int,
    rng: np.random.Generator,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
    labelled_vectors: np.ndarray | None = None,
    multi_label: bool = False,
) -> np.ndarray:
    """The rows of `probs` (unlabelled articles) to label next, best first. `embed(rows)` gives the
    article vectors that `diverse` needs; `labelled_vectors` are the articles labelled already."""
    if strategy not in STRATEGIES:
        raise PipelineError(f"unknown strategy {strategy!r} (choose one of {', '.join(STRATEGIES)})")
    n = min(n, len(probs))
    if strategy == "random":
        return rng.permutation(len(probs))[:n]
    order = np.argsort(-uncertainty(probs, strategy, multi_label), kind="stable")
    if strategy != "diverse":
        return order[:n]
    if embed is None:
        raise ValueError("diverse needs article embeddings")
    pool = order[: POOL_FACTOR * n]
    return pool[k_centre(embed(pool), n, labelled_vectors)]

"""Stage 5, predict: label articles (.txt files, folders, stdin, .jsonl) with a registered model.

The topic of each article, its stance toward its main targets (or the ones named), and with
claims the stance toward each claim; every model is read through the same predictor. Inputs are
read, scored and handed on a chunk at a time, and an input that cannot be read gets an `error`
while the others are scored. A multi-label
model gives every label at or above its threshold (`labels`), the most likely first.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.core import progress
from pipeline.core.errors import PipelineError
from pipeline.models.predictor import Predictor
from pipeline.text.articles import Article, BadInput, model_input
from pipeline.text.targets import main_targets
from pipeline.tracking.registry import load_registered

CHUNK_ARTICLES = 32  # articles read, scored and written at a time: memory does not grow with the inputs


def predict(articles: list[Article], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """`predict_stream` over a list of articles, as a list."""
    return list(predict_stream(articles, *args, **kwargs))


def predict_stream(
    inputs: Iterable[Article | BadInput],
    model_ref: str | None,
    task: str,
    registered_model: str,
    device: str = "auto",
    precision: str = "auto",
    threads: int = 0,
    claims: list[str] | None = None,
    claim_model_ref: str | None = None,
    claim_registered_model: str = "stance",
    targets: list[str] | None = None,
    target_model_ref: str | None = None,
    target_registered_model: str = "target_stance",
    classifier: Predictor | None = None,
) -> Iterator[dict[str, Any]]:
    """The result of each input, in order, a chunk at a time: the topic (by `classifier` when given, a
    zero-shot one say), the stance toward the article's main targets (or `targets`; [] for none), and with
    `claims` the claim-stance label of every (claim, article). An input that could not be read gives
    {source, error}; the others are scored."""
    clf = classifier or load_registered(model_ref, registered_model, device, precision, threads)[0]
    stance = load_registered(claim_model_ref, claim_registered_model, device, precision, threads)[0] if claims else None
    target_clf = None
    if targets is None or targets:
        try:
            target_clf, _ = load_registered(target_model_ref, target_registered_model, device, precision, threads)
        except PipelineError:
            if targets is not None or target_model_ref is not None:
                raise
            # topic alone still answers; the user is told how to get stance too
            print(f"note: no {target_registered_model} model, so no stance; run `make train`", file=sys.stderr)
    items = iter(inputs)
    while chunk := list(itertools.islice(items, CHUNK_ARTICLES)):
        articles = [item for item in chunk if isinstance(item, Article)]
        scored_chunk = iter(_score_chunk(articles, clf, task, stance, claims, target_clf, targets))
        for item in chunk:
            yield next(scored_chunk) if isinstance(item, Article) else {"source": item.source, "error": item.reason}
        progress.advance(len(chunk))


def _score_chunk(
    articles: list[Article],
    clf: Predictor,
    task: str,
    stance: Predictor | None,
    claims: list[str] | None,
    target_clf: Predictor | None,
    targets: list[str] | None,
) -> list[dict[str, Any]]:
    if not articles:
        return []
    results: list[dict[str, Any]] = []
    for article, result in zip(articles, score_articles(clf, articles), strict=True):
        truncated = {"truncated_at_chars": article.truncated_at} if article.truncated_at else {}
        results.append({"source": article.source, "metadata": article.metadata, **truncated, task: result})
    if stance is not None and claims:
        texts = [model_input(a, stance.card.text_columns, None)[0] for a in articles]
        for result, per_claim in zip(results, score_pairs(stance, texts, [claims] * len(texts)), strict=True):
            result["claims"] = [{"claim": c, **s} for c, s in zip(claims, per_claim, strict=True)]
    if target_clf is not None:
        texts = [model_input(a, target_clf.card.text_columns, None)[0] for a in articles]
        per_article = [targets or main_targets(text) for text in texts]
        for result, names, per_target in zip(
            results, per_article, score_pairs(target_clf, texts, per_article), strict=True
        ):
            result["stance"] = [{"target": t, **s} for t, s in zip(names, per_target, strict=True)]
    return results


def score_articles(clf: Predictor, articles: list[Article]) -> list[dict[str, Any]]:
    """{label, score, scores} (and a multi-label model's `labels`) of each article, read as the model was trained."""
    inputs = [model_input(a, clf.card.text_columns, clf.card.pair_column) for a in articles]
    pairs = [p or "" for _, p in inputs] if clf.card.pair_column else None
    probs = clf.predict_proba([t for t, _ in inputs], pairs)
    chosen = clf.decision.chosen(probs) if clf.card.multi_label else [None] * len(probs)
    return [scored(clf.labels, row, row_chosen) for row, row_chosen in zip(probs, chosen, strict=True)]


def scored(labels: list[str], probs: Any, chosen: Any = None) -> dict[str, Any]:
    """{label, score, scores} of one row of class probabilities; with a multi-label model's `chosen`
    (0/1 a label), `labels` too: [{label, score}] of every chosen label, the most likely first."""
    scores = {label: round(float(p), 6) for label, p in zip(labels, probs, strict=True)}
    best = max(scores, key=scores.__getitem__)
    out: dict[str, Any] = {"label": best, "score": scores[best]}
    if chosen is not None:
        picked = sorted((label for label, c in zip(labels, chosen, strict=True) if c), key=lambda x: -scores[x])
        out["labels"] = [{"label": label, "score": scores[label]} for label in picked]
    return out | {"scores": scores}


def score_pairs(clf: Predictor, texts: list[str], pairs: list[list[str]]) -> list[list[dict[str, Any]]]:
    """{label, score, scores} for every (pair, text), grouped by text; one batched model call."""
    flat_texts = [text for text, ps in zip(texts, pairs, strict=True) for _ in ps]
    flat_pairs = [p for ps in pairs for p in ps]
    probs = clf.predict_proba(flat_texts, flat_pairs)
    out, row = [], 0
    for ps in pairs:
        out.append([scored(clf.labels, probs[row + j]) for j in range(len(ps))])
        row += len(ps)
    return out


def render_table(results: list[dict[str, Any]], task: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{task} predictions")
    for column in ("source", task, "probability", "runner-up"):
        table.add_column(column, justify="right" if column == "probability" else "left")
    for r in results:
        ranked = sorted(r[task]["scores"].items(), key=lambda kv: kv[1], reverse=True)
        runner = f"{ranked[1][0]} ({ranked[1][1]:.3f})" if len(ranked) > 1 else ""
        if "labels" in r[task]:  # multi-label: every chosen label, with its probability
            chosen = ", ".join(f"{x['label']} ({x['score']:.3f})" for x in r[task]["labels"])
            table.add_row(r["source"], chosen, f"{ranked[0][1]:.3f}", runner)
            continue
        table.add_row(r["source"], ranked[0][0], f"{ranked[0][1]:.3f}", runner)
    Console().print(table)
    _pair_table(results, "stance", "target", "stance toward the article's targets")
    _pair_table(results, "claims", "claim", "stance toward each claim")


def _pair_table(results: list[dict[str, Any]], key: str, pair_field: str, title: str) -> None:
    """One row per (article, target or claim) with its stance label and probability."""
    from rich.console import Console
    from rich.table import Table

    if not any(r.get(key) for r in results):
        return
    table = Table(title=title)
    for column in ("source", pair_field, "stance", "probability"):
        table.add_column(column, justify="right" if column == "probability" else "left")
    for r in results:
        for scored in r.get(key, []):
            table.add_row(r["source"], scored[pair_field], scored["label"], f"{scored['score']:.3f}")
    Console().print(table)

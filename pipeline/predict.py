"""Stage 5, predict: label articles (.txt files, folders, stdin, .jsonl) with a registered model.

A .txt article may start with `key value` header lines (`date 2022-01-02`): they become
metadata. A `title` header also leads the text when the model was trained on title + text.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import PipelineError
from pipeline.io import normalise_text, read_text_file
from pipeline.targets import main_targets

if TYPE_CHECKING:
    from pipeline.modeling import TextClassifier

# keys whose value is one token: the rest of such a line, if any, is already article text
# (the sample article starts " date 2022-01-02 Russian President ...")
ONE_TOKEN_KEYS = {"date", "published", "updated", "id", "url", "link", "lang", "language"}
LINE_KEYS = {
    "title",
    "headline",
    "author",
    "authors",
    "byline",
    "source",
    "publisher",
    "section",
    "category",
    "tags",
    "country",
}
HEADER_LINE = re.compile(r"^\s*([A-Za-z][A-Za-z_-]*)[ \t]*[ \t:][ \t]*(\S+)[ \t]*(.*?)\s*$")


@dataclass
class Article:
    source: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def parse_article(raw: str, source: str) -> Article:
    """Split leading `key value` header lines from the body."""
    lines = raw.splitlines()
    metadata: dict[str, Any] = {}
    body_start = 0
    for i, line in enumerate(lines):
        if not line.strip():
            body_start = i + 1
            continue
        match = HEADER_LINE.match(line)
        key = match.group(1).lower() if match else ""
        if match and key in ONE_TOKEN_KEYS:
            metadata[key] = match.group(2)
            body_start = i + 1
            if match.group(3):
                lines[i] = match.group(3)
                body_start = i
                break
            continue
        if match and key in LINE_KEYS and len(line) <= 300:
            metadata[key] = f"{match.group(2)} {match.group(3)}".strip()
            body_start = i + 1
            continue
        break
    text = normalise_text("\n".join(lines[body_start:]))
    if not text:
        raise PipelineError(f"{source}: no article text")
    return Article(source, text, metadata)


def model_input(article: Article, text_columns: list[str], pair_column: str | None) -> tuple[str, str | None]:
    """The (text, pair) a model sees, shaped as it was trained: a title leads the text when
    the model was trained on title + text; a pair column comes from the article's metadata."""
    title = article.metadata.get("title") or article.metadata.get("headline")
    text = article.text
    if title and "title" in text_columns:
        text = normalise_text(f"{title}\n\n{text}")
    pair = str(article.metadata.get(pair_column) or "") if pair_column else None
    return text, pair


def read_jsonl(path: Path) -> list[Article]:
    articles = []
    raw = read_text_file(path)
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise PipelineError(f"{path}:{n}: not a JSON object") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise PipelineError(f"{path}:{n}: no string field 'text'")
        text = normalise_text(obj.pop("text"))
        if not text:
            raise PipelineError(f"{path}:{n}: empty 'text'")
        articles.append(Article(f"{path}:{n}", text, obj))
    if not articles:
        raise PipelineError(f"no articles in {path}")
    return articles


def read_inputs(paths: list[str]) -> list[Article]:
    articles: list[Article] = []
    for name in paths:
        if name == "-":
            articles.append(parse_article(sys.stdin.read(), "<stdin>"))
            continue
        path = Path(name)
        if path.is_dir():
            files = sorted(path.glob("*.txt"))
            if not files:
                raise PipelineError(f"no .txt files in folder {path}")
            articles += [parse_article(read_text_file(f), str(f)) for f in files]
        elif path.name.lower().endswith(".jsonl"):
            articles += read_jsonl(path)
        else:
            articles.append(parse_article(read_text_file(path), str(path)))
    if not articles:
        raise PipelineError("no input given: pass .txt files, folders, .jsonl files or - for stdin")
    return articles


def given_names(values: list[str] | None, option: str) -> list[str]:
    """The claims or targets given on the command line, stripped; a blank one is an error, not
    silently dropped (it would score nothing, or fall back to the automatic targets)."""
    names = [v.strip() for v in values or []]
    if any(not name for name in names):
        raise PipelineError(f"{option} is empty: give the text to score the article's stance toward")
    return names


def predict(
    articles: list[Article],
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
    classifier: TextClassifier | None = None,
) -> list[dict[str, Any]]:
    """Topic of each article (by `classifier` when given, a zero-shot one say), its stance toward its
    main targets (or `targets`; [] for none), and with `claims` the claim-stance label of every (claim, article)."""
    from pipeline import tracking

    clf = classifier or tracking.load_classifier(model_ref, registered_model, device, precision, threads)[0]
    inputs = [model_input(a, clf.meta.get("text_columns", []), clf.meta.get("pair_column")) for a in articles]
    pairs = [p or "" for _, p in inputs] if clf.meta.get("pair_column") else None
    probs = clf.predict_proba([t for t, _ in inputs], pairs)
    results: list[dict[str, Any]] = []
    for article, row in zip(articles, probs, strict=True):
        results.append({"source": article.source, "metadata": article.metadata, task: scored(clf.labels, row)})
    if claims:
        stance, _ = tracking.load_classifier(claim_model_ref, claim_registered_model, device, precision, threads)
        texts = [model_input(a, stance.meta.get("text_columns", []), None)[0] for a in articles]
        for result, per_claim in zip(results, score_pairs(stance, texts, [claims] * len(texts)), strict=True):
            result["claims"] = [{"claim": c, **s} for c, s in zip(claims, per_claim, strict=True)]
    if targets is None or targets:
        try:
            target_clf, _ = tracking.load_classifier(
                target_model_ref, target_registered_model, device, precision, threads
            )
        except PipelineError:
            if targets is not None or target_model_ref is not None:
                raise
            # topic alone still answers; the user is told how to get stance too
            print(f"note: no {target_registered_model} model, so no stance; run `make train`", file=sys.stderr)
            return results
        texts = [model_input(a, target_clf.meta.get("text_columns", []), None)[0] for a in articles]
        per_article = [targets or main_targets(text) for text in texts]
        for result, names, per_target in zip(
            results, per_article, score_pairs(target_clf, texts, per_article), strict=True
        ):
            result["stance"] = [{"target": t, **s} for t, s in zip(names, per_target, strict=True)]
    return results


def scored(labels: list[str], probs: Any) -> dict[str, Any]:
    """{label, score, scores} of one row of class probabilities."""
    scores = {label: round(float(p), 6) for label, p in zip(labels, probs, strict=True)}
    best = max(scores, key=scores.__getitem__)
    return {"label": best, "score": scores[best], "scores": scores}


def score_pairs(clf: TextClassifier, texts: list[str], pairs: list[list[str]]) -> list[list[dict[str, Any]]]:
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

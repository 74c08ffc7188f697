"""Article files as a model reads them: `.txt` articles with `key value` header lines, folders, stdin, `.jsonl`.

A .txt article may start with `key value` header lines (`date 2022-01-02`): they become metadata.
A `title` header also leads the text when the model was trained on title + text.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.core.io import normalise_text, read_text_file

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

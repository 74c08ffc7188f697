"""Article files as a model reads them: `.txt` articles with `key value` header lines, folders, stdin, `.jsonl`.

Inputs are read one at a time (a folder of millions of files, a JSONL stream) and an input that
cannot be read is reported, not fatal: predict scores the rest.

A .txt article may start with `key value` header lines (`date 2022-01-02`): they become metadata.
A `title` header also leads the text when the model was trained on title + text.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.core.errors import PipelineError
from pipeline.core.io import check_readable_file, decode_text, normalise_text, os_reason, read_text_prefix

# an article is read up to here: every window a model reads and the TF-IDF features of any news
# article fit, and a 50 MB file costs no more memory than a long article
MAX_ARTICLE_CHARS = 200_000
STDIN_FORMATS = ("auto", "text", "jsonl")

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
    truncated_at: int | None = None  # characters read, where the input was longer


@dataclass
class BadInput:
    """An input that could not be read as an article, and why (a full one-line message)."""

    source: str
    reason: str


def parse_article(raw: str, source: str) -> Article:
    """Split leading `key value` header lines from the body."""
    lines = raw.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # not splitlines: \x1c-\x1e are text
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
            metadata[key] = line[match.start(2) :].strip()
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


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def iter_inputs(
    paths: list[str], stdin_format: str = "auto", stdin: BinaryIO | None = None, note: Callable[[str], None] = _note
) -> Iterator[Article | BadInput]:
    """Every article of `paths` (.txt files, folders of .txt, .jsonl files, `-` for stdin), read one at a
    time; an input that cannot be read is yielded as a BadInput and the rest go on. Stdin is JSONL when
    `stdin_format` says so, or (auto) when its first line is a JSON object; else one article."""
    if not paths:
        raise PipelineError("no input given: pass .txt files, folders, .jsonl files or - for stdin")
    if stdin_format not in STDIN_FORMATS:
        raise PipelineError(f"--stdin {stdin_format!r}: choose one of {', '.join(STDIN_FORMATS)}")
    for name in paths:
        if name == "-":
            yield from _stdin_articles(stdin or sys.stdin.buffer, stdin_format, note)
            continue
        path = Path(name)
        if path.is_dir():
            files = sorted(path.glob("*.txt"))
            if not files:
                yield BadInput(str(path), f"no .txt files in folder {path}")
            for file in files:
                yield _text_article(file)
        elif path.name.lower().endswith(".jsonl"):
            yield from _jsonl_articles(path)
        else:
            yield _text_article(path)


def unless_all_bad(items: Iterator[Article | BadInput]) -> Iterator[Article | BadInput]:
    """`items`, read ahead by two: one input alone that cannot be read is an error at once, before
    any model is loaded."""
    ahead = list(itertools.islice(items, 2))
    if len(ahead) == 1 and isinstance(ahead[0], BadInput):
        raise PipelineError(ahead[0].reason)
    return itertools.chain(ahead, items)


def read_inputs(paths: list[str]) -> list[Article]:
    """Every article of `paths`; the first input that cannot be read is an error."""
    articles = []
    for item in iter_inputs(paths):
        if isinstance(item, BadInput):
            raise PipelineError(item.reason)
        articles.append(item)
    return articles


def _text_article(path: Path) -> Article | BadInput:
    try:
        raw, truncated = read_text_prefix(path, MAX_ARTICLE_CHARS)
        return _truncated(parse_article(raw, str(path)), truncated)
    except PipelineError as err:
        return BadInput(str(path), str(err))


def _truncated(article: Article, truncated: bool) -> Article:
    if truncated:
        article.truncated_at = MAX_ARTICLE_CHARS
    return article


def _jsonl_articles(path: Path) -> Iterator[Article | BadInput]:
    try:
        check_readable_file(path)
        with path.open("rb") as f:
            decode_text(f.read(8192), str(path), final=False)  # a UTF-16 or binary file is one error, not one a line
        lines = path.open("rb")
    except PipelineError as err:
        yield BadInput(str(path), str(err))
        return
    except OSError as err:
        yield BadInput(str(path), f"cannot read {path}: {os_reason(err)}")
        return
    with lines:
        yield from _json_lines(lines, str(path))


def _json_lines(lines: Iterable[bytes], source: str) -> Iterator[Article | BadInput]:
    seen = False
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        seen = True
        where = f"{source}:{n}"
        try:
            yield json_article(decode_text(raw, where), where)
        except PipelineError as err:
            yield BadInput(where, str(err))
    if not seen:
        yield BadInput(source, f"no articles in {source}")


def json_article(line: str, source: str) -> Article:
    """One JSONL line as an article: its `text`, the other fields as metadata."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        raise PipelineError(f"{source}: not a JSON object") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise PipelineError(f"{source}: no string field 'text'")
    raw = obj.pop("text")
    text = normalise_text(raw[:MAX_ARTICLE_CHARS])
    if not text:
        raise PipelineError(f"{source}: empty 'text'")
    return _truncated(Article(source, text, obj), len(raw) > MAX_ARTICLE_CHARS)


def _stdin_articles(stdin: BinaryIO, stdin_format: str, note: Callable[[str], None]) -> Iterator[Article | BadInput]:
    limit = 4 * MAX_ARTICLE_CHARS + 4
    first = b""
    while len(first) < limit:  # the first line that is not blank tells JSONL from one article
        line = stdin.readline(limit - len(first))
        first += line
        if not line or line.strip():
            break
    if stdin_format == "jsonl" or (stdin_format == "auto" and _is_json_object(first)):
        for n, item in enumerate(_json_lines(itertools.chain([first], stdin), "<stdin>")):
            if n == 1 and stdin_format == "auto":  # several lines that could have been one article's
                note("stdin read as JSONL, one article a line (--stdin text reads it as one article)")
            yield item
        return
    data = first + stdin.read(max(0, limit - len(first)))
    more = stdin.read(1) != b""
    try:
        text = decode_text(data, "<stdin>", final=not more)
        yield _truncated(parse_article(text[:MAX_ARTICLE_CHARS], "<stdin>"), more or len(text) > MAX_ARTICLE_CHARS)
    except PipelineError as err:
        yield BadInput("<stdin>", str(err))


def _is_json_object(line: bytes) -> bool:
    if not line.strip().startswith(b"{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        return False


def given_names(values: list[str] | None, option: str) -> list[str]:
    """The claims or targets given on the command line, stripped; a blank one is an error, not
    silently dropped (it would score nothing, or fall back to the automatic targets)."""
    names = [v.strip() for v in values or []]
    if any(not name for name in names):
        raise PipelineError(f"{option} is empty: give the text to score the article's stance toward")
    return names

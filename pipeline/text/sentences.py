"""Sentences with their character spans: the units an explanation weighs and removes.

A sentence ends at `.`, `!` or `?` (and a closing quote or bracket) before white space, or at a
line break; an abbreviation such as "Mr." or "U.S.", or a lower-case word or comma after the
stop, does not end one. Spans index the original
text, so an HTML page can highlight them and `without` / `only` rebuild the text around them.
Plain Python, so the ONNX predict path stays quick to start.
"""

from __future__ import annotations

import re

BOUNDARY = re.compile(r"([.!?][\"'\u201d\u2019)\]]*)\s+|\n+")
# tokens that end in a full stop without ending a sentence
_ABBREVIATION_TEXT = """mr mrs ms dr prof sr jr st mt gen gov sen rep col lt sgt capt cmdr rev inc ltd co corp
    plc vs etc no jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k u.n e.g i.e"""
ABBREVIATIONS = frozenset(_ABBREVIATION_TEXT.split())


def _ends_sentence(text: str, end: int, next_start: int) -> bool:
    """Whether the boundary after text[:end] is a real one: not "Mr." or "U.S.", and not followed by a
    lower-case word or a comma (a quotation's end inside a sentence)."""
    following = text[next_start : next_start + 1]
    if following and (following.islower() or following in ",;:"):
        return False
    head = text[:end].rstrip("\"'\u201d\u2019)] \t")
    if not head.endswith("."):
        return True
    word = head[:-1].rsplit(None, 1)[-1].lower() if head[:-1].split() else ""
    return not (word in ABBREVIATIONS or (len(word) == 1 and word.isalpha()))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each non-blank sentence of `text`, in order, white space trimmed."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in BOUNDARY.finditer(text):
        end = match.end(1) if match.group(1) else match.start()
        if "\n" not in match.group(0) and not _ends_sentence(text, end, match.end()):
            continue
        spans.append((start, end))
        start = match.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            out.append((a + lead, a + len(piece.rstrip())))
    return out


def without(text: str, spans: list[tuple[int, int]], drop: set[int]) -> str:
    """`text` with the sentences at positions `drop` removed, the others joined by a space."""
    return " ".join(text[a:b] for i, (a, b) in enumerate(spans) if i not in drop)


def only(text: str, spans: list[tuple[int, int]], keep: set[int]) -> str:
    """The sentences at positions `keep`, in article order."""
    return " ".join(text[a:b] for i, (a, b) in enumerate(spans) if i in keep)

"""Pair tasks, how a text is read: the text's sentences that share most words with the pair first.

A claim-stance window on a CPU holds the claim and only the start of the body (160 tokens), and
FNC-1 bodies run to ~450. The sentences that decide the stance (the ones that repeat, confirm or deny the
claim) are often further down. Ordering the body's sentences by how many of the claim's content
words they share puts that evidence inside the window the model reads; ties and sentences that
share nothing keep their order in the article. Plain Python (no sklearn or torch), so predict's
ONNX path stays quick to start.
"""

from __future__ import annotations

import re

SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
WORD = re.compile(r"[a-z0-9]+")
# the commonest English function words: sharing them says nothing about the claim
_STOP_TEXT = """a about after all also an and any are as at be been but by can could did do does for from had
    has have he her his how i if in into is it its may more most new no not now of on one or our out
    over said says she so some than that the their them then there these they this to up was we were
    what when which who will with would you"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in WORD.findall(text.lower()) if w not in STOP_WORDS and len(w) > 1}


def evidence_first(text: str, pair: str) -> str:
    """`text` with its sentences reordered: most words shared with `pair` first (stable)."""
    claim = content_words(pair)
    sentences = [s.strip() for s in SENTENCE_END.split(text) if s.strip()]
    if not claim or len(sentences) < 2:
        return text
    shared = [len(claim & content_words(s)) for s in sentences]
    order = sorted(range(len(sentences)), key=lambda i: -shared[i])
    return " ".join(sentences[i] for i in order)

"""Predict helper: the article's main targets, the named entities it mentions most.

No NER model installs offline, so this counts capitalised names: runs of capitalised words,
minus sentence-initial function words and titles. A name's mentions include the mentions of
its last word ("Vladimir Putin" ... "Putin"), and a run's leading title or demonym is dropped
("Russian President Vladimir Putin" -> "Vladimir Putin").
"""

from __future__ import annotations

import re
from collections import Counter

from pipeline.text.sentences import sentence_spans

NAME_RUN = re.compile(r"\b[A-Z][\w'’-]*(?:[ \t]+(?:of[ \t]+|the[ \t]+)?[A-Z][\w'’-]*)*")
LOWER_SUFFIX = re.compile(r"(\w)-(?=[a-z])")  # "Moscow-based" -> "Moscow based"
POSSESSIVE = re.compile(r"['’]s\b")
# capitalised words that start sentences or precede names without being targets themselves
NOT_NAMES = set(
    """
    A About After Also An And As At Because But By During For From He Her His However I If In It Its
    Meanwhile Mr Mrs Ms Dr No Not Now On One Our She So Some That The Their There These They This Those
    Thursday Friday Saturday Sunday Monday Tuesday Wednesday To Under We What When Where While Who Why
    With Yet You January February March April May June July August September October November December
    President Prime Minister Secretary Chancellor King Queen Prince Senator Governor General Chief
    Foreign Defence Defense Spokesman Spokeswoman Minister's Sir Lord Lady Judge Officials Official
    Russian Turkish American British French German Chinese Ukrainian Armenian Syrian Libyan European
    Israeli Palestinian Iranian Indian Japanese Korean Italian Spanish Polish Soviet Western Eastern
    """.split()  # noqa: SIM905 -- a word list reads better as text
)


def _clean(run: str) -> str:
    words = run.split()
    while words and words[0] in NOT_NAMES:
        words = words[1:]
    while words and words[-1] in {"of", "the"}:
        words = words[:-1]
    return " ".join(words)


def main_targets(text: str, limit: int = 5) -> list[str]:
    """The most mentioned names in `text`, most mentioned first, at most `limit`."""
    text = POSSESSIVE.sub("", LOWER_SUFFIX.sub(r"\1 ", text))
    runs = [_clean(m.group(0)) for m in NAME_RUN.finditer(text)]
    runs = [r for r in runs if r and len(r) > 1 and not r.isdigit()]
    by_last: Counter[str] = Counter(r.split()[-1] for r in runs)
    full: dict[str, Counter[str]] = {}
    for r in runs:
        full.setdefault(r.split()[-1], Counter())[r] += 1
    ranked = sorted(by_last.items(), key=lambda kv: (-kv[1], kv[0]))
    names: list[str] = []
    for last, count in ranked:
        if count < 2 and names:  # a name mentioned once is rarely what the article is about
            break
        names.append(full[last].most_common(1)[0][0])
        if len(names) == limit:
            break
    return names


def mention_form(sentence: str, name: str) -> str | None:
    """The form of `name` that `sentence` mentions (the full name, else its last word), or None."""
    if not name.split():
        return None
    for form in dict.fromkeys([name, name.split()[-1]]):
        if re.search(rf"(?<!\w){re.escape(form)}(?!\w)", sentence):
            return form
    return None


def mention_sentences(text: str, name: str) -> list[tuple[str, str]]:
    """Each sentence of `text` that mentions `name`, in order, with the form it mentions (see `mention_form`)."""
    out = []
    for a, b in sentence_spans(text):
        sentence = text[a:b]
        if (form := mention_form(sentence, name)) is not None:
            out.append((sentence, form))
    return out

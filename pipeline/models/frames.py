"""Tables of articles in, a table of labels out: what the pyfunc model, `pipeline batch` and Spark share.

A row whose text is missing, not a string or empty gets an `error` and a null label instead of
failing the whole table: on an archive of millions of rows, one bad row must not stop a job.
A multi-label model adds `labels`: every chosen label, the most likely first, joined by LABELS_SEP.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.io import normalise_text
from pipeline.models.predictor import Predictor
from pipeline.text.articles import Article, model_input

LABELS_SEP = "|"


def output_schema(labels: list[str], multi_label: bool = False) -> str:
    """The Spark DDL of `score_frame`'s output for these labels (spark_udf's result type)."""
    probs = ", ".join(f"`prob_{label}` double" for label in labels)
    return f"label string, {'labels string, ' if multi_label else ''}score double, {probs}, error string"


def row_error(text: Any) -> str | None:
    """Why a row's text cannot be labelled, or None."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return "no text"
    if not isinstance(text, str):
        return f"text is a {type(text).__name__}, not a string"
    if not normalise_text(text):
        return "empty text"
    return None


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def score_frame(predictor: Predictor, frame: pd.DataFrame, pair: str | None = None) -> pd.DataFrame:
    """label, score, prob_<label> for every row of `frame` (a `text` column, optionally `title` and `pair`),
    shaped as `pipeline predict` shapes an article: the title leads the text or is the pair, as the model
    was trained. `pair` (a target or a claim) is the pair of every row; else a `pair` column, else the
    card's pair column (the title for topic) is read from the row."""
    labels = predictor.labels
    n = len(frame)
    texts = frame["text"].tolist() if "text" in frame else [None] * n
    errors = [row_error(t) for t in texts]
    ok = [i for i, e in enumerate(errors) if e is None]
    columns = [c for c in frame.columns if c not in ("text", "pair")]
    inputs = []
    for i in ok:
        metadata = {c: v for c in columns if (v := _string(frame[c].iat[i])) is not None}
        article = Article(str(i), normalise_text(str(texts[i])), metadata)
        text, row_pair = model_input(article, predictor.card.text_columns, predictor.card.pair_column)
        if pair is not None:
            row_pair = pair
        elif "pair" in frame:  # an explicit pair column wins over the one read from the row
            row_pair = _string(frame["pair"].iat[i]) or ""
        inputs.append((text, row_pair))
    probs = np.full((n, len(labels)), np.nan)
    if ok:
        pairs = [p or "" for _, p in inputs] if predictor.card.pair_column or pair is not None else None
        probs[ok] = predictor.predict_proba([t for t, _ in inputs], pairs)
    best = [int(probs[i].argmax()) if e is None else -1 for i, e in enumerate(errors)]
    out = pd.DataFrame({"label": pd.Series([labels[b] if b >= 0 else None for b in best], dtype="object")})
    if predictor.card.multi_label:
        out["labels"] = pd.Series([None] * n, dtype="object")
        if ok:
            chosen = predictor.decision.chosen(probs[ok])
            out.loc[ok, "labels"] = [
                LABELS_SEP.join(sorted((labels[j] for j in np.flatnonzero(c)), key=lambda x: -row[labels.index(x)]))
                for c, row in zip(chosen, probs[ok], strict=True)
            ]
    out["score"] = [float(probs[i, b]) if b >= 0 else np.nan for i, b in enumerate(best)]
    for j, label in enumerate(labels):
        out[f"prob_{label}"] = probs[:, j]
    out["error"] = pd.Series(errors, dtype="object")
    return out

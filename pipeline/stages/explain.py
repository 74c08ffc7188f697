"""Stage, explain: which sentences of an article (and which TF-IDF terms) drove a label, and how faithful that is.

`explain_article` explains one article's topic, its stance toward a named target (`--target`) or
toward a claim (`--claim`), as JSON or an HTML page that highlights the sentences.
`evaluate_faithfulness` scores the explanations of test articles (comprehensiveness and
sufficiency against random sentences) as an MLflow run.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.config import Config
from pipeline.core.errors import PipelineError
from pipeline.core.io import write_text_atomic
from pipeline.core.labelled import EvalData, extra_test_data, sample_rows
from pipeline.models.card import STANCE_TASKS
from pipeline.models.explain import Explanation, Faithfulness, explain, explainable_rows, faithfulness
from pipeline.models.predictor import Predictor
from pipeline.text.articles import model_input, read_inputs
from pipeline.text.targets import main_targets
from pipeline.tracking import store
from pipeline.tracking.registry import load_registered


@dataclass
class ExplainedArticle:
    explanation: Explanation
    pair: str | None  # the target, claim or title the model read with the text
    stance: bool  # the pair is a target or claim the label is a stance toward
    text: str  # the text as the model read it, which the sentence offsets index
    model_uri: str
    seconds: float  # the explanation alone, the model loaded


def explainer(cfg: Config, model_ref: str | None, target: str | None, claim: str | None) -> tuple[Predictor, str]:
    """The model to explain: `model_ref`, else the champion of the task the question is about."""
    if target is not None and claim is not None:
        raise PipelineError("give --target or --claim, not both")
    name = cfg.mlflow.registered_model
    if model_ref is None and target is not None and cfg.task != "target_stance":
        name = "target_stance"
    elif model_ref is None and claim is not None and cfg.task != "stance":
        name = "stance"
    r = cfg.runtime
    clf, uri = load_registered(model_ref, name, r.device, r.precision, r.threads, r.eval_batch_size)
    if (target is not None or claim is not None) and clf.card.task not in STANCE_TASKS:
        raise PipelineError(f"{uri} is not a stance model: --target and --claim need one")
    return clf, uri


def pair_of(clf: Predictor, article_pair: str | None, text: str, target: str | None, claim: str | None) -> str | None:
    """The pair the explained model reads: the target or claim given; a target-stance model's main
    target by default (as predict reads it); else the article's own pair (a title)."""
    given = target if target is not None else claim
    if given is not None:
        if not given.strip():
            raise PipelineError("--target and --claim need a non-blank value")
        return given
    if clf.card.task == "target_stance":
        names = main_targets(text)
        if not names:
            raise PipelineError("no named target found in the article: give --target NAME")
        return names[0]
    if clf.card.task == "stance":
        raise PipelineError("a claim-stance model explains a stance toward a claim: give --claim TEXT")
    return article_pair if clf.card.pair_column else None


def explain_article(
    cfg: Config,
    path: str,
    model_ref: str | None = None,
    label: str | None = None,
    target: str | None = None,
    claim: str | None = None,
) -> ExplainedArticle:
    articles = read_inputs([path])
    if len(articles) != 1:
        raise PipelineError(f"{path}: explain reads one article, this holds {len(articles)}")
    clf, uri = explainer(cfg, model_ref, target, claim)
    text, article_pair = model_input(articles[0], clf.card.text_columns, clf.card.pair_column)
    pair = pair_of(clf, article_pair, text, target, claim)
    start = time.perf_counter()
    e = explain(clf, text, pair, label)
    return ExplainedArticle(e, pair, clf.card.task in STANCE_TASKS, text, uri, time.perf_counter() - start)


def explanation_html(e: Explanation, text: str, title: str) -> str:
    """A page with the article, each sentence shaded by its weight (green: for the label, red: against)."""
    scale = max((abs(s.weight) for s in e.sentences), default=0.0) or 1.0
    parts, cursor = [], 0
    for s in e.sentences:
        parts.append(html.escape(text[cursor : s.start]))
        alpha = min(abs(s.weight) / scale, 1.0) * 0.6
        colour = f"rgba(40,160,60,{alpha:.2f})" if s.weight >= 0 else f"rgba(210,50,50,{alpha:.2f})"
        sentence = html.escape(text[s.start : s.end])
        parts.append(f'<span style="background:{colour}" title="weight {s.weight:+.4f}">{sentence}</span>')
        cursor = s.end
    parts.append(html.escape(text[cursor:]))
    body = "".join(parts).replace("\n", "<br>\n")
    terms = "".join(f"<tr><td>{html.escape(t['term'])}</td><td>{t['weight']:+.4f}</td></tr>" for t in e.terms)
    term_table = f"<h2>TF-IDF terms</h2><table>{terms}</table>" if terms else ""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f'<body style="font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.5">'
        f"<h1>{html.escape(e.label)} ({e.score:.3f})</h1>"
        f"<p>Shading: the drop in the label's log-probability when the sentence is removed "
        f"(green for the label, red against it).</p><p>{body}</p>{term_table}</body></html>\n"
    )


def write_html(e: Explanation, text: str, title: str, out: Path) -> None:
    write_text_atomic(out, explanation_html(e, text, title))


@dataclass
class FaithfulnessRun:
    result: Faithfulness
    model_uri: str
    data_name: str
    run_id: str
    seconds: float


def evaluate_faithfulness(
    cfg: Config, model_ref: str | None = None, n: int = 200, on: str | None = None, seed: int = 0
) -> FaithfulnessRun:
    """Comprehensiveness and sufficiency (k = 1, 3, top against random) on `n` test articles, logged."""
    import mlflow

    from pipeline.stages.evaluate import prepared_test_data

    if n < 1:
        raise PipelineError(f"--n must be at least 1 (got {n})")
    data: EvalData = extra_test_data(cfg, on)[0] if on is not None else prepared_test_data(cfg)
    r = cfg.runtime
    clf, uri = load_registered(model_ref, cfg.mlflow.registered_model, r.device, r.precision, r.threads)
    if (data.pairs is None) != (clf.card.pair_column is None):
        raise PipelineError(f"{uri} and {data.name} do not match: one reads pairs, the other does not")
    strata = np.unique(data.labels, return_inverse=True)[1]  # a sample with the test split's label mix
    rows = sample_rows(strata, min(n, len(data.texts)), seed)
    texts = [data.texts[i] for i in rows]
    pairs = [data.pairs[i] for i in rows] if data.pairs is not None else None
    explainable_rows(texts)  # a set of one-sentence texts fails before a run is opened
    store.use_experiment(cfg.mlflow.experiment)
    with mlflow.start_run(run_name=f"explain-faithfulness-{data.name}") as run:
        mlflow.set_tags({"stage": "explain", "task": cfg.task, "model_uri": uri, "eval_data": data.source})
        store.log_config(cfg)
        mlflow.log_params({"n_requested": n, "seed": seed, "method": "sentence occlusion"})
        start = time.perf_counter()
        result = faithfulness(clf, texts, pairs, seed=seed)
        seconds = time.perf_counter() - start
        metrics = {"n": float(result.n), "seconds": seconds}
        for kind, values in (("comprehensiveness", result.comprehensiveness), ("sufficiency", result.sufficiency)):
            metrics |= {f"{kind}_{key}": value for key, value in values.items()}
        mlflow.log_metrics(metrics)
        mlflow.log_dict(result.as_json(), "faithfulness.json")
    return FaithfulnessRun(result, uri, data.name, run.info.run_id, seconds)

"""Train stage, after the epochs: the decision fitted on validation (temperature, TF-IDF blend, class offsets;
article offsets on a labelled set of articles; a multi-label task's thresholds), written to the model card,
then the test split and the extra test sets scored once with it. Everything is logged through a
`TolerantLog`: a tracking store that fails stops the logging, never these steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np

from pipeline.core.config import Config
from pipeline.core.errors import PipelineError
from pipeline.core.labelled import extra_test_data, label_indices
from pipeline.core.metrics import compute_metrics, fit_class_bias, fit_temperature, fit_thresholds
from pipeline.models.card import read_card, write_card
from pipeline.models.decision import COMBINE_METHODS, Decision
from pipeline.models.loading import load_torch
from pipeline.models.predictor import Predictor
from pipeline.models.tfidf import TfidfModel, fit_stack, fit_tfidf, log_clipped, tfidf_texts
from pipeline.stages.optimise import Progress, Session, Setup
from pipeline.stages.train_data import TrainingData
from pipeline.tracking.log import log_metrics, log_mistakes
from pipeline.tracking.store import TolerantLog


@dataclass
class Fitted:
    model: Predictor  # the best checkpoint with its fitted decision
    val_macro_f1: float  # with that decision: what the registry compares
    val_probs: np.ndarray


def fit_decision(
    cfg: Config, session: Session, data: TrainingData, setup: Setup, state: Progress, log: TolerantLog
) -> Fitted:
    """Fit, on validation, what turns the best checkpoint's logits into probabilities; save it in its card,
    which then says the training is complete."""
    logits, route, windows, y_val = state.best_val_logits, setup.val_route, setup.val_windows, data.ys["validation"]
    if logits is None:
        raise PipelineError("training produced no checkpoint")
    base = setup.decision
    # every combination is scored on validation so the configured choice can be checked
    for how in COMBINE_METHODS:
        probs = base.decide(route, logits, windows, [1.0], how)[0]
        log(mlflow.log_metric, f"val_macro_f1_{how}", compute_metrics(y_val, probs, data.labels)["macro_f1"])
    # temperature scaling on validation, stored with the model and applied wherever it predicts
    decision = base.but(temperature=fit_temperature(lambda t: base.decide(route, logits, windows, [t])[0], y_val))
    val_probs = decision.decide(route, logits, windows)[0]
    best_f1 = state.best_f1
    if cfg.model.tfidf_blend:
        decision = fit_blend(cfg, data, decision, val_probs, log)
        route = decision.route(data.texts["validation"], data.pairs["validation"])
        val_probs = decision.decide(route, logits, windows)[0]
        best_f1 = compute_metrics(y_val, val_probs, data.labels)["macro_f1"]
    if cfg.train.class_bias:
        decision = decision.but(class_bias=[float(b) for b in fit_class_bias(val_probs, y_val)])
        val_probs = decision.decide(route, logits, windows)[0]
        best_f1 = compute_metrics(y_val, val_probs, data.labels)["macro_f1"]
        biases = zip(data.labels, decision.class_bias or [], strict=True)
        log(mlflow.log_metrics, {f"class_bias_{c}": b for c, b in biases})
    if decision.multi_label:
        decision = decision.but(thresholds=fit_thresholds(val_probs, y_val, cfg.train.thresholds))
        best_f1 = compute_metrics(y_val, val_probs, data.labels, decision.thresholds)["macro_f1"]
        thresholds = np.asarray(decision.thresholds)
        log(
            mlflow.log_metrics, {"thresholds_mean": float(thresholds.mean()), "thresholds_min": float(thresholds.min())}
        )
    save_decision(data, decision, best_f1)
    model = load_torch(data.model_dir, str(session.device), session.precision, cfg.runtime.eval_batch_size)
    if cfg.train.article_bias_set:
        model.decision.article_bias = fit_article_bias(model, cfg, cfg.train.article_bias_set)
        save_decision(data, model.decision, best_f1)
        biases = zip(data.labels, model.decision.article_bias, strict=True)
        log(mlflow.log_metrics, {f"article_bias_{c}": b for c, b in biases})
    mark_complete(data)
    log(log_metrics, compute_metrics(y_val, val_probs, data.labels, decision.thresholds), "val")
    return Fitted(model, best_f1, val_probs)


def save_decision(data: TrainingData, decision: Decision, val_macro_f1: float) -> None:
    """The fitted decision into the best checkpoint's card (and its TF-IDF files beside it)."""
    decision.save(data.model_dir)
    card = read_card(data.model_dir)
    training = card.training.model_copy(update={"val_macro_f1": val_macro_f1})
    write_card(data.model_dir, card.model_copy(update={"decision": decision.to_card(), "training": training}))


def mark_complete(data: TrainingData) -> None:
    """The card says the folder is a finished model, once the last thing fitted is in it."""
    card = read_card(data.model_dir)
    write_card(
        data.model_dir, card.model_copy(update={"training": card.training.model_copy(update={"complete": True})})
    )


def fit_blend(cfg: Config, data: TrainingData, decision: Decision, val_probs: np.ndarray, log: TolerantLog) -> Decision:
    """Fit the TF-IDF model on train (C chosen on validation) and its stacking weights with the
    transformer's validation probabilities (on validation log loss); log how each does alone."""
    texts, pairs, ys, labels = data.texts, data.pairs, data.ys, data.labels
    train_texts, val_texts = (tfidf_texts(texts[s], pairs[s]) for s in ("train", "validation"))
    fitted = fit_tfidf(cfg.baseline, train_texts, ys["train"], val_texts, ys["validation"], labels, cfg.train.seed)
    tfidf = TfidfModel.from_fitted(fitted)
    log_val_tfidf, log_val_transformer = tfidf.log_proba(val_texts), log_clipped(val_probs)
    weights = fit_stack(log_val_transformer, log_val_tfidf, ys["validation"])
    log(
        mlflow.log_metrics,
        {
            "blend_transformer_weight": weights[0],
            "blend_tfidf_weight": weights[1],
            "blend_tfidf_c": fitted.c,
            "val_macro_f1_transformer": compute_metrics(ys["validation"], val_probs, labels)["macro_f1"],
            "val_macro_f1_tfidf": compute_metrics(ys["validation"], np.exp(log_val_tfidf), labels)["macro_f1"],
        },
    )
    return decision.but(tfidf=tfidf, blend=weights)


def fit_article_bias(model: Predictor, cfg: Config, set_name: str) -> list[float]:
    """Offsets for texts longer than one window, fitted for macro-F1 on the labelled articles of
    the extra test set `set_name` (its scores are then in-sample)."""
    [articles] = extra_test_data(cfg, set_name)
    rows = np.flatnonzero(model.windows_per_text(articles.texts, articles.pairs) > 1)
    if len(rows) == 0:
        raise PipelineError(f"train.article_bias_set {set_name!r} has no text longer than one window")
    long_ones = articles.subset(rows)
    probs = model.predict_proba(long_ones.texts, long_ones.pairs)
    return [float(b) for b in fit_class_bias(probs, label_indices(long_ones.labels, model.labels))]


def score_test(data: TrainingData, fitted: Fitted, best_val: dict[str, Any], log: TolerantLog) -> dict[str, Any]:
    """The test split, once, with the fitted decision (and without the temperature, for its ECE)."""
    model, y = fitted.model, data.ys["test"]
    uncalibrated, test = model.predict_proba_at(
        data.texts["test"], data.pairs["test"], [1.0, model.decision.temperature]
    )
    thresholds = model.decision.thresholds
    metrics = compute_metrics(y, test, data.labels, thresholds)
    metrics["ece_uncalibrated"] = compute_metrics(y, uncalibrated, data.labels, thresholds)["ece"]
    log(log_metrics, metrics, "test")
    log(log_mistakes, data.texts["test"], data.pairs["test"], y, test, data.labels, "test", thresholds, explainer=model)
    log(
        mlflow.log_metrics,
        {
            "temperature": model.decision.temperature,
            "val_ece_uncalibrated": best_val["ece"],
            "test_ece_uncalibrated": metrics["ece_uncalibrated"],
        },
    )
    return metrics


def score_extra_tests(cfg: Config, model: Predictor, log: TolerantLog) -> dict[str, dict[str, Any]]:
    """The config's extra test sets, with every window combination logged (one pass of the model each),
    so that article-level settings can be chosen on a dev set."""
    out = {}
    for extra in extra_test_data(cfg):
        y = label_indices(extra.labels, model.labels)
        by_combination = model.predict_proba_at(extra.texts, extra.pairs, combines=list(COMBINE_METHODS))
        for how, probs in zip(COMBINE_METHODS, by_combination, strict=True):
            scored = compute_metrics(y, probs, model.labels)
            log(mlflow.log_metric, f"test_{extra.name}_macro_f1_{how}", scored["macro_f1"])
            if how == model.decision.combine:
                out[extra.name] = scored
        log(log_metrics, out[extra.name], f"test_{extra.name}")
    return out

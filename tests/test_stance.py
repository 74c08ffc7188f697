"""Claim stance: joined tables, a group split, the relatedness gate, the FNC-1 score, two-stage training."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_stance_config

from pipeline.core.config import load_config
from pipeline.core.labelled import sample_rows
from pipeline.core.metrics import compute_metrics, fnc_relative_score
from pipeline.models.gate import RelatednessGate, combine_gate
from pipeline.models.loading import load_model
from pipeline.stages.prepare import load_prepared, prepare
from pipeline.stages.train import train

FNC = ["agree", "disagree", "discuss", "unrelated"]


def test_prepare_joins_bodies_and_keeps_headlines_and_bodies_out_of_validation(home, tiny_model_dir):
    cfg = load_config(make_stance_config(home, tiny_model_dir))
    prepared = prepare(cfg)
    dataset, card = load_prepared(cfg)
    assert prepared.card["dropped"]["crossing_groups"] > 0  # unrelated pairs across the split
    frames = {s: dataset[s].to_pandas() for s in ("train", "validation", "test")}
    assert (frames["train"]["text"] != "").all()
    # neither a headline nor a body of validation is seen in training
    assert not set(frames["train"]["pair"]) & set(frames["validation"]["pair"])
    assert not set(frames["train"]["text"]) & set(frames["validation"]["text"])
    # the test split is the test file, every row of it
    test_rows = pd.read_csv(cfg.data.test.source)
    assert len(frames["test"]) == len(test_rows)
    assert card["splits"]["validation"]["n"] > 0


def test_fnc_score_matches_the_official_definition():
    y = np.array([0, 1, 2, 3, 3])  # agree, disagree, discuss, unrelated, unrelated
    assert fnc_relative_score(y, y, FNC) == 100.0
    # every related pair called discuss, unrelated right: 0.25*5 + 0.75*1 of 0.25*5 + 0.75*3
    all_discuss = np.array([2, 2, 2, 3, 3])
    assert abs(fnc_relative_score(y, all_discuss, FNC) - 100 * 2.0 / 3.5) < 1e-9
    # relatedness wrong everywhere scores 0
    assert fnc_relative_score(y, np.array([3, 3, 3, 0, 1]), FNC) == 0.0
    probs = np.eye(4)[all_discuss]
    assert "fnc_score" in compute_metrics(y, probs, FNC)
    assert "fnc_score" not in compute_metrics(np.array([0, 1]), np.eye(2), ["a", "b"])


def test_gate_separates_related_pairs_and_round_trips(tmp_path):
    pairs = ["Putin calls Erdogan about Syria", "Apple unveils a new phone"] * 10
    texts = ["Putin and Erdogan spoke about Syria by phone.", "Rain is expected over the weekend."] * 10
    gate, p_fit = RelatednessGate.fit("unrelated", 0.7, pairs, texts, np.array([False, True] * 10), seed=0)
    p = gate.probability(pairs[:2], texts[:2])
    assert p[0] < 0.5 < p[1]
    assert np.allclose(p_fit, gate.probability(pairs, texts))
    gate.save(tmp_path)
    again = RelatednessGate.load(tmp_path)
    assert again.threshold == 0.7 and np.allclose(again.probability(pairs[:2], texts[:2]), p)


def test_combine_gate_keeps_the_model_where_the_gate_passed():
    p_gate = np.array([0.1, 0.95, 0.3])
    passed = np.array([0, 2])
    model = np.array([[0.6, 0.2, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6]])
    probs = combine_gate(p_gate, passed, model, gate_index=3)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.allclose(probs[[0, 2]], model)  # the model knows every label, the gate's one too
    assert probs.argmax(axis=1).tolist() == [0, 3, 3]
    assert np.allclose(probs[1, :3], 0.05 / 3)


def test_sample_rows_is_stratified_and_deterministic():
    y = np.array([0] * 80 + [1] * 20)
    kept = sample_rows(y, 50, seed=1)
    assert len(kept) == 50 and np.bincount(y[kept]).tolist() == [40, 10]
    assert kept.tolist() == sample_rows(y, 50, seed=1).tolist()
    assert len(sample_rows(y, None, seed=1)) == 100


def test_two_stage_training_round_trips_with_its_gate(home, tiny_model_dir):
    changes = {"train__max_examples": 40, "train__class_bias": True, "model__evidence_first": True}
    cfg = load_config(make_stance_config(home, tiny_model_dir, **changes))
    result = train(cfg, show_progress=False)
    assert "fnc_score" in result.test_metrics
    assert result.test_metrics["per_class"]["unrelated"]["f1"] > 0.8  # the gate's job, easy on this data
    clf = load_model(result.model_dir, "cpu", "fp32")
    gate = clf.decision.gate
    assert clf.labels == FNC and gate is not None and gate.threshold == cfg.model.gate_threshold
    assert clf.backend.model.config.num_labels == 4, "a gated model reads on PyTorch"
    assert clf.card.windows.evidence_first and clf.decision.class_bias is not None and len(clf.decision.class_bias) == 4
    dataset, _ = load_prepared(cfg)
    test = dataset["test"]
    probs = clf.predict_proba(list(test["text"]), list(test["pair"]))
    assert probs.shape == (len(test), 4) and np.allclose(probs.sum(axis=1), 1.0)
    again = compute_metrics(np.asarray(test["label"]), probs, FNC)  # the saved model, bias and all, is what was scored
    assert abs(again["macro_f1"] - result.test_metrics["macro_f1"]) < 1e-9


def test_predict_and_evaluate_claims_through_the_cli(home, tiny_model_dir):
    from conftest import make_config, run_cli, synthetic_rows, write_csv

    topic_cfg = make_config(home, tiny_model_dir, write_csv(home / "news.csv", synthetic_rows(10)))
    train(load_config(topic_cfg), show_progress=False)
    stance_cfg = make_stance_config(home, tiny_model_dir, n_stories=12, train__max_examples=30)
    train(load_config(stance_cfg), show_progress=False)

    article = "date 2021-05-05\nThe minister denied the report about the election vote."
    args = ["--claim", "The minister resigned", "--claim", "Stocks fell"]
    pr = run_cli(home, "predict", "-c", str(topic_cfg), "--json", *args, "-", stdin=article)
    assert pr.returncode == 0, pr.stderr
    obj = json.loads(pr.stdout)
    assert [c["claim"] for c in obj["claims"]] == ["The minister resigned", "Stocks fell"]
    for c in obj["claims"]:
        assert c["label"] in FNC and set(c["scores"]) == set(FNC)
        assert abs(sum(c["scores"].values()) - 1) < 1e-4

    ev = run_cli(home, "evaluate", "-c", str(stance_cfg), "--json")
    assert ev.returncode == 0, ev.stderr
    obj = json.loads(ev.stdout)
    assert set(obj) == {"n", "accuracy", "macro_f1", "fnc_score", "per_class", "run_id"}
    # the FNC-1 score of what the champion answered: unrelated rows right count a quarter, the rest in full
    gated = load_model(Path(str(home)) / "model-stance", "cpu", "fp32")
    test = load_prepared(load_config(stance_cfg))[0]["test"]
    y = np.asarray(test["label"])
    pred = gated.predict_proba(list(test["text"]), list(test["pair"])).argmax(axis=1)
    assert obj["fnc_score"] == pytest.approx(fnc_relative_score(y, pred, FNC), abs=1e-9)


def test_class_weights_balance_and_soften():
    from pipeline.stages.train_data import class_weights

    y = np.array([0] * 90 + [1] * 10)
    balanced, sqrt = class_weights(y, 2, "balanced"), class_weights(y, 2, "sqrt")
    counts = np.bincount(y)
    assert np.isclose((balanced * counts).sum(), len(y)) and np.isclose((sqrt * counts).sum(), len(y))
    assert np.isclose(balanced[0] * 90, balanced[1] * 10)  # each class weighs the same in total
    assert 1 < sqrt[1] / sqrt[0] < balanced[1] / balanced[0]  # sqrt: the minority gains, less

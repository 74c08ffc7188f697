"""Metrics: F1 from confusion matrices, bootstrap intervals, calibration error, temperature scaling, mistakes."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from pipeline.core.metrics import (
    bootstrap_macro_f1,
    calibration_bins,
    compute_metrics,
    expected_calibration_error,
    fit_temperature,
    macro_f1_from_confusion,
)
from pipeline.models.decision import softmax
from pipeline.stages.runs import paired_bootstrap
from pipeline.tracking.log import mistakes_table


def test_macro_f1_from_confusion_matches_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(1)
    for _ in range(20):
        y, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
        cm = confusion_matrix(y, p, labels=range(4))
        expected = f1_score(y, p, labels=range(4), average="macro", zero_division=0)
        assert macro_f1_from_confusion(cm) == pytest.approx(expected)


def test_bootstrap_interval_holds_the_estimate_and_shrinks_with_more_rows():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 2000)
    p = np.where(rng.random(2000) < 0.8, y, rng.integers(0, 3, 2000))
    point = f1_score(y, p, average="macro")
    low, high = bootstrap_macro_f1(y, p, 3)
    assert low < point < high
    small_low, small_high = bootstrap_macro_f1(y[:200], p[:200], 3)
    assert small_high - small_low > high - low


def test_expected_calibration_error_is_the_gap_between_confidence_and_accuracy():
    probs = np.tile([0.8, 0.2], (10, 1))
    right = np.zeros(10, dtype=int)
    assert expected_calibration_error(calibration_bins(np.r_[right[:8], [1, 1]], probs)) == pytest.approx(0.0)
    assert expected_calibration_error(calibration_bins(np.r_[right[:5], [1] * 5], probs)) == pytest.approx(0.3)


def test_temperature_scaling_undoes_overconfidence():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 1.5, size=(4000, 3))
    y = np.asarray([rng.choice(3, p=row) for row in softmax(z)])
    overconfident = 4.0 * z
    t = fit_temperature(lambda temp: softmax(overconfident / temp), y)
    assert t == pytest.approx(4.0, rel=0.15)
    before = compute_metrics(y, softmax(overconfident), ["a", "b", "c"])
    after = compute_metrics(y, softmax(overconfident / t), ["a", "b", "c"])
    assert after["ece"] < before["ece"] and after["log_loss"] < before["log_loss"]
    assert after["macro_f1"] == before["macro_f1"], "a temperature never changes the argmax"


def test_compute_metrics_has_probability_metrics_per_class():
    probs = np.asarray([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    m = compute_metrics(np.asarray([0, 1, 1, 1]), probs, ["x", "y"])
    assert m["per_class"]["x"]["roc_auc"] == pytest.approx(1.0) and m["log_loss"] > 0
    assert m["confusion_matrix"] == [[1, 0], [1, 2]]
    assert m["confusion_matrix_normalized"][1] == pytest.approx([1 / 3, 2 / 3])
    only_one = compute_metrics(np.asarray([0, 0]), probs[:2], ["x", "y"])
    assert only_one["per_class"]["x"]["roc_auc"] is None, "undefined when one class is absent"


def test_mistakes_table_lists_confident_errors_first():
    probs = np.asarray([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9], [0.7, 0.3]])
    table = mistakes_table(["a", "b", "c", "d"], None, np.asarray([1, 1, 1, 0]), probs, ["x", "y"])
    assert list(table["text"]) == ["a", "b"] and list(table["predicted"]) == ["x", "x"]
    assert list(table["confidence"]) == sorted(table["confidence"], reverse=True)


def test_paired_bootstrap_of_identical_models_is_zero():
    rng = np.random.default_rng(4)
    one_hot = np.eye(3, dtype=np.int8)
    y, p = one_hot[rng.integers(0, 3, 300)], one_hot[rng.integers(0, 3, 300)]
    assert paired_bootstrap(y, p, p) == (0.0, 0.0)
    low, _ = paired_bootstrap(y, p, y)
    assert low > 0, "a perfect challenger beats a random champion beyond the noise"


def test_one_hot_resamples_give_the_confusion_matrix_macro_f1():
    from pipeline.core.metrics import bootstrap_confusions, resample_indices, resampled_label_macro_f1

    rng = np.random.default_rng(5)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    idx = resample_indices(200, samples=30)
    by_confusion = macro_f1_from_confusion(bootstrap_confusions(y, p, 4, idx))
    one_hot = np.eye(4, dtype=np.int8)
    np.testing.assert_allclose(resampled_label_macro_f1(one_hot[y], one_hot[p], idx), by_confusion)


def test_class_bias_recovers_a_rare_class_the_model_under_predicts():
    from pipeline.core.metrics import fit_class_bias
    from pipeline.models.decision import apply_class_bias

    rng = np.random.default_rng(0)
    y = np.array([0] * 450 + [1] * 50)
    # the rare class's true rows lean its way, but never far enough to win the argmax
    p1 = np.where(y == 1, rng.uniform(0.25, 0.45, len(y)), rng.uniform(0.0, 0.2, len(y)))
    probs = np.column_stack([1 - p1, p1])
    before = f1_score(y, probs.argmax(axis=1), average="macro")
    bias = fit_class_bias(probs, y)
    shifted = apply_class_bias(probs, list(bias))
    assert f1_score(y, shifted.argmax(axis=1), average="macro") == 1.0 > before
    np.testing.assert_allclose(shifted.sum(axis=1), 1.0)
    assert apply_class_bias(probs, None) is probs


def test_class_bias_stays_zero_where_the_argmax_is_already_right():
    from pipeline.core.metrics import fit_class_bias

    y = np.array([0, 1, 2, 1, 0])
    probs = np.eye(3)[y] * 0.8 + 0.2 / 3
    assert not fit_class_bias(probs, y).any()

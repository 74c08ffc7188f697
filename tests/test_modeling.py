"""The predictor: save/load round trip for each pooling, the decision's offsets, padding invariance, the model
card (and the first card format), device and precision choice."""

import json

import numpy as np
import pytest
from conftest import torch_predictor

from pipeline.core.errors import PipelineError
from pipeline.models.card import read_card
from pipeline.models.loading import load_model, load_torch, save_model
from pipeline.models.runtime import cpu_has_bf16, pick_device, pick_precision

TEXTS = ["Shares rose after record profits.", "The striker scored twice in the cup final. " * 40, "New phone chips."]


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_save_load_round_trip_gives_the_same_probabilities(tiny_model_dir, tmp_path, pooling):
    labels = ["business", "sport", "tech"]
    clf = torch_predictor(tiny_model_dir, labels, pooling)
    before = clf.predict_proba(TEXTS)
    save_model(clf, tmp_path)
    loaded = load_model(tmp_path, "cpu", "fp32")
    assert loaded.labels == labels and loaded.card.pooling == pooling and loaded.card.windows.max_length == 64
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), before, atol=1e-5)
    # a fitted decision rule travels with the model and shifts its probabilities
    clf.decision.class_bias = [0.0, 2.0, -1.0]
    save_model(clf, tmp_path)
    biased = load_model(tmp_path, "cpu", "fp32")
    assert biased.decision.class_bias == [0.0, 2.0, -1.0]
    shifted = before * np.exp([0.0, 2.0, -1.0])
    np.testing.assert_allclose(biased.predict_proba(TEXTS), shifted / shifted.sum(axis=1, keepdims=True), atol=1e-5)
    # article offsets move only the texts longer than one window (TEXTS[1] here)
    sentences = biased.predict_proba(TEXTS)
    biased.decision.article_bias = [1.5, 0.0, 0.0]
    save_model(biased, tmp_path)
    articles = load_model(tmp_path, "cpu", "fp32")
    assert articles.decision.article_bias == [1.5, 0.0, 0.0] and list(articles.windows_per_text(TEXTS, None)) == [
        1,
        4,
        1,
    ]
    after = articles.predict_proba(TEXTS)
    np.testing.assert_allclose(after[[0, 2]], sentences[[0, 2]], atol=1e-6)
    long_text = sentences[1] * np.exp([1.5, 0.0, 0.0])
    np.testing.assert_allclose(after[1], long_text / long_text.sum(), atol=1e-5)


def test_a_temperature_sharpens_or_flattens_and_the_label_stays(tiny_model_dir):
    clf = torch_predictor(tiny_model_dir, ["a", "b", "c"])
    cold, warm = clf.predict_proba_at(TEXTS, None, [0.5, 2.0])
    assert (cold.argmax(axis=1) == warm.argmax(axis=1)).all()
    assert (cold.max(axis=1) > warm.max(axis=1)).all()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_batching_and_padding_do_not_change_predictions(tiny_model_dir, pooling):
    one = torch_predictor(tiny_model_dir, ["a", "b"], pooling, batch_size=1)
    many = torch_predictor(tiny_model_dir, ["a", "b"], pooling, batch_size=8)
    many.backend.model.load_state_dict(one.backend.model.state_dict())
    np.testing.assert_allclose(one.predict_proba(TEXTS), many.predict_proba(TEXTS), atol=1e-5)


def test_a_first_format_model_folder_still_loads(tiny_model_dir, tmp_path):
    """A folder written before the card had a schema (a flat pipeline.json) reads as the same model."""
    clf = torch_predictor(tiny_model_dir, ["business", "sport", "tech"])
    clf.decision.temperature, clf.decision.class_bias = 2.0, [0.5, 0.0, 0.0]
    save_model(clf, tmp_path)
    card = json.loads((tmp_path / "pipeline.json").read_text())
    flat = {
        "task": "topic",
        "text_columns": ["text"],
        "pair_column": None,
        "labels": card["labels"],
        **{k: card["windows"][k] for k in ("max_length", "stride", "max_windows", "mark_pair", "evidence_first")},
        **{k: card["decision"][k] for k in ("combine", "temperature", "class_bias", "gate_label", "tfidf_blend")},
        "pooling": "cls",
        "val_macro_f1": 0.9,
    }
    (tmp_path / "pipeline.json").write_text(json.dumps(flat))
    old = load_model(tmp_path, "cpu", "fp32")
    assert old.card.training.val_macro_f1 == 0.9 and old.decision.temperature == 2.0
    np.testing.assert_allclose(old.predict_proba(TEXTS), clf.predict_proba(TEXTS), atol=1e-6)


def test_an_unreadable_card_says_to_retrain(tmp_path):
    with pytest.raises(PipelineError, match="not a pipeline model folder"):
        load_torch(tmp_path)
    (tmp_path / "pipeline.json").write_text(json.dumps({"schema_version": 2, "kind": "finetuned"}))
    with pytest.raises(PipelineError, match="retrain the model"):
        read_card(tmp_path)
    (tmp_path / "pipeline.json").write_text(json.dumps({"schema_version": 9}))
    with pytest.raises(PipelineError, match="card version 9"):
        read_card(tmp_path)


def test_device_and_precision_choice(tmp_path):
    cpu = pick_device("cpu")
    assert cpu.type == "cpu"
    assert pick_precision("fp32", cpu) == "fp32"
    assert pick_precision("auto", cpu) == ("bf16" if cpu_has_bf16() else "fp32")
    (tmp_path / "amd").write_text("flags : fpu avx2 avx512f avx512_bf16\n")
    (tmp_path / "old").write_text("flags : fpu avx2\n")
    assert cpu_has_bf16(tmp_path / "amd") and not cpu_has_bf16(tmp_path / "old")
    assert not cpu_has_bf16(tmp_path / "missing")
    with pytest.raises(PipelineError, match="unknown device"):
        pick_device("quantum")


def test_mean_mention_pooling_reads_the_targets_mentions_and_survives_a_round_trip(tiny_model_dir, tmp_path):
    import torch

    labels = ["against", "favor", "neutral"]
    torch.manual_seed(0)
    clf = torch_predictor(tiny_model_dir, labels, "mean_mention", batch_size=1)
    model = clf.backend.model
    assert model.classifier.in_features == 2 * model.config.hidden_size
    texts = ["Alice praised Bob, and Bob thanked Alice.", TEXTS[1], "Nobody is named here."]
    pairs = ["Alice", "striker", "Alice"]
    before = clf.predict_proba(texts, pairs)
    save_model(clf, tmp_path)
    loaded = load_model(tmp_path, "cpu", "fp32", batch_size=8)
    assert loaded.card.pooling == "mean_mention"
    np.testing.assert_allclose(loaded.predict_proba(texts, pairs), before, atol=1e-5)
    with pytest.raises(PipelineError, match="needs a pair column"):
        loaded.predict_proba(texts)
    with pytest.raises(ValueError, match="mention_mask"):
        model(input_ids=torch.ones((1, 4), dtype=torch.long))
    # the mention half of the head is read: zeroing it changes the answer
    with torch.no_grad():
        loaded.backend.model.classifier.weight[:, model.config.hidden_size :] = 0.0
    assert not np.allclose(loaded.predict_proba(texts, pairs), before, atol=1e-4)

"""The classifier: save/load round trip for each pooling, padding invariance, device and precision choice."""

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.modeling import Classifier, build_classifier, load_tokenizer, pick_device, pick_precision

TEXTS = ["Shares rose after record profits.", "The striker scored twice in the cup final. " * 40, "New phone chips."]


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_save_load_round_trip_gives_the_same_probabilities(tiny_model_dir, tmp_path, pooling):
    import torch

    labels = ["business", "sport", "tech"]
    model = build_classifier(str(tiny_model_dir), labels, 0.0, pooling)
    model.eval()
    tok = load_tokenizer(str(tiny_model_dir))
    clf = Classifier(model, tok, labels, 64, 16, 4, "mean_logits", torch.device("cpu"), "fp32", pooling=pooling)
    before = clf.predict_proba(TEXTS)
    clf.save(tmp_path)
    loaded = Classifier.load(tmp_path, "cpu", "fp32")
    assert loaded.labels == labels and loaded.pooling == pooling and loaded.max_length == 64
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), before, atol=1e-5)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)
    # a fitted decision rule travels with the model and shifts its probabilities
    clf.class_bias = [0.0, 2.0, -1.0]
    clf.save(tmp_path)
    biased = Classifier.load(tmp_path, "cpu", "fp32")
    assert biased.class_bias == [0.0, 2.0, -1.0]
    shifted = before * np.exp([0.0, 2.0, -1.0])
    np.testing.assert_allclose(biased.predict_proba(TEXTS), shifted / shifted.sum(axis=1, keepdims=True), atol=1e-5)
    # article offsets move only the texts longer than one window (TEXTS[1] here)
    sentences = biased.predict_proba(TEXTS)
    biased.article_bias = [1.5, 0.0, 0.0]
    biased.save(tmp_path)
    articles = Classifier.load(tmp_path, "cpu", "fp32")
    assert articles.article_bias == [1.5, 0.0, 0.0] and list(articles.windows_per_text(TEXTS)) == [1, 4, 1]
    after = articles.predict_proba(TEXTS)
    np.testing.assert_allclose(after[[0, 2]], sentences[[0, 2]], atol=1e-6)
    long_text = sentences[1] * np.exp([1.5, 0.0, 0.0])
    np.testing.assert_allclose(after[1], long_text / long_text.sum(), atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_batching_and_padding_do_not_change_predictions(tiny_model_dir, pooling):
    import torch

    labels = ["a", "b"]
    model = build_classifier(str(tiny_model_dir), labels, 0.0, pooling)
    tok = load_tokenizer(str(tiny_model_dir))
    one = Classifier(model, tok, labels, 64, 16, 4, "mean_logits", torch.device("cpu"), "fp32", batch_size=1)
    many = Classifier(model, tok, labels, 64, 16, 4, "mean_logits", torch.device("cpu"), "fp32", batch_size=8)
    np.testing.assert_allclose(one.predict_proba(TEXTS), many.predict_proba(TEXTS), atol=1e-5)


def test_device_and_precision_choice():
    cpu = pick_device("cpu")
    assert cpu.type == "cpu"
    assert pick_precision("fp32", cpu) == "fp32"
    assert pick_precision("auto", cpu) in {"bf16", "fp32"}
    with pytest.raises(PipelineError, match="unknown device"):
        pick_device("quantum")


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="not a pipeline model folder"):
        Classifier.load(tmp_path)


def test_mean_mention_pooling_reads_the_targets_mentions_and_survives_a_round_trip(tiny_model_dir, tmp_path):
    import torch

    labels = ["against", "favor", "neutral"]
    torch.manual_seed(0)
    model = build_classifier(str(tiny_model_dir), labels, 0.0, "mean_mention")
    assert model.classifier.in_features == 2 * model.config.hidden_size
    tok = load_tokenizer(str(tiny_model_dir))
    clf = Classifier(
        model, tok, labels, 64, 16, 4, "mean_logits", torch.device("cpu"), "fp32", batch_size=1, pooling="mean_mention"
    )
    texts = ["Alice praised Bob, and Bob thanked Alice.", TEXTS[1], "Nobody is named here."]
    pairs = ["Alice", "striker", "Alice"]
    before = clf.predict_proba(texts, pairs)
    clf.save(tmp_path)
    loaded = Classifier.load(tmp_path, "cpu", "fp32", batch_size=8)
    assert loaded.pooling == "mean_mention"
    np.testing.assert_allclose(loaded.predict_proba(texts, pairs), before, atol=1e-5)
    with pytest.raises(PipelineError, match="needs a pair column"):
        loaded.predict_proba(texts)
    with pytest.raises(ValueError, match="mention_mask"):
        model(input_ids=torch.ones((1, 4), dtype=torch.long))
    # the mention half of the head is read: zeroing it changes the answer
    with torch.no_grad():
        loaded.model.classifier.weight[:, model.config.hidden_size :] = 0.0
    assert not np.allclose(loaded.predict_proba(texts, pairs), before, atol=1e-4)

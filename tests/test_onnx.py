"""The ONNX export: same windows, same probabilities as PyTorch, and predict runs it without importing torch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import synthetic_rows
from test_train_tiny import run_cli

from pipeline.core.errors import PipelineError
from pipeline.stages.export import export_onnx
from pipeline.modeling import Classifier, encode_windows, load_model
from pipeline.onnx_model import OnnxClassifier


@pytest.fixture()
def exported(trained):
    _, result = trained
    texts = [r["text"] for r in synthetic_rows(5, seed=9)]
    report = export_onnx(result.model_dir, False, texts, None)
    return result.model_dir, report


def test_onnx_windows_are_the_tokenizers_windows(exported):
    folder, _ = exported
    fast, torch_clf = OnnxClassifier.load(folder), Classifier.load(folder, "cpu", "fp32")
    long_text = " ".join(r["text"] for r in synthetic_rows(4, seed=3))
    too_long = " ".join(f"claim{i}" for i in range(200))  # cut to fit, on both paths alike
    for pairs in (None, ["a title", "another, longer title"], [too_long, too_long]):
        texts = [long_text, "short text"]
        ours = fast.windows(texts, pairs)
        theirs = encode_windows(torch_clf.tokenizer, texts, pairs, fast.max_length, fast.stride, fast.max_windows)
        assert ours.input_ids == theirs.input_ids and ours.token_type_ids == theirs.token_type_ids
        assert ours.owner == theirs.owner and len(ours) > 2
    marked = encode_windows(torch_clf.tokenizer, ["Ankara and ankara's ally"], ["Ankara"], 64, 16, 4, mark_pair=True)
    fast.meta["mark_pair"] = True
    assert fast.windows(["Ankara and ankara's ally"], ["Ankara"]).input_ids == marked.input_ids
    body = ["Nothing here. Ankara is named here. Nor here."]
    reordered = encode_windows(torch_clf.tokenizer, body, ["Ankara"], 64, 16, 4, mark_pair=True, evidence_first=True)
    fast.meta["evidence_first"] = True
    assert fast.windows(body, ["Ankara"]).input_ids == reordered.input_ids


def test_onnx_gives_the_torch_probabilities_and_is_what_predict_loads(exported):
    folder, report = exported
    assert report["agreement"] == 1.0 and json.loads((folder / "pipeline.json").read_text())["onnx"] == "model.onnx"
    loaded = load_model(folder, "cpu", "fp32")
    assert isinstance(loaded, OnnxClassifier)
    texts = [r["text"] for r in synthetic_rows(4, seed=5)]
    expected = Classifier.load(folder, "cpu", "fp32").predict_proba(texts)
    assert np.allclose(loaded.predict_proba(texts), expected, atol=1e-4)
    # article offsets, read from the same pipeline.json by both paths
    long_text = " ".join(r["text"] for r in synthetic_rows(4, seed=3))
    meta = json.loads((folder / "pipeline.json").read_text())
    (folder / "pipeline.json").write_text(json.dumps({**meta, "article_bias": [2.0, -1.0, 0.0]}))
    both = [long_text, texts[0]]
    unbiased = loaded.predict_proba(both)
    torch_probs = Classifier.load(folder, "cpu", "fp32").predict_proba(both)
    assert np.allclose(load_model(folder, "cpu", "fp32").predict_proba(both), torch_probs, atol=1e-4)
    assert np.allclose(torch_probs[1], unbiased[1], atol=1e-4) and not np.allclose(torch_probs[0], unbiased[0])


def test_predict_with_an_export_does_not_import_torch(exported, home):
    folder, _ = exported
    article = home / "a.txt"
    article.write_text("match goal team player coach season cup league win goal\n")
    out = run_cli(home, "predict", "--model", str(folder), "--no-stance", "--json", str(article))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["topic"]["label"] in {"business", "sport", "tech"}
    env = {**os.environ, "PIPELINE_HOME": str(home)}
    command = [sys.executable, "-X", "importtime", "-m", "pipeline", "predict", "--model", str(folder), str(article)]
    traced = subprocess.run([*command, "--no-stance"], capture_output=True, text=True, env=env, timeout=300)
    imported = {line.split("|")[-1].strip() for line in traced.stderr.splitlines() if "import time" in line}
    assert "torch" not in imported and "transformers" not in imported and "onnxruntime" in imported


def test_export_refuses_a_model_that_disagrees(trained, monkeypatch):
    _, result = trained
    monkeypatch.setattr("pipeline.export.MIN_AGREEMENT", 1.01)
    with pytest.raises(PipelineError, match="nothing was kept"):
        export_onnx(result.model_dir, False, ["match goal"], None)
    assert not (result.model_dir / "model.onnx").exists()


def test_onnx_export_of_a_mention_pooling_model_reads_the_same_mentions(tiny_model_dir, tmp_path):
    import torch

    from pipeline.modeling import build_classifier, load_tokenizer

    labels = ["against", "favor", "neutral"]
    torch.manual_seed(1)
    model = build_classifier(str(tiny_model_dir), labels, 0.0, "mean_mention").eval()
    tok = load_tokenizer(str(tiny_model_dir))
    Classifier(model, tok, labels, 48, 8, 4, "mean_logits", torch.device("cpu"), "fp32", pooling="mean_mention").save(
        tmp_path
    )
    long_text = "Ankara talks. " + " ".join(r["text"] for r in synthetic_rows(2, seed=3)) + " And Ankara's reply."
    texts, pairs = [long_text, "Ankara and Athens met.", "Nobody here."], ["Ankara", "Athens", "Ankara"]
    report = export_onnx(tmp_path, False, texts, pairs)
    assert report["agreement"] == 1.0
    fast, torch_clf = load_model(tmp_path, "cpu", "fp32"), Classifier.load(tmp_path, "cpu", "fp32")
    assert isinstance(fast, OnnxClassifier)
    ours, theirs = fast.windows(texts, pairs), torch_clf.windows(texts, pairs)
    assert ours.input_ids == theirs.input_ids and ours.mention == theirs.mention and len(ours) > 3
    assert np.allclose(fast.predict_proba(texts, pairs), torch_clf.predict_proba(texts, pairs), atol=1e-4)

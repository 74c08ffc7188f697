"""The ONNX export: same windows, same probabilities as PyTorch, and predict runs it without importing torch."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli, synthetic_rows, torch_predictor

from pipeline.core.errors import PipelineError
from pipeline.models.loading import load_model, load_torch, save_model
from pipeline.models.onnx_backend import OnnxBackend
from pipeline.stages.export import export_onnx
from pipeline.text.windows import encode_windows


@pytest.fixture()
def exported(trained, tmp_path):
    """The shared trained model, copied, with an ONNX export."""
    _, result = trained
    folder = tmp_path / "model"
    shutil.copytree(result.model_dir, folder)
    texts = [r["text"] for r in synthetic_rows(5, seed=9)]
    report = export_onnx(folder, False, texts, None)
    return folder, report


def test_onnx_windows_are_the_tokenizers_windows(exported):
    folder, _ = exported
    fast, reference = load_model(folder, "cpu", "fp32"), load_torch(folder, "cpu", "fp32")
    assert isinstance(fast.backend, OnnxBackend)
    long_text = " ".join(r["text"] for r in synthetic_rows(4, seed=3))
    too_long = " ".join(f"claim{i}" for i in range(200))  # cut to fit, on both paths alike
    tokenizer = reference.backend.tokenizer
    for pairs in (None, ["a title", "another, longer title"], [too_long, too_long]):
        texts = [long_text, "short text"]
        ours = fast.backend.windows(texts, pairs)
        theirs = encode_windows(tokenizer, texts, pairs, fast.card.windows)
        assert ours.input_ids == theirs.input_ids and ours.token_type_ids == theirs.token_type_ids
        assert ours.owner == theirs.owner and len(ours) > 2
    for flags in ({"mark_pair": True}, {"mark_pair": True, "evidence_first": True}):
        fast.backend.settings = settings = fast.card.windows.model_copy(update=flags)
        body = ["Nothing here. Ankara is named here. Nor here, and ankara's ally."]
        assert (
            fast.backend.windows(body, ["Ankara"]).input_ids
            == encode_windows(tokenizer, body, ["Ankara"], settings).input_ids
        )


def test_onnx_gives_the_torch_probabilities_and_is_what_predict_loads(exported):
    folder, report = exported
    assert report.agreement == 1.0 and json.loads((folder / "pipeline.json").read_text())["onnx"] == "model.onnx"
    loaded = load_model(folder, "cpu", "fp32")
    assert isinstance(loaded.backend, OnnxBackend)
    texts = [r["text"] for r in synthetic_rows(4, seed=5)]
    expected = load_torch(folder, "cpu", "fp32").predict_proba(texts)
    assert np.allclose(loaded.predict_proba(texts), expected, atol=1e-4)
    # article offsets, read from the same card by both paths
    long_text = " ".join(r["text"] for r in synthetic_rows(4, seed=3))
    card = json.loads((folder / "pipeline.json").read_text())
    card["decision"]["article_bias"] = [2.0, -1.0, 0.0]
    (folder / "pipeline.json").write_text(json.dumps(card))
    both = [long_text, texts[0]]
    unbiased = loaded.predict_proba(both)
    torch_probs = load_torch(folder, "cpu", "fp32").predict_proba(both)
    assert np.allclose(load_model(folder, "cpu", "fp32").predict_proba(both), torch_probs, atol=1e-4)
    assert np.allclose(torch_probs[1], unbiased[1], atol=1e-4) and not np.allclose(torch_probs[0], unbiased[0])


def test_onnx_reads_each_article_once(exported, monkeypatch):
    folder, _ = exported
    card = json.loads((folder / "pipeline.json").read_text())
    card["decision"]["article_bias"] = [2.0, -1.0, 0.0]
    (folder / "pipeline.json").write_text(json.dumps(card))
    fast = load_model(folder, "cpu", "fp32")
    calls = []
    encode = fast.backend.tokenizer.encode_batch
    monkeypatch.setattr(
        fast.backend.tokenizer,
        "encode_batch",
        lambda items, *a, **k: calls.append(len(items)) or encode(items, *a, **k),
    )
    fast.predict_proba([r["text"] for r in synthetic_rows(3, seed=5)])
    assert calls == [9], "one tokenisation of the nine articles, the windows counted from it"


def test_predict_with_an_export_does_not_import_torch(exported, shared_home):
    folder, _ = exported
    home = shared_home
    article = folder.parent / "a.txt"
    article.write_text("match goal team player coach season cup league win goal\n")
    out = run_cli(home, "predict", "--model", str(folder), "--no-stance", "--json", str(article))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["topic"]["label"] == "sport"
    env = {**os.environ, "PIPELINE_HOME": str(home)}
    command = [sys.executable, "-X", "importtime", "-m", "pipeline", "predict", "--model", str(folder), str(article)]
    traced = subprocess.run([*command, "--no-stance"], capture_output=True, text=True, env=env, timeout=300)
    imported = {line.split("|")[-1].strip() for line in traced.stderr.splitlines() if "import time" in line}
    assert "onnxruntime" in imported
    assert not imported & {"torch", "transformers", "mlflow", "sklearn"}


def test_export_refuses_a_model_that_disagrees(trained, tmp_path, monkeypatch):
    _, result = trained
    folder = tmp_path / "model"
    shutil.copytree(result.model_dir, folder)
    monkeypatch.setattr("pipeline.stages.export.MIN_AGREEMENT", 1.01)
    with pytest.raises(PipelineError, match="nothing was kept"):
        export_onnx(folder, False, ["match goal"], None)
    assert not (folder / "model.onnx").exists() and not list(folder.glob(".export-*"))
    assert json.loads((folder / "pipeline.json").read_text())["onnx"] is None


def test_an_nli_zero_shot_model_is_not_exported_but_says_why(tmp_path):
    (tmp_path / "pipeline.json").write_text(
        json.dumps(
            {
                "kind": "zeroshot-nli",
                "labels": ["a", "b"],
                "max_length": 64,
                "stride": 16,
                "max_windows": 1,
                "nli_model": "some/nli",
                "hypothesis_template": "This is about {}.",
            }
        )
    )
    with pytest.raises(PipelineError, match="runs on PyTorch only and cannot be exported yet"):
        export_onnx(tmp_path, False, ["x"], None)


def test_onnx_export_of_a_mention_pooling_model_reads_the_same_mentions(tiny_model_dir, tmp_path):
    import torch

    torch.manual_seed(1)
    clf = torch_predictor(tiny_model_dir, ["against", "favor", "neutral"], "mean_mention", max_length=48, stride=8)
    save_model(clf, tmp_path)
    long_text = "Ankara talks. " + " ".join(r["text"] for r in synthetic_rows(2, seed=3)) + " And Ankara's reply."
    texts, pairs = [long_text, "Ankara and Athens met.", "Nobody here."], ["Ankara", "Athens", "Ankara"]
    report = export_onnx(tmp_path, False, texts, pairs)
    assert report.agreement == 1.0
    fast, reference = load_model(tmp_path, "cpu", "fp32"), load_torch(tmp_path, "cpu", "fp32")
    assert isinstance(fast.backend, OnnxBackend)
    ours, theirs = fast.backend.windows(texts, pairs), reference.backend.windows(texts, pairs)
    assert ours.input_ids == theirs.input_ids and ours.mention == theirs.mention and len(ours) > 3
    assert np.allclose(fast.predict_proba(texts, pairs), reference.predict_proba(texts, pairs), atol=1e-4)

"""No path by which a model a user received runs code: no pickle is logged, and a planted one is never read."""

from __future__ import annotations

import pickle
import pickletools
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import make_config, run_cli, synthetic_rows, write_csv

from pipeline.core.config import load_config

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth", ".bin", ".ckpt")


def _parses_as_pickle(data: bytes) -> bool:
    """True when `data` reads as a pickle opcode stream up to STOP (read, never executed)."""
    try:
        for opcode, _, _ in pickletools.genops(data):
            if opcode.name == "STOP":
                return True
    except Exception:
        return False
    return False


def is_pickle(path: Path) -> bool:
    """A pickle by its name, its header (protocol 2 to 5 starts with 0x80 and the protocol), or a zip
    (torch.save's format) holding one."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    data = path.read_bytes()
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5 and _parses_as_pickle(data):
        return True
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return any(name.endswith((".pkl", ".pickle")) for name in z.namelist())
    return False


def pickles_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and is_pickle(p))


class _Payload:
    """Unpickling it writes `marker`: what a malicious weights file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_the_pickle_check_finds_plain_and_torch_pickles(tmp_path: Path) -> None:
    import torch

    plain = tmp_path / "weights"
    plain.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    torch.save({"w": torch.zeros(2)}, tmp_path / "state")
    (tmp_path / "vocab.json").write_text('{"a": 1}')
    (tmp_path / "header").write_bytes(b"\x80\x03" + b"{" * 64)  # 0x80 0x03 that does not read as a pickle
    assert pickles_under(tmp_path) == ["state", "weights"]


def test_registered_model_holds_no_pickle_and_predicts_without_one(trained, tmp_path, monkeypatch) -> None:
    import mlflow
    import pandas as pd
    import yaml

    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/topic/1", dst_path=str(tmp_path)))
    assert (folder / "MLmodel").is_file()
    assert pickles_under(folder) == []
    flavour = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert "python_model" not in flavour and flavour["model_code_path"].endswith("pyfunc_model.py")
    assert (folder / "code" / "pipeline" / "tracking" / "pyfunc_model.py").is_file(), "the package travels with it"

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # MLflow refuses any cloudpickled model
    model = mlflow.pyfunc.load_model(str(folder))
    out = model.predict(pd.DataFrame({"text": ["match goal team player cup league win", "shares profit market bank"]}))
    assert out["label"].tolist() == ["sport", "business"]
    assert out[["prob_business", "prob_sport", "prob_tech"]].sum(axis=1).round(4).tolist() == [1.0, 1.0]


def test_baseline_is_logged_without_pickle_and_serves_its_probabilities(
    home: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import numpy as np
    import pandas as pd
    from datasets import load_from_disk

    from pipeline.core.metrics import compute_metrics
    from pipeline.stages.baseline import run_baseline
    from pipeline.stages.prepare import prepare, split_targets

    src = write_csv(home / "news.csv", synthetic_rows(30))
    cfg = load_config(make_config(home, tiny_model_dir, src))
    result = run_baseline(cfg)
    run_files = Path(mlflow.artifacts.download_artifacts(run_id=result.run_id, dst_path=str(home / "run")))
    uri = f"runs:/{result.run_id}/model"
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(home / "model")))
    assert pickles_under(run_files) == [] and pickles_under(folder) == []
    assert (folder / "artifacts" / "tfidf" / "tfidf_weights.npz").is_file()
    assert not any(p.name == "pipeline.json" for p in folder.rglob("*")), "predict must not take it for a model"

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    model = mlflow.pyfunc.load_model(uri)
    frame = pd.DataFrame(
        {"title": ["Cup final", None, None], "text": ["match goal team player cup league", "shares profit bank", " "]}
    )
    out = model.predict(frame)
    assert out["label"].tolist()[:2] == ["sport", "business"]
    assert out.loc[2, "error"] == "empty text" and out.loc[2, "label"] is None
    probs = out[["prob_business", "prob_sport", "prob_tech"]].to_numpy()[:2]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # the served model is the one the run scored: its test split (title as the pair) gives the logged metrics
    test = load_from_disk(str(prepare(cfg).path))["test"]
    served = model.predict(pd.DataFrame({"title": test["pair"], "text": test["text"]}))
    probs = served[[f"prob_{label}" for label in ("business", "sport", "tech")]].to_numpy()
    logged = compute_metrics(split_targets(test), probs, ["business", "sport", "tech"])
    assert logged["log_loss"] == pytest.approx(result.test["log_loss"], abs=1e-9)


@pytest.mark.parametrize("keep_safetensors", [True, False], ids=["beside", "instead"])
def test_predict_never_unpickles_a_planted_weights_file(
    trained, shared_home: Path, tmp_path: Path, keep_safetensors: bool
) -> None:
    _, result = trained
    folder = tmp_path / "model"
    shutil.copytree(result.model_dir, folder)
    for onnx in folder.glob("*.onnx"):  # the PyTorch path is the one that reads weights files
        onnx.unlink()
    marker = tmp_path / "executed"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    if not keep_safetensors:
        (folder / "model.safetensors").unlink()
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists(), "the payload is live: unpickling it writes its marker"

    article = tmp_path / "article.txt"
    article.write_text("match goal team player coach season cup league win")
    config = str(shared_home / "config.yaml")
    out = run_cli(shared_home, "predict", "-c", config, "--model", str(folder), "--no-stance", "--json", str(article))
    assert not marker.exists(), "predict unpickled the planted weights file"
    assert "Traceback" not in out.stderr, out.stderr
    if keep_safetensors:
        assert out.returncode == 0, out.stderr
    else:
        assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr

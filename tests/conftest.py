"""Shared fixtures: a tiny random BERT built from a config, small labelled tables, an isolated MLflow store."""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
LABELS = ["business", "sport", "tech"]
WORDS = {
    "business": "shares profit market company bank economy investors growth sales",
    "sport": "match goal team player coach season cup league win",
    "tech": "software computer internet phone users digital network chip online",
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with random weights and MiniLM's vocabulary: no weights downloaded."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipeline.modeling import resolve_model_name

    torch.manual_seed(0)  # the random weights, and so every test that trains them, are the same each run
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name("minilm"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def synthetic_rows(n_per_label: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for label in LABELS:
        vocab = WORDS[label].split()
        for i in range(n_per_label):
            body = " ".join(rng.choice(vocab) for _ in range(rng.randint(20, 120)))
            rows.append({"id": f"{label}-{i}", "title": f"{label} news {i}", "text": body, "label": label})
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated project home: its own MLflow store, prepared data and model folders."""
    monkeypatch.setenv("PIPELINE_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path


def make_config(home: Path, model: str | Path, source: Path, **changes: object) -> Path:
    """configs/topic.yaml with the given source and model, sized for a fast test."""
    raw = yaml.safe_load((ROOT / "configs" / "topic.yaml").read_text())
    raw["data"].update(source=str(source), split_column=None, labels=None, prepared_dir=str(home / "prepared"))
    raw["model"].update(name=str(model), max_length=64, stride=16, max_windows=4)
    raw["train"].update(epochs=1, batch_size=8, output_dir=str(home / "model"), max_steps=None)
    raw["runtime"].update(threads=1, precision="fp32", device="cpu")
    raw["baseline"].update(c_grid=[1.0])
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    path = home / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path

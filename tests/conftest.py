"""Shared fixtures: a tiny random BERT built from a config, small labelled tables, an isolated MLflow store."""

from __future__ import annotations

import csv
import os
import random
import shutil
import subprocess
import sys
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

    from pipeline.models.runtime import resolve_model_name

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


def run_cli(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`pipeline ARGS` in a new process, in `home` with its own MLflow store."""
    env = {**os.environ, "PIPELINE_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env, input=stdin, timeout=300
    )


def isolate(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point the project home and the MLflow store at `home`."""
    monkeypatch.setenv("PIPELINE_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    import mlflow

    # an earlier test's in-process URI must not leak into this one's direct mlflow calls
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated project home: its own MLflow store, prepared data and model folders."""
    isolate(monkeypatch, tmp_path)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    return tmp_path


def make_config(home: Path, model: str | Path, source: Path, **changes: object) -> Path:
    """configs/topic.yaml with the given source and model, sized for a fast test."""
    raw = yaml.safe_load((ROOT / "configs" / "topic.yaml").read_text())
    raw["data"].update(source=str(source), split_column=None, labels=None, prepared_dir=str(home / "prepared"))
    raw["data"].update(extra_train=[], extra_tests=[])  # the shipped AllSides sets: tests give their own
    # the transformer alone unless a test asks for the TF-IDF blend (which would mask what the model learnt)
    raw["model"].update(name=str(model), max_length=64, stride=16, max_windows=4, tfidf_blend=False, tfidf_first=False)
    raw["train"].update(epochs=1, batch_size=8, output_dir=str(home / "model"), max_steps=None)
    raw["train"].update(max_length=None, stride=None, max_windows=None)  # training reads what the model reads
    return write_test_config(raw, changes, home / "config.yaml")


def write_test_config(raw: dict, changes: dict[str, object], path: Path) -> Path:
    """Single-threaded CPU fp32 settings, then `section__key=value` changes; written to `path`."""
    raw["runtime"].update(threads=1, precision="fp32", device="cpu")
    raw["baseline"].update(c_grid=[1.0])
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


STANCE_WORDS = {
    "agree": "confirmed indeed true verified",
    "disagree": "denied false hoax debunked",
    "discuss": "reportedly allegedly claims says",
}


def synthetic_claims(home: Path, n_stories: int, prefix: str, seed: int = 0) -> tuple[Path, Path]:
    """An FNC-1-shaped pair of tables: stances (Headline, Body ID, Stance) and bodies (Body ID, articleBody).

    Each story has two bodies and three headlines about one topic word set; related pairs carry
    stance words, and every headline is also paired with a body of another story (`unrelated`).
    """
    rng = random.Random(seed)
    topics = list(WORDS.values())
    stances, bodies = [], []
    for story in range(n_stories):
        vocab = [*topics[story % len(topics)].split(), f"{prefix}story{story}"]
        body_ids = [f"{prefix}{story}-{j}" for j in range(2)]
        for body_id in body_ids:
            text = " ".join(rng.choice(vocab) for _ in range(rng.randint(30, 90)))
            bodies.append({"Body ID": body_id, "articleBody": text})
        for h in range(3):
            stance = ("agree", "disagree", "discuss")[(story + h) % 3]
            headline = (
                f"{prefix}story{story} {' '.join(rng.choice(vocab) for _ in range(5))} {STANCE_WORDS[stance]} {h}"
            )
            for body_id in body_ids:
                stances.append({"Headline": headline, "Body ID": body_id, "Stance": stance})
            other = next(o for o in rng.sample(range(n_stories), n_stories) if o % len(topics) != story % len(topics))
            stances.append({"Headline": headline, "Body ID": f"{prefix}{other}-0", "Stance": "unrelated"})
    rng.shuffle(stances)
    return write_csv(home / f"{prefix}stances.csv", stances), write_csv(home / f"{prefix}bodies.csv", bodies)


def make_stance_config(home: Path, model: str | Path, n_stories: int = 30, **changes: object) -> Path:
    """configs/stance.yaml on synthetic FNC-1-shaped tables, sized for a fast test."""
    train_stances, train_bodies = synthetic_claims(home, n_stories, "tr", seed=1)
    test_stances, test_bodies = synthetic_claims(home, max(6, n_stories // 3), "te", seed=2)
    raw = yaml.safe_load((ROOT / "configs" / "stance.yaml").read_text())
    raw["data"].update(
        source=str(train_stances),
        join={"source": str(train_bodies), "key": "Body ID"},
        test={"source": str(test_stances), "join": {"source": str(test_bodies), "key": "Body ID"}},
        prepared_dir=str(home / "prepared-stance"),
    )
    raw["model"].update(name=str(model), max_length=64, stride=16, max_windows=2)
    raw["train"].update(
        epochs=1, batch_size=8, output_dir=str(home / "model-stance"), max_steps=None, max_examples=None
    )
    return write_test_config(raw, changes, home / "stance.yaml")


def train_tiny_topic(home: Path, tiny_model_dir: Path):
    """A tiny BERT trained on keyword-separable synthetic news, registered as topic v1 champion."""
    from pipeline.core.config import load_config
    from pipeline.stages.train import train

    src = write_csv(home / "news.csv", synthetic_rows(30))
    changes = {"train__learning_rate": 2e-2, "train__warmup_ratio": 0.0, "train__early_stopping_patience": 2}
    cfg = load_config(make_config(home, tiny_model_dir, src, train__epochs=6, **changes))
    return cfg, train(cfg, show_progress=False)


@pytest.fixture(scope="session")
def trained_once(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    """One training per test process, shared by the tests that only read it (`trained`)."""
    home = tmp_path_factory.mktemp("trained-home")
    shutil.copytree(ROOT / "configs", home / "configs")
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, home)
        cfg, result = train_tiny_topic(home, tiny_model_dir)
    return home, cfg, result


@pytest.fixture()
def trained(trained_once, monkeypatch: pytest.MonkeyPatch):
    """The shared tiny topic model and its home: read it, never change its folder or registry."""
    home, cfg, result = trained_once
    isolate(monkeypatch, home)
    return cfg, result


@pytest.fixture()
def shared_home(trained_once) -> Path:
    return trained_once[0]


@pytest.fixture()
def trained_here(home: Path, tiny_model_dir: Path):
    """A training of this test's own, in its own home, for tests that change the model or the registry."""
    return train_tiny_topic(home, tiny_model_dir)


def torch_predictor(model_dir: Path, labels: list[str], pooling: str = "cls", batch_size: int = 32, **windows: object):
    """A fresh classifier on the tiny BERT, read through the product's predictor (its head random)."""
    import torch

    from pipeline.models.card import DecisionCard, ModelCard
    from pipeline.models.decision import Decision
    from pipeline.models.predictor import Predictor
    from pipeline.models.runtime import load_tokenizer
    from pipeline.models.torch_backend import TorchBackend, build_classifier
    from pipeline.text.windows import WindowSettings

    settings = WindowSettings(
        **{"max_length": 64, "stride": 16, "max_windows": 4, "mention_pool": pooling == "mean_mention", **windows}
    )
    model = build_classifier(str(model_dir), labels, 0.0, pooling).eval()
    backend = TorchBackend(model, load_tokenizer(str(model_dir)), settings, torch.device("cpu"), "fp32", batch_size)
    card = ModelCard(
        kind="finetuned",
        task="topic",
        labels=labels,
        text_columns=["text"],
        pair_column=None,
        pooling=pooling,
        windows=settings,
        decision=DecisionCard(combine="mean_logits"),
    )
    return Predictor(card, backend, Decision(labels, "mean_logits"))

"""Distillation: the loss, the transfer set (no test sentence in it), the soft-label cache, and a tiny
teacher distilled into a tiny student end to end (the student reuses the cache with the teacher gone)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import write_csv
from test_target_stance import make_target_config

from pipeline.core.config import TransferSourceConfig, load_config
from pipeline.core.errors import PipelineError
from pipeline.stages.distill import (
    NO_LABEL,
    distillation_loss,
    examples_digest,
    read_soft_labels,
    source_pairs,
    write_soft_labels,
)


def test_loss_is_hintons_mix_of_soft_and_gold_terms() -> None:
    torch.manual_seed(0)
    logits, teacher = torch.randn(4, 3), torch.randn(4, 3)
    target = torch.tensor([0, 2, NO_LABEL, 1])
    t = 2.0
    p_teacher = torch.softmax(teacher / t, -1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(logits / t, -1))).sum(-1).mean()
    ce = torch.nn.functional.cross_entropy(logits[[0, 1, 3]], target[[0, 1, 3]])
    assert torch.allclose(distillation_loss(logits, target, teacher, t, 1.0), t * t * kl, atol=1e-6)
    assert torch.allclose(distillation_loss(logits, target, teacher, t, 0.0), ce, atol=1e-6)
    assert torch.allclose(distillation_loss(logits, target, teacher, t, 0.3), 0.3 * t * t * kl + 0.7 * ce, atol=1e-6)
    unlabelled = torch.full((4,), NO_LABEL)
    assert torch.allclose(distillation_loss(logits, unlabelled, teacher, t, 0.5), 0.5 * t * t * kl, atol=1e-6)
    assert float(distillation_loss(teacher, unlabelled, teacher, t, 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_transfer_pairs_name_a_main_name_and_skip_held_out_sentences(tmp_path) -> None:
    story = (
        "Alice Smith opened the new bridge over the river on Monday morning. "
        "Critics said Smith spent far too much public money on the whole project. "
        "The weather was fine for most of the long and sunny day out there. "
        "Alice Smith thanked the workers who built the bridge in under two years."
    )
    path = write_csv(tmp_path / "news.csv", [{"body": story, "split": "train"}, {"body": story, "split": "test"}])
    source = TransferSourceConfig(name="news", source=str(path), where={"split": ["train"]}, text_columns=["body"])
    pairs = source_pairs(source, set(), limit=10, seed=0)
    assert [p for _, p in pairs] == ["Alice Smith", "Smith", "Alice Smith"]  # the weather sentence names no one
    held = {"critics said smith spent far too much public money on the whole project."}
    assert [s for s, _ in source_pairs(source, held, limit=10, seed=0)] == [pairs[0][0], pairs[2][0]]
    assert len(source_pairs(source, set(), limit=1, seed=0)) == 3  # the limit counts whole articles


def test_soft_labels_cache_keyed_by_the_examples(tmp_path) -> None:
    digest = examples_digest(["a b", "c d"], ["X", "Y"], ["against", "favor", "neutral"])
    assert digest != examples_digest(["a b", "c d"], ["X", "Z"], ["against", "favor", "neutral"])
    assert digest != examples_digest(["a b", "c d"], ["X", "Y"], ["favor", "against", "neutral"])
    path = tmp_path / "soft" / "t.npz"
    logits = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_soft_labels(path, digest, logits, "models:/teacher/1")
    got = read_soft_labels(path, digest)
    assert got is not None and np.array_equal(got[0], logits) and got[1] == "models:/teacher/1"
    assert read_soft_labels(path, "0" * 64) is None
    assert [p.name for p in path.parent.iterdir()] == ["t.npz"]  # written through a temporary file
    path.write_bytes(b"not an npz")
    with pytest.raises(PipelineError, match="cannot read the soft labels"):
        read_soft_labels(path, digest)


def distill_section(home, teacher: str, transfer: int = 12) -> dict:
    news = [
        {"body": f"Alice Smith praised the plan of Bob Jones today {i}. Bob Jones met Alice Smith later on {i}."}
        for i in range(10)
    ]
    source = write_csv(home / "transfer.csv", news)
    return {
        "teacher": teacher,
        "temperature": 2.0,
        "alpha": 0.5,
        "soft_labels": str(home / "soft" / "target_stance.npz"),
        "transfer_size": transfer,
        "transfer_sources": [{"name": "news", "source": str(source), "where": None, "text_columns": ["body"]}],
    }


def test_student_learns_a_tiny_teacher_and_reuses_its_soft_labels(home, tiny_model_dir) -> None:
    import mlflow

    from pipeline.models.card import read_card
    from pipeline.stages.train import train

    teacher = train(load_config(make_target_config(home, tiny_model_dir)), show_progress=False)
    kept = home / "teacher-copy"
    shutil.copytree(teacher.model_dir, kept)
    section = distill_section(home, str(kept))
    cfg = load_config(make_target_config(home, tiny_model_dir, distill=section))
    student = train(cfg, show_progress=False, register=False)
    card = read_card(student.model_dir)
    assert card.training is not None and card.training.teacher == str(kept.resolve())
    run = mlflow.get_run(student.run_id)
    assert run.data.tags["teacher"] == str(kept.resolve())
    assert run.data.metrics["transfer_rows"] == 12 and run.data.metrics["soft_labels_cached"] == 0
    assert run.data.metrics["train_windows"] == run.data.metrics["train_articles"] + 12
    assert (home / "soft" / "target_stance.npz").is_file()

    shutil.rmtree(kept)  # the teacher is gone: the cached soft labels are enough
    again = train(cfg, show_progress=False, register=False)
    assert mlflow.get_run(again.run_id).data.metrics["soft_labels_cached"] == 1

    other = load_config(make_target_config(home, tiny_model_dir, distill=distill_section(home, str(kept), transfer=5)))
    with pytest.raises(PipelineError, match=r"no soft labels for these examples .*--set distill=null"):
        train(other, show_progress=False, register=False)


@pytest.mark.e2e
def test_the_shipped_soft_labels_fit_the_shipped_config(home) -> None:
    """`make train` distils without the teacher: the committed cache must be for exactly the examples the
    shipped config builds (a changed sentence splitter, name finder or data file shows here first)."""
    from conftest import ROOT

    from pipeline.stages.distill import distillation_examples
    from pipeline.stages.prepare import load_prepared, prepare, split_targets

    raw = yaml.safe_load((ROOT / "configs" / "target_stance.yaml").read_text())
    raw["data"]["prepared_dir"] = str(home / "prepared")
    raw["distill"]["soft_labels"] = str(ROOT / raw["distill"]["soft_labels"])
    raw["distill"]["teacher"] = str(home / "no-teacher")  # found nowhere: only the cache can answer
    for entry in [*raw["data"]["extra_tests"], *raw["distill"]["transfer_sources"]]:
        entry["source"] = str((ROOT / entry["source"]).resolve())
    raw["data"]["source"] = str((ROOT / raw["data"]["source"]).resolve())
    path = home / "target_stance.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(path)
    prepare(cfg)
    dataset, card = load_prepared(cfg)
    train_split = dataset["train"]
    d = distillation_examples(
        cfg, list(card["labels"]), list(train_split["text"]), list(train_split["pair"]), list(dataset["test"]["text"])
    )
    assert d.cached and len(d.texts) == cfg.distill.transfer_size
    assert d.teacher_logits.shape == (len(train_split) + len(d.texts), 3)
    agreement = (d.teacher_logits[: len(train_split)].argmax(1) == split_targets(train_split)).mean()
    assert agreement > 0.8  # the teacher's logits belong to these rows, in this order

"""Config: every key typed and validated, dotted overrides, flattening for MLflow params."""

from pathlib import Path

import pytest

from pipeline.core.config import flatten, load_config
from pipeline.core.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_loads_and_holds_every_section():
    cfg = load_config(ROOT / "configs" / "topic.yaml")
    assert cfg.task == "topic"
    assert set(cfg.to_dict()) == {
        "task",
        "data",
        "model",
        "train",
        "runtime",
        "baseline",
        "mlflow",
        "zeroshot",
        "distill",
        "profiles",
    }


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_and_profile_loads(path):
    cfg = load_config(path)
    assert cfg.task == path.stem.removeprefix("zeroshot_")
    for name in cfg.profiles:
        load_config(path, profile=name)


def test_profile_applies_before_set_overrides():
    stance = ROOT / "configs" / "stance.yaml"
    base = load_config(stance)
    full = load_config(stance, profile="full")
    assert base.model.max_length == 128 and full.model.max_length == 512
    assert full.train.epochs == 6 and base.train.epochs == 1 and full.data == base.data
    # the CPU profile trains on shorter windows than it reads; the GPU profile on those it reads
    assert base.train.max_length == 96 and full.train.max_length is None and full.train.stride is None
    assert load_config(stance, ["model.max_length=384"], profile="full").model.max_length == 384
    with pytest.raises(PipelineError, match="no profile 'gpu'"):
        load_config(stance, profile="gpu")


def test_override_is_typed():
    cfg = load_config(
        ROOT / "configs" / "topic.yaml",
        ["train.epochs=1", "train.learning_rate=3e-5", "data.labels=[a, b]", "train.max_steps=null"],
    )
    assert cfg.train.epochs == 1
    assert cfg.train.learning_rate == pytest.approx(3e-5)
    assert cfg.data.labels == ["a", "b"]
    assert cfg.train.max_steps is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=1", "unknown config key: train.epoch"),
        ("trian.epochs=1", "unknown config key: trian"),
        ("train.epochs", "not of the form"),
        ("train.epochs=many", "train.epochs"),
        ("model.combine=median", "model.combine"),
        (
            "model.stride=300",
            r"model.stride \(300\) must be under half of model.max_length \(512\): "
            r"set model.stride to at most 255, or model.max_length to at least 602",
        ),
    ],
)
def test_bad_override_names_the_key(override, message):
    with pytest.raises(PipelineError, match=message):
        load_config(ROOT / "configs" / "topic.yaml", [override])


def test_mention_pooling_needs_a_pair_column():
    with pytest.raises(PipelineError, match=r"needs data\.pair_column"):
        load_config(ROOT / "configs" / "topic.yaml", ["model.pooling=mean_mention", "data.pair_column=null"])
    assert load_config(ROOT / "configs" / "target_stance.yaml").model.pooling == "mean_mention"


def test_unknown_key_in_file_is_named(tmp_path):
    text = (ROOT / "configs" / "topic.yaml").read_text().replace("  epochs:", "  epocs:")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(PipelineError, match=r"unknown config key: train\.epocs"):
        load_config(bad)


def test_missing_config_file():
    with pytest.raises(PipelineError, match="config file not found"):
        load_config("no/such/config.yaml")


def test_flatten_round_trips_keys():
    cfg = load_config(ROOT / "configs" / "topic.yaml")
    flat = flatten(cfg.to_dict())
    assert flat["train.epochs"] == cfg.train.epochs
    assert flat["data.text_columns"] == cfg.data.text_columns
    # every flat key addresses a value that `--set` accepts back
    again = load_config(ROOT / "configs" / "topic.yaml", [f"train.epochs={flat['train.epochs']}"])
    assert again == cfg

"""`pipeline init`: a labelled table in, a config that loads out; every bad input one line and no file."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import isolate, run_cli, synthetic_rows, write_csv

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.stages.init import init_config

MEASURED = r"\b0\.\d{3}\b|\d+(\.\d+)? min\b|\d\.\dx\b|->"  # tests/test_house.py
WORDS = {"business": "shares profit market bank", "sport": "match goal team coach", "tech": "software chip phone"}


def table(n_per_label: int = 6, words: int = 12, **extra: list[str]) -> pd.DataFrame:
    rows = [
        {"id": f"{label}-{i}", "title": f"{label} news {i}", "text": " ".join([vocab] * (words // len(vocab.split())))}
        for label, vocab in WORDS.items()
        for i in range(n_per_label)
    ]
    df = pd.DataFrame(rows).assign(label=[label for label in WORDS for _ in range(n_per_label)])
    return df.assign(**extra)


def write(tmp_path: Path, df: pd.DataFrame, name: str = "news.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def run(data: Path, output: Path, task: str = "news_topic", **kwargs):
    args = {"text_columns": ["text"], "label_column": "label", **kwargs}
    return init_config(data, task, output=output, **args)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project home and the MLflow store in tmp_path (no configs/: init writes it)."""
    isolate(monkeypatch, tmp_path)
    return tmp_path


def test_single_label_config_loads_with_the_task_name_everywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the next commands name the config relative to here
    result = run(write(tmp_path, table()), tmp_path / "configs" / "news_topic.yaml", pair_column="title")
    cfg = load_config(result.path)
    assert result.path == tmp_path / "configs" / "news_topic.yaml"
    assert cfg.task == cfg.mlflow.experiment == cfg.mlflow.registered_model == "news_topic"
    assert "news_topic" in cfg.data.prepared_dir and "news_topic" in cfg.train.output_dir
    assert cfg.data.source == "news.csv"  # relative to the project root it lies under
    assert (cfg.data.text_columns, cfg.data.pair_column, cfg.data.label_column) == (["text"], "title", "label")
    assert not cfg.data.multi_label and cfg.data.label_separator is None and cfg.data.label_columns is None
    assert cfg.data.split_column is None and cfg.data.split_fractions == {"validation": 0.15, "test": 0.15}
    assert cfg.data.id_column == "id" and cfg.data.labels is None
    assert cfg.model.tfidf_first and cfg.baseline.solver == "saga" and cfg.train.thresholds == "per_label"
    assert result.rows == 18 and result.label_counts == {"business": 6, "sport": 6, "tech": 6}
    assert result.warnings == []
    assert result.commands == [
        "pipeline train -c configs/news_topic.yaml",
        "pipeline predict -c configs/news_topic.yaml FILE",
        "pipeline evaluate -c configs/news_topic.yaml",
    ]
    text = result.path.read_text(encoding="utf-8")
    comments = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]
    assert [c for c in comments if re.search(MEASURED, c)] == []  # the house rule on configs/*.yaml
    assert text.startswith("# Task news_topic: written by `pipeline init` from news.csv")
    assert "pipeline predict -c" in text and "business 6" in text


@pytest.mark.parametrize(("words", "max_length", "max_windows"), [(12, 128, 1), (200, 256, 1), (2000, 512, 4)])
def test_the_window_holds_the_90th_percentile_of_token_lengths(tmp_path, words, max_length, max_windows):
    result = run(write(tmp_path, table(words=words)), tmp_path / "c.yaml")
    cfg = load_config(result.path)
    assert (cfg.model.max_length, cfg.model.max_windows) == (max_length, max_windows)
    assert cfg.model.stride == max_length // 4 and result.windows.max_length == max_length
    assert result.windows.p90 <= max_length or max_windows > 1
    assert cfg.train.windows == "all" and cfg.train.max_length is None


def test_multi_label_with_a_separator(tmp_path):
    df = table().assign(label=["business|tech", "sport", "tech|sport"] * 6)
    result = run(write(tmp_path, df), tmp_path / "m.yaml", multi_label=True, label_separator="|")
    cfg = load_config(result.path)
    assert cfg.data.multi_label and cfg.data.label_separator == "|" and cfg.data.label_column == "label"
    assert cfg.baseline.solver == "liblinear" and not cfg.model.tfidf_first and cfg.train.epochs == 10
    assert result.label_counts == {"business": 6, "sport": 12, "tech": 12}


def test_label_columns_mode(tmp_path):
    df = table().assign(sport=["1", "0", "true"] * 6, tech=["0", "1", "False"] * 6)
    result = run(write(tmp_path, df), tmp_path / "m.yaml", label_column=None, label_columns=["sport", "tech"])
    cfg = load_config(result.path)
    assert cfg.data.multi_label and cfg.data.label_columns == ["sport", "tech"]
    assert cfg.data.label_column is None and cfg.data.label_separator is None
    assert result.label_counts == {"sport": 12, "tech": 6}
    never = run(
        write(tmp_path, df.assign(world="0")),
        tmp_path / "n.yaml",
        label_column=None,
        label_columns=["sport", "tech", "world"],
    )
    assert never.label_counts["world"] == 0 and any("world (0)" in w for w in never.warnings)


@pytest.mark.parametrize(
    ("values", "names"),
    [(["train", "test"], ["train", "test"]), (["train", "validation", "test"], ["train", "validation", "test"])],
)
def test_a_split_column_of_the_file_is_used(tmp_path, values, names):
    result = run(write(tmp_path, table(split=values * (18 // len(values)))), tmp_path / "s.yaml")
    cfg = load_config(result.path)
    assert cfg.data.split_column == "split" and list(cfg.data.split_names) == names


def test_a_split_column_with_other_values_is_not_used(tmp_path):
    result = run(write(tmp_path, table(split=["train", "dev", "test"] * 6)), tmp_path / "s.yaml")
    assert load_config(result.path).data.split_column is None
    assert any("column 'split'" in w for w in result.warnings)


def test_warnings_for_rare_labels_and_empty_texts(tmp_path):
    df = pd.concat([table(), table(n_per_label=1).assign(label="rare", text="")], ignore_index=True)
    result = run(write(tmp_path, df), tmp_path / "w.yaml")
    assert any("fewer than 5" in w and "rare (3)" in w for w in result.warnings)
    assert any("3 of 21 rows have no text" in w for w in result.warnings)


def test_odd_column_names_survive(tmp_path):
    odd = {"text": "Body: text #1", "title": "yes", "label": "null"}
    df = table().rename(columns=odd)
    result = init_config(write(tmp_path, df), "odd", ["Body: text #1"], "null", "yes", output=tmp_path / "o.yaml")
    cfg = load_config(result.path)
    assert (cfg.data.text_columns, cfg.data.pair_column, cfg.data.label_column) == (["Body: text #1"], "yes", "null")


def test_force_replaces_and_the_default_output_is_in_configs(tmp_path):
    data = write(tmp_path, table())
    first = run(data, None)
    assert first.path == tmp_path / "configs" / "news_topic.yaml"
    assert run(data, None, force=True).path == first.path
    assert [p.name for p in first.path.parent.iterdir()] == ["news_topic.yaml"]  # no temporary file left


def test_a_source_outside_the_project_root_is_absolute(tmp_path, monkeypatch):
    data = write(tmp_path, table())
    monkeypatch.setenv("PIPELINE_HOME", str(tmp_path / "elsewhere"))
    assert load_config(run(data, tmp_path / "a.yaml").path).data.source == str(data.resolve())


BAD = {
    "missing file": ({"data": "nope.csv"}, "file not found"),
    "missing column": ({"text_columns": ["body"]}, "no column 'body' (columns: id, title, text, label)"),
    "one label": ({"df": table().assign(label="sport")}, "one label only (sport)"),
    "empty label": ({"df": table().assign(label=["a", "b", ""] * 6)}, "empty in 6 row(s), the first data row 3"),
    "separator": (
        {"df": table().assign(label=["a;b", "b", "a"] * 6), "multi_label": True, "label_separator": "|"},
        "cells look separated by ';': give --label-separator ';'",
    ),
    "not 0/1": (
        {"df": table().assign(a=["1", "2", "0"] * 6, b="0"), "label_column": None, "label_columns": ["a", "b"]},
        "'2' in data row 2",
    ),
    "task name": ({"task": "News-Topic"}, "task name 'News-Topic'"),
    "shipped task": ({"task": "topic"}, "is a shipped task"),
    "separator without multi-label": ({"label_separator": ","}, "needs --multi-label"),
    "no text column": ({"text_columns": []}, "give the text column(s)"),
    "both label options": ({"label_columns": ["a", "b"]}, "give either --label-column or --label-columns"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, case):
    kwargs, message = BAD[case]
    kwargs = dict(kwargs)
    data = write(tmp_path, kwargs.pop("df", table()))
    data = tmp_path / kwargs.pop("data") if "data" in kwargs else data
    output = tmp_path / "out" / "bad.yaml"
    with pytest.raises(PipelineError) as err:
        run(data, output, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not output.parent.exists()


def test_an_existing_output_is_kept_without_force(tmp_path):
    output = tmp_path / "mine.yaml"
    output.write_text("# my own config\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="exists: give --force"):
        run(write(tmp_path, table()), output)
    assert output.read_text(encoding="utf-8") == "# my own config\n"


def test_cli_writes_the_config_and_prints_the_next_commands(tmp_path):
    data = write(tmp_path, table())
    out = run_cli(tmp_path, "init", str(data), "--task", "news_topic", "--label-column", "label")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "configs" / "news_topic.yaml").is_file()
    assert "pipeline train -c" in out.stdout and "pipeline predict -c" in out.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["missing.csv", "--task", "news_topic", "--label-column", "label"],
        ["news.csv", "--task", "news_topic", "--label-column", "topic"],
        ["news.csv", "--task", "topic", "--label-column", "label"],
        ["news.csv", "--task", "news_topic", "--label-column", "label", "--multi-label", "--label-separator", ";"],
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_no_config(tmp_path, args):
    write(tmp_path, table().assign(label=["a,b"] * 9 + ["b"] * 9))
    out = run_cli(tmp_path, "init", *[str(tmp_path / a) if a.endswith(".csv") else a for a in args])
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr and not (tmp_path / "configs").exists()


def test_a_new_task_leaves_the_topic_champion_as_it_was(trained_here, home, tiny_model_dir):
    """init + train of a user's own task registers under its own name: `topic`'s champion stays."""
    from pipeline.stages.train import train
    from pipeline.tracking import store

    _, topic = trained_here
    data = write_csv(home / "own.csv", synthetic_rows(12, seed=5))
    result = run(data, home / "configs" / "news_topic.yaml")
    overrides = [f"model.name={tiny_model_dir}", "runtime.threads=1", "runtime.precision=fp32", "train.epochs=1"]
    own = train(load_config(result.path, overrides), show_progress=False)
    client = store.import_mlflow().MlflowClient()
    assert own.model_uri is not None and own.model_uri.startswith("models:/news_topic/")
    assert str(client.get_model_version_by_alias("topic", "champion").version) == topic.model_uri.rsplit("/", 1)[1]
    assert client.get_model_version_by_alias("news_topic", "champion") is not None

"""The bad-input suite: every command given what a user or a tester might give it.

Each case asserts the exact exit code (2), a single line on stderr that names the problem, no
traceback, and that nothing was written. The commands run in this process (`pipeline.cli.main`),
so the suite stays fast; `tests/test_predict_input.py` and others run the real executable.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, make_config, synthetic_rows, write_csv

from pipeline.cli import main

SEED = ROOT / "seeds" / "000_6abd9dfd733c7055.txt"


def invoke(capsys, monkeypatch, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["pipeline", *args])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main()
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under `roots` (but the MLflow store, which a read opens) with its size and mtime."""
    files = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.name.startswith("mlflow.db"):
                stat = path.stat()
                files[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return files


def assert_one_line_error(code: int, err: str, message: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and message in lines[0], err


# ---- inputs: (file name, bytes) written into the case folder; `{dir}` in an argument is that folder

PREDICT_FILES: dict[str, tuple[list[str], dict[str, bytes], str]] = {
    "missing file": (["{dir}/missing.txt"], {}, "file not found"),
    "empty file": (["{dir}/a.txt"], {"a.txt": b""}, "file is empty"),
    "headers only": (["{dir}/a.txt"], {"a.txt": b"date 2020-01-01\n\n  \n"}, "no article text"),
    "binary file": (["{dir}/a.txt"], {"a.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"}, "binary file"),
    "latin-1 file": (["{dir}/a.txt"], {"a.txt": "café crème brûlée".encode("latin-1")}, "not UTF-8"),
    "UTF-16 with BOM": (["{dir}/a.txt"], {"a.txt": "Shares rose today.".encode("utf-16")}, "UTF-16"),
    "UTF-16 without BOM": (["{dir}/a.txt"], {"a.txt": "Shares rose today.".encode("utf-16-le")}, "UTF-16"),
    "folder without .txt": (["{dir}/sub"], {"sub/notes.md": b"not an article"}, "no .txt files"),
    "folder named like a file": (["{dir}/sub.txt"], {"sub.txt/a.md": b"x"}, "no .txt files in folder"),
    "jsonl not JSON": (["{dir}/a.jsonl"], {"a.jsonl": b"{not json}\n"}, "not a JSON object"),
    "jsonl text a number": (["{dir}/a.jsonl"], {"a.jsonl": b'{"text": 7}\n'}, "no string field 'text'"),
    "jsonl no text field": (["{dir}/a.jsonl"], {"a.jsonl": b'{"body": "x"}\n'}, "no string field 'text'"),
    "jsonl empty text": (["{dir}/a.jsonl"], {"a.jsonl": b'{"text": "  "}\n'}, "empty 'text'"),
    "jsonl a list": (["{dir}/a.jsonl"], {"a.jsonl": b'["text"]\n'}, "no string field 'text'"),
    "jsonl empty file": (["{dir}/a.jsonl"], {"a.jsonl": b""}, "file is empty"),
    "jsonl blank lines": (["{dir}/a.jsonl"], {"a.jsonl": b"\n\n  \n"}, "no articles in"),
    "jsonl UTF-16": (["{dir}/a.jsonl"], {"a.jsonl": '{"text": "x"}\n'.encode("utf-16")}, "UTF-16"),
    "jsonl invalid UTF-8 line": (["{dir}/a.jsonl"], {"a.jsonl": b'{"text": "caf\xe9"}\n'}, "not UTF-8"),
}

PREDICT_STDIN: dict[str, tuple[list[str], bytes, str]] = {
    "stdin empty": ([], b"", "no article text"),
    "stdin binary": ([], b"\x00\x01\x02\x03binary", "binary"),
    "stdin invalid UTF-8": ([], b"caf\xe9 cr\xe8me", "not UTF-8"),
    "stdin UTF-16": ([], "Shares rose.".encode("utf-16"), "UTF-16"),
    "stdin JSONL with a bad line": ([], b'{"text": 1}\n', "no string field 'text'"),
    "stdin forced JSONL of prose": (["--stdin", "jsonl"], b"Shares rose.\n", "not a JSON object"),
    "stdin format unknown": (["--stdin", "xml"], b"Shares rose.", "--stdin 'xml'"),
}

PREDICT_OPTIONS: dict[str, tuple[list[str], str]] = {
    "no input": (["predict"], "Missing argument"),
    "unknown option": (["predict", str(SEED), "--bogus"], "No such option: --bogus"),
    "blank claim": (["predict", str(SEED), "--claim", " "], "--claim is empty"),
    "blank target": (["predict", str(SEED), "--target", ""], "--target is empty"),
    "model folder missing": (["predict", str(SEED), "--model", "/nonexistent/model"], "model not found"),
    "model alias unknown": (["predict", str(SEED), "--model", "models:/nosuch@champion"], "not found"),
    "model reference malformed": (["predict", str(SEED), "--model", "http://x/y"], "model not found"),
    "config missing": (["predict", str(SEED), "-c", "/nonexistent.yaml"], "config file not found"),
    "override without =": (["predict", str(SEED), "--set", "train.epochs"], "not of the form key.path=value"),
    "override of an unknown key": (["predict", str(SEED), "--set", "train.epoch=1"], "unknown config key"),
    "unknown profile": (["predict", str(SEED), "--profile", "nosuch"], "has no profile 'nosuch'"),
}


@pytest.fixture()
def case_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "case"
    folder.mkdir()
    return folder


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def run_case(capsys, monkeypatch, roots: list[Path], args: list[str], message: str, stdin: bytes = b"") -> None:
    before = snapshot(*roots)
    code, out, err = invoke(capsys, monkeypatch, *args, stdin=stdin)
    assert_one_line_error(code, err, message)
    assert out == "", "a failed command printed a result"
    assert snapshot(*roots) == before, "a failed command wrote files"


@pytest.mark.parametrize("name", list(PREDICT_FILES))
def test_predict_bad_files(trained, shared_home, case_dir, capsys, monkeypatch, name):
    paths, files, message = PREDICT_FILES[name]
    write_files(case_dir, files)
    args = ["predict", "--no-stance", *(p.format(dir=case_dir) for p in paths)]
    run_case(capsys, monkeypatch, [shared_home, case_dir], args, message)


@pytest.mark.parametrize("name", list(PREDICT_STDIN))
def test_predict_bad_stdin(trained, shared_home, capsys, monkeypatch, name):
    options, data, message = PREDICT_STDIN[name]
    run_case(capsys, monkeypatch, [shared_home], ["predict", "--no-stance", *options, "-"], message, stdin=data)


@pytest.mark.parametrize("name", list(PREDICT_OPTIONS))
def test_predict_bad_options(trained, shared_home, capsys, monkeypatch, name):
    args, message = PREDICT_OPTIONS[name]
    run_case(capsys, monkeypatch, [shared_home], args, message)


# ---- a model folder that was damaged, or is not what it claims: each an error that names it


def _truncate(name: str, keep: int = 100) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:keep])

    return damage


def _replace_weights_by_pickle(folder: Path) -> None:
    import torch

    (folder / "model.safetensors").unlink()
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2)}, folder / "pytorch_model.bin")


def _remove(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def _edit_card(change: dict) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        card = json.loads((folder / "pipeline.json").read_text())
        (folder / "pipeline.json").write_text(json.dumps(card | change))

    return damage


def _foreign_weights(folder: Path) -> None:
    """Weights of another architecture under the right name: transformers would start every layer at random."""
    import torch
    from safetensors.torch import save_file

    save_file({"encoder.layer.0.weight": torch.zeros(4, 4)}, str(folder / "model.safetensors"))


MODEL_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated safetensors": (_truncate("model.safetensors"), "cannot load the model in"),
    "weights replaced by a pickle": (_replace_weights_by_pickle, "pickles, never loaded"),
    "weights missing": (_remove("model.safetensors"), "has no model.safetensors"),
    "weights of another model": (_foreign_weights, "do not fit its model"),
    "truncated model card": (_truncate("pipeline.json", 40), "cannot be read"),
    "model card missing": (_remove("pipeline.json"), "no pipeline model inside"),
    "model card from a newer version": (_edit_card({"schema_version": 99}), "this pipeline reads up to"),
    "model card of an unknown kind": (_edit_card({"kind": "gpt"}), "cannot be read"),
    "truncated tokenizer": (_truncate("tokenizer.json", 50), "tokenizer"),
    "ONNX file outside the folder": (_edit_card({"onnx": "../model.onnx"}), "not a file of the model folder"),
    "ONNX file missing": (_edit_card({"onnx": "model.onnx"}), "has no ONNX export"),
    "config.json missing": (_remove("config.json"), "has no config.json"),
}


@pytest.mark.parametrize("name", list(MODEL_DAMAGE))
def test_a_damaged_model_folder_is_one_line(trained, shared_home, tmp_path, capsys, monkeypatch, name):
    _, result = trained
    folder = tmp_path / "model"
    shutil.copytree(result.model_dir, folder)
    damage, message = MODEL_DAMAGE[name]
    damage(folder)
    args = ["predict", "--no-stance", "--model", str(folder), str(SEED)]
    run_case(capsys, monkeypatch, [shared_home, folder], args, message)


def test_a_truncated_onnx_export_is_one_line(trained, shared_home, tmp_path, capsys, monkeypatch):
    from pipeline.stages.export import export_onnx

    _, result = trained
    folder = tmp_path / "model"
    shutil.copytree(result.model_dir, folder)
    export_onnx(folder, False, ["match goal team", "shares profit"], None)
    _truncate("model.onnx", 500)(folder)
    args = ["predict", "--no-stance", "--model", str(folder), str(SEED)]
    run_case(capsys, monkeypatch, [shared_home, folder], args, "is not a readable ONNX model")


# ---- evaluate: labelled files


def _csv(rows: list[dict[str, str]]) -> bytes:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(r[c] for c in header) for r in rows]
    return ("\n".join(lines) + "\n").encode()


GOOD_ROWS = [{"text": "match goal team", "label": "sport"}, {"text": "shares profit", "label": "business"}]

EVALUATE_FILES: dict[str, tuple[list[str], dict[str, bytes], str]] = {
    "data missing": (["--data", "{dir}/x.csv"], {}, "file not found"),
    "data a folder": (["--data", "{dir}/sub"], {"sub/a.csv": b"x"}, "is a folder"),
    "no text column": (["--data", "{dir}/x.csv"], {"x.csv": b"body,label\nx,sport\n"}, "has no column 'text'"),
    "no label column": (["--data", "{dir}/x.csv"], {"x.csv": b"text,y\nx,sport\n"}, "has no column 'label'"),
    "labels unknown to the model": (
        ["--data", "{dir}/x.csv"],
        {"x.csv": b"text,label\nmatch goal,football\n"},
        "labels the model does not know: football",
    ),
    "header only": (["--data", "{dir}/x.csv"], {"x.csv": b"text,label\n"}, "no rows in"),
    "unsupported type": (["--data", "{dir}/x.xlsx"], {"x.xlsx": b"PK\x03\x04"}, "unsupported file type"),
    "UTF-16 csv": (["--data", "{dir}/x.csv"], {"x.csv": _csv(GOOD_ROWS).decode().encode("utf-16")}, "UTF-16"),
    "latin-1 csv": (["--data", "{dir}/x.csv"], {"x.csv": "text,label\ncafé,sport\n".encode("latin-1")}, "UTF-8"),
    "corrupt parquet": (["--data", "{dir}/x.parquet"], {"x.parquet": b"PAR1 garbage"}, "cannot read"),
    "corrupt csv.gz": (["--data", "{dir}/x.csv.gz"], {"x.csv.gz": b"\x1f\x8b garbage"}, "cannot read"),
    "no row with text and label": (
        ["--data", "{dir}/x.csv"],
        {"x.csv": b'text,label\n"",sport\nabc,""\n'},
        "no rows with both text and label",
    ),
    "malformed label map": (["--label-map", "sport"], {}, "is not of the form data_label=model_label"),
    "unknown extra test set": (["--on", "nosuch"], {}, "no extra test set 'nosuch'"),
    "unseen targets of a topic task": (
        ["--unseen-targets", "--data", "{dir}/x.csv"],
        {"x.csv": _csv(GOOD_ROWS)},
        "no target column",
    ),
}


@pytest.mark.parametrize("name", list(EVALUATE_FILES))
def test_evaluate_bad_files(trained, shared_home, case_dir, capsys, monkeypatch, name):
    options, files, message = EVALUATE_FILES[name]
    write_files(case_dir, files)
    args = ["evaluate", "-c", str(shared_home / "config.yaml"), *(o.format(dir=case_dir) for o in options)]
    run_case(capsys, monkeypatch, [shared_home, case_dir], args, message)


# ---- prepare and train: configs and overrides


@pytest.fixture()
def tiny_config(home: Path, tiny_model_dir: Path) -> Path:
    return make_config(home, tiny_model_dir, write_csv(home / "news.csv", synthetic_rows(5)))


TRAIN_OVERRIDES: dict[str, tuple[str, list[str], str]] = {
    "source missing": ("prepare", ["data.source=/nonexistent.csv"], "data source not found"),
    "source a folder": ("prepare", ["data.source={home}"], "is a folder"),
    "negative learning rate": ("train", ["train.learning_rate=-0.001"], "train.learning_rate"),
    "zero epochs": ("train", ["train.epochs=0"], "train.epochs"),
    "batch size not a number": ("train", ["train.batch_size=abc"], "train.batch_size"),
    "window under the stride": ("train", ["model.stride=40"], "model.stride (40) must be under half"),
    "window too short": ("train", ["model.max_length=8"], "model.max_length"),
    "unknown combine": ("train", ["model.combine=median"], "model.combine"),
    "unknown device": ("train", ["runtime.device=tpu"], "unknown device 'tpu'"),
    "encoder missing": ("train", ["model.name=/nonexistent/encoder"], "cannot load"),
    "unknown key": ("train", ["data.nosuch=1"], "unknown config key: data.nosuch"),
    "a section set to a number": ("train", ["train=3"], "train"),
    "split fractions over 1": ("prepare", ["data.split_fractions={{validation: 0.6, test: 0.6}}"], "split_fractions"),
    "class weights unknown": ("train", ["train.class_weights=heavy"], "train.class_weights"),
}


@pytest.mark.parametrize("name", list(TRAIN_OVERRIDES))
def test_prepare_and_train_bad_settings(home, tiny_config, capsys, monkeypatch, name):
    command, sets, message = TRAIN_OVERRIDES[name]
    args = [command, "-c", str(tiny_config), *[x for s in sets for x in ("--set", s.format(home=home))]]
    run_case(capsys, monkeypatch, [home], args, message)


def _one_label_source(home: Path) -> str:
    rows = [dict(r, label="sport") for r in synthetic_rows(5)]
    return str(write_csv(home / "one.csv", rows))


CONFIG_FILES: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "config not YAML": (lambda home, cfg: _write(home / "c.yaml", b"task: [unclosed\n"), "is not valid YAML"),
    "config binary": (lambda home, cfg: _write(home / "c.yaml", b"\x00\x01\x02"), "config file"),
    "config a list": (lambda home, cfg: _write(home / "c.yaml", b"- a\n- b\n"), "does not hold a mapping"),
    "config a folder": (lambda home, cfg: home, "config file not found"),
    "config with a key missing": (lambda home, cfg: _drop(cfg, "train", "epochs"), "train.epochs"),
    "config with an unknown key": (lambda home, cfg: _add(cfg, "train", "epoch", 3), "train.epoch"),
    "config with a wrong type": (lambda home, cfg: _add(cfg, "train", "epochs", "three"), "train.epochs"),
    "one label only": (lambda home, cfg: _add(cfg, "data", "source", _one_label_source(home)), "label"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _drop(cfg: Path, section: str, key: str) -> Path:
    raw = yaml.safe_load(cfg.read_text())
    del raw[section][key]
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    return cfg


def _add(cfg: Path, section: str, key: str, value: object) -> Path:
    raw = yaml.safe_load(cfg.read_text())
    raw[section][key] = value
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    return cfg


@pytest.mark.parametrize("name", list(CONFIG_FILES))
def test_bad_config_files(home, tiny_config, capsys, monkeypatch, name):
    make, message = CONFIG_FILES[name]
    config = make(home, tiny_config)
    command = "prepare" if name == "one label only" else "train"
    run_case(capsys, monkeypatch, [home], [command, "-c", str(config)], message)


# ---- the other commands


def _other_cases(home: Path, tiny_config: Path) -> dict[str, tuple[list[str], str]]:
    news, existing = str(home / "news.csv"), home / "out"
    return {
        "train --resume with nothing to resume": (["train", "-c", str(tiny_config), "--resume"], "nothing to resume"),
        "train on an unknown engine": (["train", "-c", str(tiny_config), "--engine", "ray"], "--engine 'ray'"),
        "init: file missing": (["init", str(home / "x.csv"), "--task", "mine", "--label-column", "label"], "not found"),
        "init: column missing": (["init", news, "--task", "mine", "--label-column", "topic"], "no column 'topic'"),
        "init: task name": (["init", news, "--task", "My Task", "--label-column", "label"], "task"),
        "init: shipped name": (["init", news, "--task", "topic", "--label-column", "label"], "topic"),
        "export without a format": (["export", "-c", str(tiny_config)], "say which format: --onnx"),
        "export of a missing model": (
            ["export", "-c", str(tiny_config), "--onnx", "--model", "/nonexistent"],
            "model not found",
        ),
        "batch: input missing": (["batch", str(home / "none.parquet"), "-o", str(home / "o")], "no input"),
        "batch: output exists": (["batch", news, "-o", str(existing)], "exists"),
        "batch: unknown engine": (["batch", news, "-o", str(home / "o"), "--engine", "dask"], "--engine 'dask'"),
        "batch: chunk of 0 rows": (["batch", news, "-o", str(home / "o"), "--chunk-rows", "0"], "--chunk-rows"),
        "serve: port 0": (["serve", "--port", "0"], "--port"),
        "serve: missing model": (["serve", "--model", "/nonexistent"], "model not found"),
        "promote without a task": (["promote"], "name the task"),
        "promote an unknown task": (["promote", "nosuch"], "config file not found"),
        "log-model of a folder that is not a model": (["log-model", str(home)], "is not a trained model folder"),
        "runs with a missing config": (["runs", "-c", str(home / "none.yaml")], "config file not found"),
        "unknown command": (["trian"], "No such command 'trian'"),
    }


CASE_NAMES = list(_other_cases(Path("/x"), Path("/x/c.yaml")))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_other_commands(home, tiny_config, capsys, monkeypatch, name):
    (home / "out").mkdir()
    args, message = _other_cases(home, tiny_config)[name]
    run_case(capsys, monkeypatch, [home], args, message)


def test_the_suite_has_at_least_70_cases():
    n = (
        len(PREDICT_FILES)
        + len(PREDICT_STDIN)
        + len(PREDICT_OPTIONS)
        + len(MODEL_DAMAGE)
        + 1
        + len(EVALUATE_FILES)
        + len(TRAIN_OVERRIDES)
        + len(CONFIG_FILES)
        + len(CASE_NAMES)
    )
    assert n >= 70, n

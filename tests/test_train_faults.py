"""Training under faults: a lock lets one training of a task run at a time, a training killed with
SIGKILL resumes to the model an uninterrupted one makes, and nothing half-written is taken as state."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_config, run_cli, synthetic_rows, write_csv

from pipeline.core.errors import PipelineError
from pipeline.core.lock import hold_lock


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_lock_is_held_once_removed_after_and_taken_over_from_a_dead_holder(tmp_path, capsys):
    path = tmp_path / "models" / "topic.lock"
    with hold_lock(path, "training of topic", "or not"):
        held = json.loads(path.read_text())
        assert held["pid"] == os.getpid() and held["host"] and held["since"]
        # a second holder (flock is per open file, so this process stands for another)
        busy = rf"^another training of topic is running \(pid {os.getpid()}, since "
        with pytest.raises(PipelineError, match=busy), hold_lock(path, "training of topic", "or not"):
            pass
        assert path.exists()  # the refused one does not remove the holder's lock
    assert not path.exists()

    with pytest.raises(ValueError), hold_lock(path, "training of topic", "or not"):
        raise ValueError("a failing training")
    assert not path.exists()  # removed on an exception too

    gone = dead_pid()
    path.write_text(json.dumps({"pid": gone, "host": os.uname().nodename, "since": "2025-01-01T00:00:00+00:00"}))
    with hold_lock(path, "training of topic", "or not"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    note = capsys.readouterr().err
    assert f"pid {gone}" in note and "taken over" in note


def fault_config(home: Path, tiny_model_dir: Path, epochs: int = 6) -> Path:
    source = write_csv(home / "news.csv", synthetic_rows(40))
    return make_config(
        home,
        tiny_model_dir,
        source,
        train__epochs=epochs,
        train__learning_rate=3e-3,
        train__warmup_ratio=0.2,
        train__early_stopping_patience=epochs,  # every epoch runs: the kill lands inside the training
    )


def start_training(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PIPELINE_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "train", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, proc: subprocess.Popen[str], what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the training ended before {what}: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} in {timeout} s")
        time.sleep(0.05)


def test_a_training_killed_mid_epoch_resumes_to_the_uninterrupted_model(home, tiny_model_dir):
    import mlflow
    import torch
    from safetensors.torch import load_file

    config = str(fault_config(home, tiny_model_dir))
    state, lock = home / "model.resume", home / "model.lock"
    proc = start_training(home, "-c", config)
    # killed inside epoch 2 or later, once epoch 1's state is saved
    wait_for(lambda: (state / "resume.json").is_file(), proc, "saved state")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(lock.read_text())["pid"] == proc.pid  # left behind by the killed process
    saved = json.loads((state / "resume.json").read_text())
    # what a save cut short leaves: never read as the state
    half = state / f".epoch-{saved['progress']['epoch'] + 1}.partial"
    half.mkdir(exist_ok=True)
    (half / "model.safetensors").write_bytes(b"half")
    (home / ".model.resume.partial").mkdir()

    resumed = run_cli(home, "train", "-c", config, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"pid {proc.pid}" in resumed.stderr and "taken over" in resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert not lock.exists() and not state.exists()

    whole = run_cli(home, "train", "-c", config, "--set", f"train.output_dir={home / 'whole'}", "--no-register")
    assert whole.returncode == 0, whole.stderr[-3000:]
    # the same report line: best epoch, validation and test scores
    assert resumed.stdout.splitlines()[:2] == whole.stdout.splitlines()[:2]
    a, b = load_file(str(home / "model" / "model.safetensors")), load_file(str(home / "whole" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    card = json.loads((home / "model" / "pipeline.json").read_text())
    assert card["training"]["complete"] is True
    assert card["decision"] == json.loads((home / "whole" / "pipeline.json").read_text())["decision"]

    runs = mlflow.search_runs(experiment_names=["topic"])
    continued = runs[runs["tags.resumed_after_epoch"].notna()]  # the killed run, continued
    assert list(continued["status"]) == ["FINISHED"] and int(continued["tags.resumed_after_epoch"].iloc[0]) >= 1
    assert [str(v.version) for v in mlflow.MlflowClient().search_model_versions("name='topic'")] == ["1"]


def test_a_second_training_of_a_task_is_refused_in_one_line(home, tiny_model_dir):
    import mlflow

    config = str(fault_config(home, tiny_model_dir, epochs=3))
    lock = home / "model.lock"
    first = start_training(home, "-c", config, "--set", "train.seed=1")
    wait_for(lambda: lock.is_file() and lock.read_text().strip() != "", first, "lock")
    second = run_cli(home, "train", "-c", config, "--set", "train.seed=2")
    _, first_stderr = first.communicate(timeout=600)

    assert second.returncode == 2
    [line] = second.stderr.strip().splitlines()
    assert line.startswith(f"error: another training of topic is running (pid {first.pid}, since "), line
    assert first.returncode == 0, first_stderr[-3000:]
    assert "Traceback" not in first_stderr
    assert not lock.exists()
    versions = mlflow.MlflowClient().search_model_versions("name='topic'")
    assert [str(v.version) for v in versions] == ["1"]
    assert list(mlflow.search_runs(experiment_names=["topic"])["params.train.seed"]) == ["1"]


def test_log_model_refuses_a_folder_whose_training_did_not_finish(home, tiny_model_dir, monkeypatch):
    import pipeline.stages.finalise as finalise
    from pipeline.core.config import load_config
    from pipeline.stages.train import train

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt  # the job stopped once the epochs were done, before the decision was fitted

    src = write_csv(home / "news.csv", synthetic_rows(10))
    cfg = load_config(make_config(home, tiny_model_dir, src))
    monkeypatch.setattr(finalise, "fit_temperature", stopped)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, show_progress=False)
    assert not (home / "model.lock").exists()
    card_path = home / "model" / "pipeline.json"
    card = json.loads(card_path.read_text())
    assert card["training"]["complete"] is False
    refused = run_cli(home, "log-model", str(home / "model"))
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: {home / 'model'} is an unfinished training") and "train --resume" in line, line

    del card["training"]["complete"]  # a card written before the field
    card_path.write_text(json.dumps(card))
    refused = run_cli(home, "log-model", str(home / "model"))
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: {home / 'model'} was written before model cards said") and "--resume" in line

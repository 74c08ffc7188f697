"""Against a real `mlflow server`: the commands work over HTTP, the UI shows the runs in headless
Chromium, a server that is down fails in one line, and a model trained meanwhile is logged later."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT, make_config, synthetic_rows, write_csv

pytestmark = pytest.mark.browser
SCREENSHOTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(folder: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real tracking server on a free loopback port, with its own store and artifact folder."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination",
        str(folder / "server-artifacts"),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not start in 60 s")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    with running_server(tmp_path / "server") as (url, _):
        yield url


def cli(home: Path, uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    # no system/* metrics: on a slow machine a run lasts past the first 10 s sample, and those rows,
    # sorted before test_*, push test_macro_f1 out of the compare page's virtualised metrics table
    env = {**os.environ, "PIPELINE_HOME": str(home), "MLFLOW_TRACKING_URI": uri}
    env["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "3600"
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env, timeout=300
    )


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("PIPELINE_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def browse(url: str, profile: Path, screenshot: Path | None = None, expect: str | None = None) -> str:
    """The page's DOM after its JavaScript ran, in headless Chromium; optionally a screenshot.
    With `expect`, loads the page up to three times until that text is in it: on a loaded
    machine the UI's API calls can outlast Chromium's virtual-time budget."""
    base = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=20000",
        "--window-size=1400,1800",
    ]
    if screenshot is not None:
        subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=120, check=True)
    for _ in range(3):
        done = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
        if expect is None or expect in done.stdout:
            break
    return done.stdout


def test_commands_and_ui_against_a_real_tracking_server(server, home, tiny_model_dir, tmp_path):
    import mlflow

    from pipeline.tracking.store import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, runs_page

    src = write_csv(home / "news.csv", synthetic_rows(20))
    config = str(make_config(home, tiny_model_dir, src, train__epochs=2, train__learning_rate=2e-2))
    # the server takes any credentials; they go as basic auth, and no output may show them
    uri = server.replace("http://", "http://user:secret@")
    first = cli(home, uri, "train", "-c", config)
    second = cli(home, uri, "train", "-c", config, "--set", "train.learning_rate=0.001", "--no-register")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    evaluated = cli(home, uri, "evaluate", "-c", config, "--json")
    predicted = cli(home, uri, "predict", "-c", config, "--json", "--no-stance", str(src))
    assert evaluated.returncode == 0 and predicted.returncode == 0, evaluated.stderr + predicted.stderr
    for done in (first, second, evaluated, predicted):
        assert "secret" not in done.stdout + done.stderr

    mlflow.set_tracking_uri(server)
    experiment = mlflow.get_experiment_by_name("topic")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    runs = mlflow.search_runs([experiment.experiment_id], filter_string="tags.stage = 'train'")
    assert len(runs) == 2
    ids = list(runs["run_id"])
    f1 = dict(zip(runs["run_id"], runs["metrics.test_macro_f1"], strict=True))

    exp = experiment.experiment_id
    runs_table = browse(f"{server}/#/experiments/{exp}/runs", tmp_path / "p1", expect="evaluate-topic-test")
    assert runs_table.count("train-topic") >= 2 and "evaluate-topic-test" in runs_table
    assert "test_macro_f1" not in runs_table  # the UI's default columns have no metric
    # MLflow 3.17's UI opens an experiment on its GenAI overview unless told it is model training
    first_tab = browse(
        f"{server}/#/experiments/{exp}?workflowType=machine_learning", tmp_path / "p4", expect="train-topic"
    )
    assert "<title>Runs" in first_tab and "train-topic" in first_tab
    key_metrics = browse(f"{server}/{runs_page(exp)}", tmp_path / "p5", expect="test_macro_f1")
    assert "Key metrics" in key_metrics and "test_macro_f1" in key_metrics
    assert key_metrics.count("train-topic") >= 2

    SCREENSHOTS.mkdir(exist_ok=True)
    compare_url = (
        f"{server}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
        f"&experiments={urllib.parse.quote(json.dumps([exp]))}"
    )
    compare = browse(compare_url, tmp_path / "p2", SCREENSHOTS / "mlflow_compare_runs.png", expect="test_macro_f1")
    assert all(run_id in compare for run_id in ids) and "test_macro_f1" in compare
    for value in f1.values():  # the UI shows metrics rounded to 3 decimals
        assert f"{round(value, 3):g}" in compare

    run_page = browse(
        f"{server}/#/experiments/{exp}/runs/{ids[0]}/artifacts/test/confusion_matrix.png",
        tmp_path / "p3",
        expect='alt="test/confusion_matrix.png"',
    )
    assert 'alt="test/confusion_matrix.png"' in run_page
    for artifact in ("reliability_diagram.png", "confusion_matrix_normalized.png", "mistakes.json"):
        assert artifact in run_page
    assert (SCREENSHOTS / "mlflow_compare_runs.png").stat().st_size > 10_000


def test_a_server_that_is_down_fails_in_one_line(home, tiny_model_dir):
    src = write_csv(home / "news.csv", synthetic_rows(10))
    config = str(make_config(home, tiny_model_dir, src))
    started = time.perf_counter()
    failed = cli(home, f"http://127.0.0.1:{free_port()}", "train", "-c", config)
    assert failed.returncode == 2 and time.perf_counter() - started < 60
    assert failed.stderr.startswith("error: MLflow tracking server") and len(failed.stderr.strip().splitlines()) == 1


def test_a_server_lost_during_training_loses_no_training(server, home, tiny_model_dir, tmp_path):
    """The server dies after the run started: training goes on through every local step (the epochs,
    the decision fitted on validation, test scored), the complete model stays on disk, and `pipeline
    log-model` logs and registers it on a server that is up: the model an uninterrupted training makes."""
    from mlflow.tracking import MlflowClient

    src = write_csv(home / "news.csv", synthetic_rows(20))
    config = str(
        make_config(
            home, tiny_model_dir, src, train__epochs=40, train__early_stopping_patience=40, model__tfidf_blend=True
        )
    )
    with running_server(tmp_path / "doomed") as (doomed, doomed_proc):
        env = {**os.environ, "PIPELINE_HOME": str(home), "MLFLOW_TRACKING_URI": doomed}
        training = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "train", "-c", config],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        client = MlflowClient(tracking_uri=doomed)
        for _ in range(240):
            experiment = client.get_experiment_by_name("topic")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and "train_loss" in runs[0].data.metrics:  # the first epoch is done and logged
                break
            time.sleep(0.2)
        doomed_proc.terminate()
        doomed_proc.wait(timeout=30)
        _, stderr = training.communicate(timeout=600)
    assert training.returncode == 2
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: the MLflow store failed") and "pipeline log-model" in last, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "epoch 40:" in stderr, "every epoch ran after the server went away"  # progress goes to stderr
    assert "note: the MLflow store failed" in stderr and "training goes on without logging" in stderr
    card = json.loads((home / "model" / "pipeline.json").read_text())
    assert card["training"]["epoch"] >= 1 and card["training"]["complete"] is True
    assert card["decision"]["temperature"] != 1.0 and card["decision"]["tfidf_blend"] is not None
    assert not (home / "model.resume").exists() and not (home / "model.lock").exists()

    logged = cli(home, server, "log-model", str(home / "model"))
    assert logged.returncode == 0, logged.stderr
    assert "registered topic @champion" in logged.stdout

    # the same config trained with a store that stays up: the same decision, the same test score
    whole = cli(
        home, f"sqlite:///{tmp_path / 'up.db'}", "train", "-c", config, "--set", f"train.output_dir={home / 'whole'}"
    )
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert card["decision"] == json.loads((home / "whole" / "pipeline.json").read_text())["decision"]
    [test_line] = [line for line in whole.stdout.splitlines() if line.startswith("test: macro-F1 ")]
    macro_f1 = test_line.split()[2].rstrip(",")
    assert f"test macro-F1 {macro_f1} " in logged.stdout, (logged.stdout, test_line)

"""MLflow hygiene: experiments open on their runs table with the key metrics, label names are safe in
metric keys, runs of dead processes are marked KILLED, credentials never reach a message, and a
locked sqlite store is waited for and then reported in one line."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli

from pipeline.tracking import store
from pipeline.tracking.log import LABEL_KEYS_TAG, label_keys, log_metrics
from pipeline.tracking.store import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    KEY_METRICS_VIEW,
    KILLED_NOTE,
    OWNER_HOST,
    OWNER_PID,
    OWNER_PROCESS_START,
    VIEW_TAG_PREFIX,
    StoreBusy,
)

BUSY = "error: the MLflow store is busy (database is locked): "


def test_a_new_experiment_is_a_model_training_one_with_the_key_metrics_view(home):
    import mlflow

    experiment = mlflow.get_experiment(store.use_experiment("topic"))
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    view = json.loads(experiment.tags[VIEW_TAG_PREFIX + KEY_METRICS_VIEW])
    assert view["name"] == "Key metrics" and isinstance(view["createdAt"], int)
    columns = json.loads(view["state"])["selectedColumns"]
    assert "metrics.`test_macro_f1`" in columns and "metrics.`val_macro_f1`" in columns
    assert store.runs_page(experiment.experiment_id).endswith(
        f"/runs?workflowType=machine_learning&viewStateShareKey={KEY_METRICS_VIEW}"
    )


def test_an_old_experiment_gets_the_tags_and_a_chosen_kind_is_kept(home):
    import mlflow

    old = mlflow.create_experiment("old")
    chosen = mlflow.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert EXPERIMENT_KIND_TAG not in mlflow.get_experiment(old).tags
    store.use_experiment("old")
    store.use_experiment("chosen")
    assert mlflow.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert VIEW_TAG_PREFIX + KEY_METRICS_VIEW in mlflow.get_experiment(old).tags
    assert mlflow.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_label_keys_are_safe_readable_and_distinct():
    from mlflow.utils.validation import validate_param_and_metric_name

    labels = ["Sci/Tech", "Sci Tech", "Sci_Tech", "World", "a/b/c", "U.S.", "Économie", "/", "x" * 300]
    keys = label_keys(labels)
    assert keys["Sci_Tech"] == "Sci_Tech"  # a label that is safe keeps its name, whatever comes first
    assert keys["Sci/Tech"] == "Sci_Tech_2" and keys["Sci Tech"] == "Sci_Tech_3"
    assert keys["World"] == "World" and keys["a/b/c"] == "a_b_c" and keys["U.S."] == "U.S."
    assert label_keys(["Sci/Tech", "World"]) == {"Sci/Tech": "Sci_Tech", "World": "World"}
    assert len(set(keys.values())) == len(labels)
    for name in keys.values():
        key = f"test_roc_auc_{name}"
        assert "/" not in key and " " not in key and validate_param_and_metric_name(key) and len(key) <= 250


def test_per_label_metrics_go_under_safe_keys_and_keep_the_real_label(home):
    import mlflow

    from pipeline.core.metrics import compute_metrics

    labels = ["Sci/Tech", "Sci Tech", "World"]
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    probs = rng.dirichlet(np.ones(3), size=60) * 0.5 + np.eye(3)[y] * 0.5
    store.use_experiment("topic")
    with mlflow.start_run() as run:
        log_metrics(compute_metrics(y, probs, labels), "test")
    logged = mlflow.get_run(run.info.run_id)
    keys = set(logged.data.metrics)
    assert {"test_f1_Sci_Tech", "test_f1_Sci_Tech_2", "test_f1_World", "test_precision_Sci_Tech"} <= keys
    assert not any("/" in key or " " in key for key in keys)
    assert json.loads(logged.data.tags[LABEL_KEYS_TAG]) == {"Sci_Tech": "Sci/Tech", "Sci_Tech_2": "Sci Tech"}
    table = mlflow.load_table("test/per_class.json", run_ids=[run.info.run_id])
    assert dict(zip(table["label"], table["metric_key_label"], strict=True)) == label_keys(labels)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def start_owned_run(experiment_id: str, **tags: str) -> str:
    """A RUNNING run with this process's owner tags, changed by `tags`."""
    from mlflow.tracking import MlflowClient

    run = MlflowClient().create_run(experiment_id, tags=store.owner_tags() | tags)
    return str(run.info.run_id)


def status(run_id: str) -> str:
    import mlflow

    return str(mlflow.get_run(run_id).info.status)


def test_a_run_whose_process_was_killed_is_marked_killed_on_the_next_start(home):
    import mlflow

    code = (
        "import time; from pipeline.tracking import store; m = store.import_mlflow(); "
        "store.use_experiment('topic'); print(m.start_run().info.run_id, flush=True); time.sleep(600)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    training = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=home)
    try:
        assert training.stdout is not None
        killed = training.stdout.readline().strip()
        assert status(killed) == "RUNNING"
        assert mlflow.get_run(killed).data.tags[OWNER_PID] == str(training.pid)
    finally:
        training.send_signal(signal.SIGKILL)
        training.wait(timeout=30)
    experiment = mlflow.get_experiment_by_name("topic").experiment_id
    alive = start_owned_run(experiment)
    reused = start_owned_run(experiment, **{OWNER_PROCESS_START: "another-boot:1"})  # this pid, another process
    elsewhere = start_owned_run(experiment, **{OWNER_HOST: "another-host", OWNER_PID: str(dead_pid())})
    untagged = mlflow.tracking.MlflowClient().create_run(experiment).info.run_id  # no owner tags

    store.use_experiment("topic")

    assert status(killed) == "KILLED" and status(reused) == "KILLED"
    assert (
        f"process {training.pid} on {socket.gethostname()} had ended" in mlflow.get_run(killed).data.tags[KILLED_NOTE]
    )
    assert mlflow.get_run(killed).info.end_time is not None
    assert status(alive) == status(elsewhere) == status(untagged) == "RUNNING"


def test_a_killed_run_that_is_resumed_runs_again_and_finishes(home):
    import mlflow

    experiment = store.use_experiment("topic")
    interrupted = start_owned_run(experiment, **{OWNER_PID: str(dead_pid())})
    store.use_experiment("topic")  # what `pipeline train --resume` does first
    assert status(interrupted) == "KILLED"

    with mlflow.start_run(run_id=interrupted):  # how train.py resumes it
        assert status(interrupted) == "RUNNING"
        log = store.TolerantLog()
        log(mlflow.log_metric, "train_loss", 0.5, step=2)
        assert log.error is None
        assert mlflow.get_run(interrupted).data.tags[OWNER_PID] == str(os.getpid())  # claimed by this process
        store.use_experiment("topic")  # another command starts meanwhile
        assert status(interrupted) == "RUNNING"
    assert status(interrupted) == "FINISHED"


def cli_with_uri(home: Path, uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIPELINE_HOME": str(home), "MLFLOW_TRACKING_URI": uri}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_credentials_in_the_tracking_uri_never_reach_a_message(home):
    (home / "article.txt").write_text("The match ended 2-1 after a late goal.", encoding="utf-8")
    uri = "http://user:secret@127.0.0.1:9/"
    for args in (
        ("runs",),
        ("predict", "--no-stance", str(home / "article.txt")),
        ("promote", "topic"),
        ("log-model", str(home)),
    ):
        failed = cli_with_uri(home, uri, *args)
        output = failed.stdout + failed.stderr
        assert failed.returncode == 2, (args, output)
        assert "secret" not in output and "user:" not in output, (args, output)
        assert "Traceback" not in output and len(failed.stderr.strip().splitlines()) == 1, (args, output)
    assert "http://***@127.0.0.1:9/ does not answer" in cli_with_uri(home, uri, "runs").stderr


def test_mask_credentials_masks_user_and_password_of_any_uri():
    text = "API request to http://user:p%40ss@host:5000/api failed; postgresql://u:pa@ss@db/mlflow, sqlite:///a/b.db"
    masked = store.mask_credentials(text)
    assert "p%40ss" not in masked and "pa@ss" not in masked and "user" not in masked and "u:" not in masked
    assert "http://***@host:5000/api" in masked and "postgresql://***@db/mlflow" in masked
    assert "sqlite:///a/b.db" in masked


@contextmanager
def server_with_basic_auth(user: str, password: str) -> Iterator[int]:
    """A /health endpoint that answers only with these credentials, on a free loopback port."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/health" and self.headers.get("Authorization") == expected
            self.send_response(200 if ok else 401)
            self.end_headers()
            self.wfile.write(b"OK" if ok else b"no")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_server_check_sends_the_uri_credentials_and_masks_them(monkeypatch):
    with server_with_basic_auth("user", "secret") as port:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:secret@127.0.0.1:{port}/")
        store.check_server()  # answers: the credentials went as basic auth
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:wrong@127.0.0.1:{port}/")
        with pytest.raises(store.StoreUnavailable) as failed:
            store.check_server()
    assert "wrong" not in str(failed.value) and f"http://***@127.0.0.1:{port}/" in str(failed.value)


@contextmanager
def locked(db: Path, release_after: float | None = None) -> Iterator[None]:
    """Another connection holds an exclusive transaction on `db` (released after `release_after` s)."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")
    timer = threading.Timer(release_after, conn.rollback) if release_after is not None else None
    if timer is not None:
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.join()
        if conn.in_transaction:
            conn.rollback()
        conn.close()


def test_a_locked_store_fails_a_read_after_waiting_in_one_line(home, monkeypatch):
    store.use_experiment("topic")
    (home / "article.txt").write_text("The match ended 2-1 after a late goal.", encoding="utf-8")
    monkeypatch.setenv("PIPELINE_STORE_WAIT_SECONDS", "2")
    with locked(home / "mlflow.db"):
        started = time.perf_counter()
        with pytest.raises(StoreBusy, match="database is locked"):
            store.read_sqlite("SELECT count(*) FROM experiments")
        assert time.perf_counter() - started >= 1.9, "it waited before it failed"
        for args in (("runs",), ("predict", "--no-stance", str(home / "article.txt"))):
            failed = run_cli(home, *args)
            assert failed.returncode == 2, failed.stderr
            assert failed.stderr.startswith(BUSY) and len(failed.stderr.strip().splitlines()) == 1, failed.stderr


def test_a_lock_released_during_the_wait_lets_the_read_succeed(home, monkeypatch):
    store.use_experiment("topic")
    monkeypatch.setenv("PIPELINE_STORE_WAIT_SECONDS", "60")
    with locked(home / "mlflow.db", release_after=1.5):
        started = time.perf_counter()
        assert store.read_sqlite("SELECT name FROM experiments WHERE name = 'topic'") == [("topic",)]
        assert time.perf_counter() - started >= 1.4
    with locked(home / "mlflow.db", release_after=3.0):
        listed = run_cli(home, "runs")
    assert listed.returncode == 0, listed.stderr


def test_a_wait_that_is_not_a_number_fails_in_one_line(home, monkeypatch):
    monkeypatch.setenv("PIPELINE_STORE_WAIT_SECONDS", "soon")
    failed = run_cli(home, "runs")
    assert failed.returncode == 2 and failed.stderr.startswith("error: PIPELINE_STORE_WAIT_SECONDS='soon'")

"""Distributed training: processes launched by torchrun (gloo on CPU) train one model together; the
main process alone prepares the data first, tracks, evaluates and registers."""

import subprocess
import sys

import pytest
from conftest import make_config, synthetic_rows, write_csv

from pipeline.stages.train_data import process_share


@pytest.mark.parametrize("n_batches", [0, 1, 6, 7])
def test_every_process_gets_as_many_batches_and_all_of_them_are_trained(n_batches):
    batches = [[i] for i in range(n_batches)]
    shares = [process_share(batches, index, 2) for index in range(2)]
    assert len(shares[0]) == len(shares[1]) == -(-n_batches // 2)
    assert {b[0] for share in shares for b in share} == set(range(n_batches))
    assert process_share(batches, 0, 1) == batches


def test_two_processes_train_one_model_and_log_one_run(home, tiny_model_dir):
    import mlflow

    source = write_csv(home / "news.csv", synthetic_rows(30))
    # batches of 10 over the ~63 training rows: an odd number of batches, so the padding is exercised
    config = make_config(home, tiny_model_dir, source, train__epochs=2, train__batch_size=10, train__learning_rate=2e-2)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launch, "-m", "pipeline", "train", "-c", str(config)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    # one report, from the main process
    assert done.stdout.count("best epoch") == 1
    assert done.stdout.count("test: macro-F1") == 1

    runs = mlflow.search_runs(experiment_names=["topic"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["tags.processes"] == "2"
    assert run["metrics.test_macro_f1"] > 0.5, run["metrics.test_macro_f1"]  # chance is 0.33
    [version] = mlflow.MlflowClient().search_model_versions("name='topic'")
    assert str(version.version) == "1"
    assert (home / "model" / "pipeline.json").is_file()
    # the main process alone held the training's lock (the other would have been refused), and let it go
    assert not (home / "model.lock").exists()


def test_two_processes_killed_resume_from_each_process_s_own_random_states(home, tiny_model_dir):
    import json
    import time

    import psutil

    source = write_csv(home / "news.csv", synthetic_rows(30))
    config = make_config(home, tiny_model_dir, source, train__epochs=4, train__batch_size=10, train__learning_rate=2e-2)
    config = str(config)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    killed = subprocess.Popen(
        [*launch, "-m", "pipeline", "train", "-c", config],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    info = home / "model.resume" / "resume.json"
    for _ in range(2400):
        if info.is_file() or killed.poll() is not None:
            break
        time.sleep(0.1)
    # the trainers first (torchrun starts them in sessions of their own), then the launcher
    launcher = psutil.Process(killed.pid)
    for process in [*launcher.children(recursive=True), launcher]:
        process.kill()
    killed.wait(timeout=60)
    saved = json.loads(info.read_text())
    assert saved["processes"] == 2 and saved["progress"]["stop"] is False
    folder = home / "model.resume" / saved["state"]
    assert {"random_states_0.json", "random_states_1.json"} <= {p.name for p in folder.iterdir()}

    resumed = subprocess.run(
        [*launch, "-m", "pipeline", "train", "-c", config, "--resume"], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = subprocess.run(
        [*launch, "-m", "pipeline", "train", "-c", config, "--set", f"train.output_dir={home / 'whole'}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    # the same best epoch, validation and test scores as the training that was never killed
    assert resumed.stdout.splitlines()[:2] == whole.stdout.splitlines()[:2]
    assert not (home / "model.resume").exists() and not (home / "model.lock").exists()

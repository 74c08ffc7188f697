"""Train stage, resuming: a training stopped after an epoch and continued with `resume` ends with the
weights, scores and MLflow run an uninterrupted training has."""

import pytest
from conftest import make_config, synthetic_rows, write_csv

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.stages.resume import resume_dir


class Preempted(Exception):
    """Stands for the job being killed between two epochs."""


def killed(*args, **kwargs):
    raise Preempted


def interrupted_in_epoch_2(cfg, monkeypatch) -> None:
    """Train `cfg` until the job is killed at the start of epoch 2 (a state written after epoch 1)."""
    import pipeline.stages.optimise as train_module
    from pipeline.stages.train import train

    batch_order = train_module.length_grouped_batches
    calls = []

    def killed_in_epoch_2(*args, **kwargs):
        calls.append(1)
        return killed() if len(calls) == 2 else batch_order(*args, **kwargs)

    monkeypatch.setattr(train_module, "length_grouped_batches", killed_in_epoch_2)
    with pytest.raises(Preempted):
        train(cfg, show_progress=False)
    monkeypatch.setattr(train_module, "length_grouped_batches", batch_order)


def tiny_config(home, tiny_model_dir, output: str, overrides: tuple[str, ...] = ()):
    source = home / "news.csv"
    if not source.exists():
        write_csv(source, synthetic_rows(30))
    path = make_config(
        home,
        tiny_model_dir,
        source,
        train__epochs=3,
        train__learning_rate=3e-3,  # validation improves every epoch: the best weights are the last epoch's
        train__warmup_ratio=0.2,  # the schedule must be restored mid-way
        train__early_stopping_patience=5,
    )
    return load_config(path, [f"train.output_dir={home / output}", *overrides])


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_an_interrupted_training_resumed_ends_as_an_uninterrupted_one(home, tiny_model_dir, monkeypatch):
    import mlflow
    import torch

    from pipeline.stages.train import train

    whole = train(tiny_config(home, tiny_model_dir, "whole"), show_progress=False)

    cfg = tiny_config(home, tiny_model_dir, "halves")
    interrupted_in_epoch_2(cfg, monkeypatch)
    state = resume_dir(home / "halves")
    assert (state / "resume.json").is_file()

    resumed = train(cfg, show_progress=False, resume=True)

    assert not state.exists()  # removed once the training is complete
    assert whole.best_epoch == 3
    assert (resumed.best_epoch, resumed.val_macro_f1) == (whole.best_epoch, whole.val_macro_f1)
    assert resumed.test_metrics["macro_f1"] == whole.test_metrics["macro_f1"]
    a, b = weights(home / "whole"), weights(home / "halves")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)

    # one run for the two halves, its curves whole
    client = mlflow.MlflowClient()
    run = client.get_run(resumed.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_after_epoch"] == "1"
    curve = [m.value for m in client.get_metric_history(resumed.run_id, "val_macro_f1_epoch")]
    assert curve == [m.value for m in client.get_metric_history(whole.run_id, "val_macro_f1_epoch")]
    assert len(curve) == 3
    assert len(mlflow.search_runs(experiment_names=["topic"])) == 2


def test_resume_refuses_without_a_state_or_with_another_config(home, tiny_model_dir, monkeypatch):
    from pipeline.stages.train import train

    cfg = tiny_config(home, tiny_model_dir, "model")
    with pytest.raises(PipelineError, match="nothing to resume"):
        train(cfg, show_progress=False, resume=True)

    interrupted_in_epoch_2(cfg, monkeypatch)
    # the runtime may change between the halves, the training settings may not
    changed = tiny_config(home, tiny_model_dir, "model", ("train.learning_rate=0.001", "runtime.threads=2"))
    with pytest.raises(PipelineError, match=r"config differs from the interrupted run's in train\.learning_rate$"):
        train(changed, show_progress=False, resume=True)


def test_a_job_killed_during_the_final_evaluation_resumes_there(home, tiny_model_dir, monkeypatch):
    import pipeline.stages.finalise as finalise
    import pipeline.stages.optimise as train_module
    from pipeline.stages.train import train

    cfg = tiny_config(home, tiny_model_dir, "model")
    fit_temperature = finalise.fit_temperature
    monkeypatch.setattr(finalise, "fit_temperature", killed)
    with pytest.raises(Preempted):
        train(cfg, show_progress=False)
    monkeypatch.setattr(finalise, "fit_temperature", fit_temperature)
    epochs_run = []
    batch_order = train_module.length_grouped_batches
    monkeypatch.setattr(
        train_module, "length_grouped_batches", lambda *a, **k: epochs_run.append(1) or batch_order(*a, **k)
    )
    resumed = train(cfg, show_progress=False, resume=True)
    assert epochs_run == []  # no epoch trained again
    assert resumed.best_epoch == 3
    assert resumed.test_metrics["n"] > 0
    assert not resume_dir(home / "model").exists()


class Planted:
    """Unpickled, it creates the file `marker`: a stand-in for any code a planted pickle would run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_never_unpickles_a_file_planted_in_its_state(home, tiny_model_dir, monkeypatch, capsys):
    import json
    import pickle

    from pipeline.stages.train import train

    cfg = tiny_config(home, tiny_model_dir, "model")
    interrupted_in_epoch_2(cfg, monkeypatch)
    state = resume_dir(home / "model")
    marker = home / "planted-code-ran"
    payload = pickle.dumps(Planted(marker))
    pickle.loads(pickle.dumps(Planted(home / "the-plant-works")))
    assert (home / "the-plant-works").exists()  # the payload does run when unpickled
    # what accelerate's save_state wrote, and torch.save's suffixes, beside and inside the epoch's state
    [epoch] = [p for p in state.iterdir() if p.is_dir()]
    names = ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin", "model.pt")
    for folder in (state, epoch):
        for name in names:
            (folder / name).write_bytes(payload)

    resumed = train(cfg, show_progress=False, resume=True)
    assert resumed.best_epoch == 3
    assert not marker.exists()
    assert "left unread: resume loads no pickle" in capsys.readouterr().err

    # a state of the pickled format (no "format" in resume.json) is refused, not read
    interrupted_in_epoch_2(cfg, monkeypatch)
    saved = json.loads((state / "resume.json").read_text())
    del saved["format"]
    (state / "resume.json").write_text(json.dumps(saved))
    with pytest.raises(PipelineError, match="saved by an earlier pipeline, as pickles, which are not loaded"):
        train(cfg, show_progress=False, resume=True)
    assert not marker.exists()

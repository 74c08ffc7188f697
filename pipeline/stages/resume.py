"""Train stage, resuming: the state saved after every epoch, so that `pipeline train --resume`
continues an interrupted training (a preempted cluster job, a lost machine) where it stopped.

The state folder sits beside the model folder (`models/topic.resume/`). Its `resume.json` names the
last complete epoch's state (`epoch-N/`) and holds the scores so far, the batch-order generator and
the MLflow run to continue; `epoch-N/` holds the weights and the optimizer's tensors (safetensors),
the optimizer's settings, the schedule and every process's random states (JSON), and the best
epoch's validation logits (.npy). Nothing in it is a pickle, so a file planted there cannot run
code when a training resumes. The folder is removed when the training ends.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import Config
from pipeline.core.errors import PipelineError
from pipeline.core.io import write_json_atomic

RESUME_INFO = "resume.json"
STATE_FORMAT = 2  # 1 was accelerate's save_state, of pickles: never loaded
BEST_VAL_LOGITS = "best_val_logits.npy"
MODEL_WEIGHTS = "model.safetensors"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_REST = "optimizer.json"  # the parameter groups (learning rate, betas, ...) and any non-tensor state
SCHEDULER = "scheduler.json"
SCALER = "scaler.json"  # fp16 only: the gradient scaler
STATE_NAME = re.compile(r"^epoch-\d+$")
UNREAD = (".pkl", ".pickle", ".bin", ".pt", ".pth")  # what accelerate's save_state wrote, and torch.save writes


def resume_dir(model_dir: Path) -> Path:
    return model_dir.with_name(model_dir.name + ".resume")


def random_states_file(process_index: int) -> str:
    return f"random_states_{process_index}.json"


@dataclass
class ResumeInfo:
    """Where the interrupted training stood after its last complete epoch."""

    epoch: int
    step: int
    best_f1: float
    best_epoch: int
    bad_epochs: int
    stop: bool  # the training loop had ended (early stop, last epoch, step budget): evaluation is left
    run_id: str
    rng_state: list[Any]  # random.Random.getstate() of the batch order, as JSON lists
    best_val: dict[str, Any]

    def batch_rng_state(self) -> tuple[Any, ...]:
        version, internal, gauss_next = self.rng_state
        return (version, tuple(internal), gauss_next)


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    # the runtime may change between the two halves (another machine, more threads, a GPU)
    return {k: v for k, v in cfg.items() if k != "runtime"}


def config_differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two resolved configs."""
    keys = sorted(set(saved) | set(now))
    out: list[str] = []
    for key in keys:
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def require_resume_state(state_dir: Path) -> None:
    if not (state_dir / RESUME_INFO).is_file():
        raise PipelineError(
            f"nothing to resume: {state_dir} not found (it is written after each epoch and removed when training ends)"
        )


def _saved(state_dir: Path) -> dict[str, Any]:
    require_resume_state(state_dir)
    path = state_dir / RESUME_INFO
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise PipelineError(f"cannot resume: {path} cannot be read ({err}); train anew without --resume") from None
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise PipelineError(
            f"cannot resume: {state_dir} was saved by an earlier pipeline, as pickles, which are not loaded; "
            "train anew without --resume"
        )
    return saved


def state_folder(state_dir: Path) -> Path:
    """The folder of the last complete epoch's state, as resume.json names it."""
    name = str(_saved(state_dir).get("state"))
    folder = state_dir / name
    if not STATE_NAME.match(name) or not folder.is_dir():
        raise PipelineError(f"cannot resume: {state_dir} names no saved epoch ({name!r}); train anew without --resume")
    return folder


def read_resume_info(state_dir: Path, cfg: Config, data_digest: str, processes: int) -> ResumeInfo:
    """The saved state's info, after checking it belongs to this config, these data and as many processes."""
    saved = _saved(state_dir)
    if not {"config", "data_digest", "processes", "progress"} <= set(saved):
        raise PipelineError(f"cannot resume: {state_dir / RESUME_INFO} is incomplete; train anew without --resume")
    changed = config_differences(_comparable(saved["config"]), _comparable(cfg.to_dict()))
    if changed:
        raise PipelineError(f"cannot resume: the config differs from the interrupted run's in {', '.join(changed)}")
    if saved["data_digest"] != data_digest:
        raise PipelineError("cannot resume: the prepared data differ from the interrupted run's")
    if saved["processes"] != processes:
        raise PipelineError(
            f"cannot resume: the interrupted training ran in {saved['processes']} processes, this one in {processes} "
            "(each would train on other batches)"
        )
    folder = state_folder(state_dir)
    needed = [MODEL_WEIGHTS, OPTIMIZER_TENSORS, OPTIMIZER_REST, SCHEDULER, BEST_VAL_LOGITS]
    needed += [random_states_file(i) for i in range(processes)]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise PipelineError(f"cannot resume: {folder} has no {', '.join(missing)}; train anew without --resume")
    ignored = sorted(p.name for p in (*state_dir.iterdir(), *folder.iterdir()) if p.name.endswith(UNREAD))
    if ignored:
        print(f"note: {', '.join(ignored)} in {state_dir} left unread: resume loads no pickle", file=sys.stderr)
    return ResumeInfo(**saved["progress"])


def saved_val_logits(state_dir: Path) -> np.ndarray:
    """The validation logits of the best epoch so far (temperature and blends are fitted on them)."""
    return np.load(state_folder(state_dir) / BEST_VAL_LOGITS, allow_pickle=False)


def save_resume_state(
    accelerator: Any,
    state_dir: Path,
    cfg: Config,
    data_digest: str,
    info: ResumeInfo,
    logits: np.ndarray,
    training: tuple[Any, Any, Any],
) -> None:
    """Write this epoch's state (`training`: the model, optimizer and scheduler) into a folder of its
    own, then point resume.json at it: an interruption at any moment leaves the previous epoch's state
    whole and named. Every process calls this (each saves its own random states)."""
    model, optimizer, scheduler = training
    main = accelerator.is_main_process
    name = f"epoch-{info.epoch}"
    partial = state_dir / f".{name}.partial"
    if main:
        state_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
    accelerator.wait_for_everyone()
    write_json_atomic(partial / random_states_file(accelerator.process_index), random_states())
    if main:
        from safetensors.torch import save_model

        save_model(accelerator.unwrap_model(model), str(partial / MODEL_WEIGHTS))
        save_optimizer(optimizer, partial)
        write_json_atomic(partial / SCHEDULER, scheduler.state_dict())
        scaler = getattr(accelerator, "scaler", None)
        if scaler is not None and scaler.is_enabled():
            write_json_atomic(partial / SCALER, scaler.state_dict())
        np.save(partial / BEST_VAL_LOGITS, logits, allow_pickle=False)
    accelerator.wait_for_everyone()
    if main:
        folder = state_dir / name
        # resume.json names an earlier epoch, never this one: a folder of this name is a save cut short
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
        saved = {
            "format": STATE_FORMAT,
            "state": name,
            "processes": accelerator.num_processes,
            "config": cfg.to_dict(),
            "data_digest": data_digest,
            "progress": asdict(info),
        }
        write_json_atomic(state_dir / RESUME_INFO, saved)  # the switch to this epoch's state
        for old in state_dir.iterdir():
            if old.is_dir() and old.name != name:
                shutil.rmtree(old)
            elif not old.is_dir() and old.name != RESUME_INFO:
                old.unlink()
    accelerator.wait_for_everyone()


def restore_resume_state(accelerator: Any, state_dir: Path, training: tuple[Any, Any, Any]) -> None:
    """Put the saved weights, optimizer, schedule and this process's random states back (`training`: the
    model, optimizer and scheduler as `build_setup` made them)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    model, optimizer, scheduler = training
    folder = state_folder(state_dir)
    try:
        load_model(accelerator.unwrap_model(model), str(folder / MODEL_WEIGHTS))
        load_optimizer(optimizer, folder)
        schedule = _read_json(folder / SCHEDULER)
        if set(schedule) != set(scheduler.state_dict()):
            raise ValueError("the schedule's saved fields differ from this schedule's")
        scheduler.load_state_dict(schedule)
        scaler = getattr(accelerator, "scaler", None)
        if scaler is not None and scaler.is_enabled() and (folder / SCALER).is_file():
            scaler.load_state_dict(_read_json(folder / SCALER))
        set_random_states(_read_json(folder / random_states_file(accelerator.process_index)))
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError, OSError, SafetensorError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise PipelineError(f"cannot resume from {folder} ({reason}); train anew without --resume") from None


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def save_optimizer(optimizer: Any, folder: Path) -> None:
    """The optimizer's per-parameter tensors (AdamW's moments and step) as safetensors, keyed
    `<parameter index>.<name>`; its parameter groups and anything else as JSON."""
    import torch
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    rest: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                rest.setdefault(str(index), {})[key] = value
    save_file(tensors, str(folder / OPTIMIZER_TENSORS))
    write_json_atomic(folder / OPTIMIZER_REST, {"param_groups": state["param_groups"], "state": rest})


def load_optimizer(optimizer: Any, folder: Path) -> None:
    from safetensors.torch import load_file

    saved = _read_json(folder / OPTIMIZER_REST)
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in load_file(str(folder / OPTIMIZER_TENSORS)).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in saved["state"].items():
        state.setdefault(int(index), {}).update(values)
    now = optimizer.state_dict()["param_groups"]
    if len(now) != len(saved["param_groups"]):
        raise ValueError("the optimizer's parameter groups differ from the saved ones")
    # JSON made the tuples (AdamW's betas) lists: each value back in the type this optimizer has
    groups = [
        {k: tuple(v) if isinstance(group.get(k), tuple) else v for k, v in saved_group.items()}
        for group, saved_group in zip(now, saved["param_groups"], strict=True)
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def random_states() -> dict[str, Any]:
    """This process's random generators (Python's, numpy's, torch's on the CPU and any GPU) as JSON lists."""
    import torch

    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # never used unless initialised
        states["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    if torch.backends.mps.is_available():
        states["mps"] = torch.mps.get_rng_state().tolist()
    return states


def set_random_states(states: dict[str, Any]) -> None:
    import torch

    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
    if "cuda" in states and torch.cuda.is_available():
        for device, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(torch.tensor(state, dtype=torch.uint8), device)
    if "mps" in states and torch.backends.mps.is_available():
        torch.mps.set_rng_state(torch.tensor(states["mps"], dtype=torch.uint8))

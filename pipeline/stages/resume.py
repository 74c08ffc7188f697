"""Train stage, resuming: the state saved after every epoch, so that `pipeline train --resume`
continues an interrupted training (a preempted cluster job, a lost machine) where it stopped.

The state folder sits beside the model folder (`models/topic.resume/`) and holds what the next
epoch needs: the weights, the optimizer and scheduler, every process's random states (dropout
masks), the batch-order generator, the scores so far, and the MLflow run to continue. It is
removed when the training ends.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import Config
from pipeline.core.errors import PipelineError
from pipeline.core.io import replace_dir, write_json_atomic

RESUME_INFO = "resume.json"
BEST_VAL_LOGITS = "best_val_logits.npy"


def resume_dir(model_dir: Path) -> Path:
    return model_dir.with_name(model_dir.name + ".resume")


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


def read_resume_info(state_dir: Path, cfg: Config, data_digest: str) -> ResumeInfo:
    """The saved state's info, after checking it belongs to this config and these data."""
    path = state_dir / RESUME_INFO
    if not path.is_file():
        raise PipelineError(
            f"nothing to resume: {state_dir} not found (it is written after each epoch and removed when training ends)"
        )
    saved = json.loads(path.read_text(encoding="utf-8"))
    changed = config_differences(_comparable(saved["config"]), _comparable(cfg.to_dict()))
    if changed:
        raise PipelineError(f"cannot resume: the config differs from the interrupted run's in {', '.join(changed)}")
    if saved["data_digest"] != data_digest:
        raise PipelineError("cannot resume: the prepared data differ from the interrupted run's")
    return ResumeInfo(**saved["progress"])


def saved_val_logits(state_dir: Path) -> np.ndarray:
    """The validation logits of the best epoch so far (temperature and blends are fitted on them)."""
    return np.load(state_dir / BEST_VAL_LOGITS)


def save_resume_state(
    accelerator: Any, state_dir: Path, cfg: Config, data_digest: str, info: ResumeInfo, logits: np.ndarray
) -> None:
    """Write the state into a folder beside `state_dir`, then swap it in: an interruption while
    saving leaves the previous epoch's state whole. Every process calls this (each saves its own
    random states)."""
    partial = state_dir.with_name(f".{state_dir.name}.partial")
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if main:
        np.save(partial / BEST_VAL_LOGITS, logits)
        saved = {"config": cfg.to_dict(), "data_digest": data_digest, "progress": asdict(info)}
        write_json_atomic(partial / RESUME_INFO, saved)
    accelerator.wait_for_everyone()
    if main:
        replace_dir(partial, state_dir)
    accelerator.wait_for_everyone()

"""Where and how a model runs: pretrained weights by name, devices, precision, threads.

torch and transformers are imported inside the functions: the ONNX predict path imports this
module and must not pay their seconds of start-up.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.config import resolve_path
from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


def resolve_model_name(name: str) -> str:
    """`minilm` or `mpnet` -> the packaged encoder's folder (pipeline/models/packaged.py); a folder; else a hub id."""
    from pipeline.models.packaged import packaged_folder

    packaged = packaged_folder(name)
    if packaged is not None:
        return str(packaged)
    local = resolve_path(name)
    if local.exists():
        return str(local)
    return name


def quiet_transformers() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    quiet_transformers()
    from transformers import AutoTokenizer

    try:
        # a packaged folder, a local folder, or the hub id (at the revision) the user's config names
        return AutoTokenizer.from_pretrained(resolve_model_name(name), trust_remote_code=False)  # nosec B615
    except OSError as err:
        raise PipelineError(f"cannot load tokenizer {name!r}: {str(err).splitlines()[0]}") from None


def pick_device(spec: str) -> torch.device:
    import torch

    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise PipelineError(f"unknown device {spec!r} (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PipelineError(f"device {spec!r} asked for, but CUDA is not available")
    return device


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """bf16 matrix instructions: AMX (Intel) or AVX-512 BF16 (AMD Zen 4 and others). On such CPUs
    bf16 autocast about doubled MiniLM's inference speed here, with the same labels."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_precision(spec: str, device: torch.device) -> str:
    """bf16 where the hardware runs it fast (CUDA with bf16, CPUs with bf16 instructions), else fp32."""
    if spec != "auto":
        return spec
    import torch

    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    import torch

    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def gpu_present() -> bool:
    """An NVIDIA driver is loaded (checked without importing torch, which costs seconds)."""
    return Path("/proc/driver/nvidia/version").exists()

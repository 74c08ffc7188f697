"""Loading a model folder's weights so that a damaged or foreign folder is an error that names it.

transformers starts a missing weight at random and only warns (and its warnings are silenced
here), so a folder whose weights were replaced would predict with exit 0: every weight must be
there and fit. Safetensors only: a pickled `pytorch_model.bin` could run code and is never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError

WEIGHTS_FILE = "model.safetensors"
# a folder someone sent runs none of its own code, unpickles nothing and fetches nothing from the hub
LOCAL_ONLY = {"trust_remote_code": False, "local_files_only": True}


def load_weights(model_class: Any, folder: Path) -> Any:
    """`model_class.from_pretrained(folder)`, checked: safetensors present and whole, no weight missing,
    unexpected or of the wrong shape."""
    if not (folder / "config.json").is_file():
        raise PipelineError(f"{folder} has no config.json (the model's architecture); retrain the model")
    if not (folder / WEIGHTS_FILE).is_file():
        pickled = sorted(p.name for p in [*folder.glob("*.bin"), *folder.glob("*.pt"), *folder.glob("*.pth")])
        also = f" (only {', '.join(pickled)}: pickles, never loaded)" if pickled else ""
        raise PipelineError(f"{folder} has no {WEIGHTS_FILE}{also}; retrain the model or give its folder")
    try:
        # a local folder, not the hub: no revision to pin
        model, info = model_class.from_pretrained(folder, use_safetensors=True, output_loading_info=True, **LOCAL_ONLY)
    except Exception as err:  # safetensors, torch and transformers raise many types for a damaged file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise PipelineError(f"cannot load the model in {folder}: {reason}; retrain it") from None
    wrong = {kind: info.get(kind) or [] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(wrong.values()):
        named = "; ".join(f"{k.replace('_', ' ')} {', '.join(sorted(map(str, v))[:3])}" for k, v in wrong.items() if v)
        raise PipelineError(f"the weights in {folder} do not fit its model ({named}); retrain it")
    return model


def load_tokenizer_from(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, **LOCAL_ONLY)  # nosec B615
    except Exception as err:  # tokenizers raises a bare Exception for a corrupt tokenizer.json
        raise PipelineError(f"cannot load the tokenizer in {folder} ({type(err).__name__}); retrain it") from None

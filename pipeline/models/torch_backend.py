"""The PyTorch backend: a transformers sequence classifier that turns token windows into logits.

torch and transformers are imported inside the functions (and mean_pool/fast_bert, which import
them at their top, only from here): predict's ONNX path loads this module's neighbours without them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.models.runtime import autocast, pick_device, pick_precision, quiet_transformers, resolve_model_name
from pipeline.models.weights import load_tokenizer_from, load_weights
from pipeline.text.windows import (
    CPU_BATCH_TOKENS,
    Windows,
    WindowSettings,
    encode_windows,
    length_batches,
    padded_arrays,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def classifier_class(pooling: str, model_type: str = "bert") -> Any:
    """`cls`: the architecture's own classification head; `mean`: mean of token embeddings (BERT and
    MPNet); `mean_mention`: that mean beside the mean of the pair's mentions in the text."""
    if pooling in ("mean", "mean_mention"):
        from pipeline.models.mean_pool import mean_pool_class  # it imports torch at its top

        return mean_pool_class(model_type)
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification


def build_classifier(
    name: str, labels: list[str], attention_dropout: float, pooling: str, multi_label: bool = False
) -> PreTrainedModel:
    """A pretrained encoder with a new classification head for `labels` (a sigmoid a label when `multi_label`:
    transformers' `problem_type`, so the saved config.json says so to anyone who loads it)."""
    quiet_transformers()
    from transformers import AutoConfig

    try:
        path = resolve_model_name(name)
        # a base model's own code never runs, and its weights are read as safetensors, never unpickled
        # the hub id (if any) is the one the user's config names, at the revision they chose
        config = AutoConfig.from_pretrained(  # nosec B615
            path,
            trust_remote_code=False,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            attention_probs_dropout_prob=attention_dropout,
            problem_type="multi_label_classification" if multi_label else "single_label_classification",
        )
        if pooling == "mean_mention":
            config.mention_pooling = True  # saved in config.json: the head's width follows it on load
        return classifier_class(pooling, config.model_type).from_pretrained(
            path, config=config, use_safetensors=True, trust_remote_code=False
        )
    except OSError as err:
        raise PipelineError(f"cannot load model {name!r}: {str(err).splitlines()[0]}") from None


def model_type_of(folder: Path) -> str:
    """The `model_type` config.json names (BERT when it cannot be read: loading then names the fault)."""
    try:
        return str(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type") or "bert")
    except (OSError, ValueError, AttributeError):
        return "bert"


def pad_batch(windows: Windows, idx: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Windows `idx`, padded to the longest: the model's keyword inputs as tensors."""
    import torch

    return {k: torch.from_numpy(v) for k, v in padded_arrays(windows, idx, pad_id).items()}


def run_windows(
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    windows: Windows,
    width: int,
    pad_id: int,
    batch_size: int,
    device: torch.device,
    precision: str,
) -> np.ndarray:
    """`forward(batch)` of every window, in float32; batches of similar length keep padding small."""
    import torch

    out = np.zeros((len(windows), width), dtype=np.float32)
    with torch.inference_mode(), autocast(device, precision):
        max_tokens = CPU_BATCH_TOKENS if device.type == "cpu" else None
        for idx in length_batches([len(x) for x in windows.input_ids], batch_size, max_tokens):
            batch = pad_batch(windows, idx, pad_id)
            out[idx] = forward({k: v.to(device) for k, v in batch.items()}).float().cpu().numpy()
    return out


def window_logits(
    model: PreTrainedModel, windows: Windows, pad_id: int, batch_size: int, device: torch.device, precision: str
) -> np.ndarray:
    """Logits of every window, in eval mode (the model's mode is restored after)."""
    was_training = model.training
    model.eval()
    try:
        width = int(model.config.num_labels or 0)
        return run_windows(lambda batch: model(**batch).logits, windows, width, pad_id, batch_size, device, precision)
    finally:
        model.train(was_training)


@dataclass
class TorchBackend:
    """A fine-tuned classifier with its tokenizer and the window settings it reads with."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    settings: WindowSettings
    device: torch.device
    precision: str
    batch_size: int = 32

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)

    def windows(self, texts: list[str], pairs: list[str] | None) -> Windows:
        return encode_windows(self.tokenizer, texts, pairs, self.settings)

    def logits(self, windows: Windows) -> np.ndarray:
        return window_logits(self.model, windows, self.pad_id, self.batch_size, self.device, self.precision)

    def window_logits(self, texts: list[str], pairs: list[str] | None) -> tuple[np.ndarray, Windows]:
        windows = self.windows(texts, pairs)
        return self.logits(windows), windows

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    @classmethod
    def load(
        cls, folder: Path, pooling: str, settings: WindowSettings, device: str, precision: str, batch_size: int
    ) -> TorchBackend:
        quiet_transformers()
        dev = pick_device(device)
        # safetensors only, every weight checked, no custom code, nothing fetched (pipeline/models/weights.py)
        model = load_weights(classifier_class(pooling, model_type_of(folder)), folder).to(dev)
        tokenizer = load_tokenizer_from(folder)
        model.eval()
        return cls(model, tokenizer, settings, dev, pick_precision(precision, dev), batch_size)

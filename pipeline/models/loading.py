"""`load_model(folder)`: the model card read, and the backend it names put together with its Decision.

ONNX Runtime where the folder has an export and the machine has no GPU (no torch import), else
PyTorch; the zero-shot encoders for zero-shot folders (an embedding one on ONNX Runtime too, once
exported). The backends import torch, transformers and onnxruntime only when they load, so
importing this module costs none of them.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.models.card import EMBEDDING, FINETUNED, read_card, write_card
from pipeline.models.decision import Decision
from pipeline.models.onnx_backend import OnnxBackend, OnnxEmbeddingBackend
from pipeline.models.predictor import Backend, Predictor
from pipeline.models.runtime import gpu_present, set_threads
from pipeline.models.torch_backend import TorchBackend
from pipeline.models.zeroshot import EmbeddingBackend, NliBackend


def load_model(
    folder: Path, device: str = "auto", precision: str = "auto", batch_size: int = 32, threads: int = 0
) -> Predictor:
    """The model in `folder`, fine-tuned or zero-shot, as its card says. A fine-tuned model with an
    ONNX export runs on ONNX Runtime on a CPU (no torch import)."""
    card = read_card(folder)
    decision = Decision.from_card(card, folder)
    on_cpu = device == "cpu" or (device == "auto" and not gpu_present())
    if card.onnx and Path(card.onnx).name != card.onnx:  # a received card must not point outside its folder
        raise PipelineError(f"{folder}: the model card's ONNX file {card.onnx!r} is not a file of the model folder")
    if card.kind == FINETUNED and card.onnx and on_cpu and decision.gate is None:
        onnx = OnnxBackend.load(folder, folder / card.onnx, card.windows, len(card.labels), threads, batch_size)
        return Predictor(card, onnx, decision)
    if card.kind == EMBEDDING and card.onnx and on_cpu:
        embedding = OnnxEmbeddingBackend.load(folder, folder / card.onnx, card, threads, batch_size)
        return Predictor(card, embedding, decision)
    set_threads(threads)
    backend: Backend
    if card.kind == FINETUNED:
        backend = TorchBackend.load(folder, card.pooling, card.windows, device, precision, batch_size)
    elif card.kind == EMBEDDING:
        backend = EmbeddingBackend.load(folder, card, device, precision, batch_size)
    else:
        backend = NliBackend.load(folder, card, device, batch_size)
    return Predictor(card, backend, decision)


def load_torch(folder: Path, device: str = "auto", precision: str = "auto", batch_size: int = 32) -> Predictor:
    """A fine-tuned or zero-shot embedding model on PyTorch even where it has an ONNX export (export and
    bench compare against it)."""
    card = read_card(folder)
    backend: TorchBackend | EmbeddingBackend
    if card.kind == FINETUNED:
        backend = TorchBackend.load(folder, card.pooling, card.windows, device, precision, batch_size)
    elif card.kind == EMBEDDING:
        backend = EmbeddingBackend.load(folder, card, device, precision, batch_size)
    else:
        raise PipelineError(f"{folder} holds a {card.kind} model: it runs on PyTorch only and cannot be exported yet")
    return Predictor(card, backend, Decision.from_card(card, folder))


def save_model(model: Predictor, folder: Path) -> None:
    """A model folder: the backend's weights and tokenizer, the decision's files, and the card with the
    decision as it is now."""
    if not isinstance(model.backend, TorchBackend | EmbeddingBackend | NliBackend):
        raise PipelineError("an ONNX-backed model is saved by exporting its PyTorch model")
    model.backend.save(folder)
    model.decision.save(folder)
    write_card(folder, model.card.model_copy(update={"decision": model.decision.to_card()}))

"""Stage 7, export: an ONNX copy (optionally dynamic int8) of a fine-tuned model, or of a zero-shot
embedding model's encoder, kept in its model folder.

`predict` and `evaluate` then run it with ONNX Runtime and the `tokenizers` library, without
importing torch or transformers. The export is checked on the task's validation articles: the
labels must match the PyTorch model on at least `MIN_AGREEMENT` of them, else nothing is kept.
With `model.tfidf_first`, a blended model also gets, from the same validation texts, the lowest
threshold at which letting the TF-IDF model answer alone (where its top probability reaches it)
changes none of the blend's labels: above it the transformer is not run at all.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.io import owned_temp_dir
from pipeline.models.card import EMBEDDING, write_card
from pipeline.models.loading import load_torch
from pipeline.models.onnx_backend import OnnxBackend, OnnxEmbeddingBackend
from pipeline.models.predictor import Backend, Predictor
from pipeline.models.tfidf import fit_tfidf_first, tfidf_texts
from pipeline.models.torch_backend import TorchBackend
from pipeline.models.zeroshot import EmbeddingBackend

ONNX_FP32, ONNX_INT8 = "model.onnx", "model.int8.onnx"
MIN_AGREEMENT = 0.99
OPSET = 17


@dataclass
class ExportResult:
    folder: Path
    onnx: str  # the file predict runs
    agreement: float  # share of check texts with the PyTorch model's label
    max_prob_diff: float
    tfidf_first: float | None  # where the TF-IDF model answers alone, if anywhere
    tfidf_first_share: float  # share of the check texts it answers alone


def export_onnx(
    folder: Path, int8: bool, check_texts: list[str], check_pairs: list[str] | None, tfidf_first: bool = False
) -> ExportResult:
    """Write model.onnx (and model.int8.onnx) into `folder`; record it in the model card when the
    exported model agrees with the PyTorch one on the check texts. With `tfidf_first` (a blended
    model), also fit on the check texts the threshold above which the TF-IDF model answers alone."""
    torch_model = load_torch(folder, "cpu", "fp32")  # fine-tuned, or a zero-shot embedding model's encoder
    # compared and fitted against the whole blend, whatever an earlier export set
    torch_model.decision.tfidf_first = None
    if torch_model.decision.gate is not None:
        raise PipelineError("two-stage (gated) models cannot be exported yet: their gate is not in the graph")
    card = torch_model.card
    tfidf_first = tfidf_first and card.kind != EMBEDDING  # a zero-shot model has no TF-IDF part
    tmp = owned_temp_dir(folder, ".export-")
    try:
        chosen = _write_onnx(torch_model, tmp, int8)
        reference = torch_model.predict_proba(check_texts, check_pairs)
        onnx_backend: Backend = OnnxBackend.load(folder, tmp / chosen, card.windows, len(card.labels), 0, 32)
        if card.kind == EMBEDDING:
            onnx_backend = OnnxEmbeddingBackend.load(folder, tmp / chosen, card, 0, 32)
        candidate = Predictor(card, onnx_backend, torch_model.decision).predict_proba(check_texts, check_pairs)
        # the same labels: the top one, or a multi-label model's whole set
        same = (torch_model.decision.chosen(reference) == torch_model.decision.chosen(candidate)).all(axis=1)
        agreement = float(same.mean()) if len(same) else 1.0
        max_diff = float(np.abs(reference - candidate).max()) if len(reference) else 0.0
        if agreement < MIN_AGREEMENT:
            raise PipelineError(
                f"the ONNX model agrees with PyTorch on only {agreement:.1%} of {len(check_texts)} "
                f"validation texts (needs {MIN_AGREEMENT:.0%}); nothing was kept"
            )
        for name in os.listdir(tmp):
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    threshold, share = None, 0.0
    if tfidf_first:
        tfidf = torch_model.decision.tfidf
        if tfidf is None:
            raise PipelineError("model.tfidf_first needs a blended model (model.tfidf_blend: true when it was trained)")
        p_tfidf = np.exp(tfidf.log_proba(tfidf_texts(check_texts, check_pairs)))
        threshold = fit_tfidf_first(p_tfidf, candidate)
        share = float((p_tfidf.max(axis=1) >= threshold).mean()) if threshold is not None else 0.0
    decision = card.decision.model_copy(update={"tfidf_first": threshold})
    write_card(folder, card.model_copy(update={"onnx": chosen, "decision": decision}))
    return ExportResult(folder, chosen, agreement, max_diff, threshold, share)


EXPORT_CHECK_TEXTS = 500  # validation texts an export is checked on


def export_fast(folder: Path, check_texts: list[str], check_pairs: list[str] | None) -> str:
    """The int8 export where it keeps the labels (`MIN_AGREEMENT`), else fp32; returns the file kept."""
    try:
        return export_onnx(folder, True, check_texts, check_pairs).onnx
    except PipelineError as err:
        if "agrees with PyTorch" not in str(err):
            raise
        return export_onnx(folder, False, check_texts, check_pairs).onnx


def _write_onnx(model: Predictor, tmp: Path, int8: bool) -> str:
    """The torch model traced to ONNX in `tmp` (and quantised to int8); returns the file to use."""
    import torch

    if isinstance(model.backend, EmbeddingBackend):
        return _write_graph(_mean_tokens(model.backend.encoder.eval()), "embedding", False, tmp, int8)
    if not isinstance(model.backend, TorchBackend):
        raise PipelineError("only a PyTorch classifier or a zero-shot embedding model can be exported")
    inner = model.backend.model.eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any, *mention_mask: Any) -> Any:
            extra = {"mention_mask": mention_mask[0]} if mention_mask else {}
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **extra)
            return out.logits

    return _write_graph(Logits().eval(), "logits", model.card.windows.mention_pool, tmp, int8)


def _mean_tokens(encoder: Any) -> Any:
    """A sentence encoder's mean token vector of each window: EmbeddingBackend.embed's first step, as a graph."""
    import torch

    class MeanTokens(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            return (out.last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    return MeanTokens().eval()  # the exporter restores the wrapper's mode on all its children


def _write_graph(module: Any, output: str, mentions: bool, tmp: Path, int8: bool) -> str:
    import torch

    dummy = (
        torch.ones((2, 16), dtype=torch.long),
        torch.ones((2, 16), dtype=torch.long),
        torch.zeros((2, 16), dtype=torch.long),
        *([torch.ones((2, 16), dtype=torch.long)] if mentions else []),
    )
    names = ["input_ids", "attention_mask", "token_type_ids", *(["mention_mask"] if mentions else [])]
    _quiet_export()
    torch.onnx.export(
        module,
        dummy,
        str(tmp / ONNX_FP32),
        input_names=names,
        output_names=[output],
        dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, output: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    if not int8:
        return ONNX_FP32
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(tmp / ONNX_FP32), str(tmp / ONNX_INT8), weight_type=QuantType.QInt8)
    return ONNX_INT8


def _quiet_export() -> None:
    """The tracer's warnings about Python branches on shapes, and the quantiser's advice, are not
    the user's concern: the agreement check below is what says whether the export is right."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|transformers)\..*")
    warnings.filterwarnings("ignore", message=r".*TracerWarning.*")
    try:
        from torch.jit import TracerWarning

        warnings.filterwarnings("ignore", category=TracerWarning)
    except ImportError:
        pass
    logging.getLogger().setLevel(logging.ERROR)

"""Stage 7, export: an ONNX copy (optionally dynamic int8) of a fine-tuned model, kept in its model folder.

`predict` and `evaluate` then run it with ONNX Runtime and the `tokenizers` library, without
importing torch or transformers. The export is checked on the task's validation articles: the
labels must match the PyTorch model on at least `MIN_AGREEMENT` of them, else nothing is kept.
With `model.tfidf_first`, a blended model also gets, from the same validation texts, the lowest
threshold at which letting the TF-IDF model answer alone (where its top probability reaches it)
changes none of the blend's labels: above it the transformer is not run at all.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

ONNX_FP32, ONNX_INT8 = "model.onnx", "model.int8.onnx"
MIN_AGREEMENT = 0.99
OPSET = 17


def export_onnx(
    folder: Path, int8: bool, check_texts: list[str], check_pairs: list[str] | None, tfidf_first: bool = False
) -> dict[str, Any]:
    """Write model.onnx (and model.int8.onnx) into `folder`; record it in pipeline.json when the
    exported model agrees with the PyTorch one on the check texts. With `tfidf_first` (a blended
    model), also fit on the check texts the threshold above which the TF-IDF model answers alone.
    Returns the agreement figures."""
    import torch

    from pipeline.modeling import MODEL_META, Classifier

    clf = Classifier.load(folder, "cpu", "fp32")
    clf.tfidf_first = None  # compared and fitted against the whole blend, whatever an earlier export set
    if clf.gate is not None:
        raise PipelineError("two-stage (gated) models cannot be exported yet: their gate is not in the graph")
    model = clf.model.eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any, *mention_mask: Any) -> Any:
            extra = {"mention_mask": mention_mask[0]} if mention_mask else {}
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **extra)
            return out.logits

    mentions = clf.pooling == "mean_mention"
    dummy = (
        torch.ones((2, 16), dtype=torch.long),
        torch.ones((2, 16), dtype=torch.long),
        torch.zeros((2, 16), dtype=torch.long),
        *([torch.ones((2, 16), dtype=torch.long)] if mentions else []),
    )
    names = ["input_ids", "attention_mask", "token_type_ids", *(["mention_mask"] if mentions else [])]
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".export-"))
    try:
        _quiet_export()
        torch.onnx.export(
            Logits(),
            dummy,
            str(tmp / ONNX_FP32),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        chosen = ONNX_FP32
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(tmp / ONNX_FP32), str(tmp / ONNX_INT8), weight_type=QuantType.QInt8)
            chosen = ONNX_INT8
        reference = clf.predict_proba(check_texts, check_pairs)
        from pipeline.onnx_model import OnnxClassifier

        onnx_clf = OnnxClassifier.load(folder, onnx_file=tmp / chosen)
        onnx_clf.meta = {**onnx_clf.meta, "tfidf_first": None}
        candidate = onnx_clf.predict_proba(check_texts, check_pairs)
        agreement = float((reference.argmax(axis=1) == candidate.argmax(axis=1)).mean())
        max_diff = float(np.abs(reference - candidate).max()) if len(reference) else 0.0
        if agreement < MIN_AGREEMENT:
            raise PipelineError(
                f"the ONNX model agrees with PyTorch on only {agreement:.1%} of {len(check_texts)} "
                f"validation texts (needs {MIN_AGREEMENT:.0%}); nothing was kept"
            )
        for name in os.listdir(tmp):
            os.replace(tmp / name, folder / name)
    finally:
        for leftover in tmp.glob("*"):
            leftover.unlink()
        tmp.rmdir()
    threshold, share = None, 0.0
    if tfidf_first:
        if clf.tfidf is None:
            raise PipelineError("model.tfidf_first needs a blended model (model.tfidf_blend: true when it was trained)")
        from pipeline.tfidf import fit_tfidf_first, tfidf_texts

        p_tfidf = np.exp(clf.tfidf.log_proba(tfidf_texts(check_texts, check_pairs)))
        threshold = fit_tfidf_first(p_tfidf, candidate)
        share = float((p_tfidf.max(axis=1) >= threshold).mean()) if threshold is not None else 0.0
    meta_path = folder / MODEL_META
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["onnx"] = chosen
    meta["tfidf_first"] = threshold
    from pipeline.io import write_json_atomic

    write_json_atomic(meta_path, meta)
    return {
        "folder": str(folder),
        "onnx": chosen,
        "agreement": agreement,
        "max_prob_diff": max_diff,
        "tfidf_first": threshold,
        "tfidf_first_share": share,
    }


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

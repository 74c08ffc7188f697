"""The ONNX backend: an exported classifier run by ONNX Runtime, its windows cut by the `tokenizers` library.

Imports neither torch nor transformers, so a one-article `pipeline predict` starts in about a
second. The windows are the PyTorch backend's (`encode_windows_fast`), and the same Decision
turns their logits into probabilities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.text.windows import Windows, WindowSettings, encode_windows_fast, length_batches, padded_arrays


@dataclass
class OnnxBackend:
    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    settings: WindowSettings
    n_labels: int
    pad_id: int
    batch_size: int = 32

    @classmethod
    def load(
        cls, folder: Path, onnx_file: Path, settings: WindowSettings, n_labels: int, threads: int, batch_size: int
    ) -> OnnxBackend:
        import onnxruntime as ort  # lazy: a model folder without an export never needs it
        from tokenizers import Tokenizer

        if not onnx_file.is_file():
            raise PipelineError(f"{folder} has no ONNX export; run `pipeline export --onnx`")
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        pad_id = tokenizer.token_to_id(str(config.get("pad_token") or "[PAD]")) or 0
        return cls(session, tokenizer, settings, n_labels, int(pad_id), batch_size)

    def windows(self, texts: list[str], pairs: list[str] | None) -> Windows:
        return encode_windows_fast(self.tokenizer, texts, pairs, self.settings)

    def logits(self, windows: Windows) -> np.ndarray:
        out = np.zeros((len(windows), self.n_labels), dtype=np.float32)
        for idx in length_batches([len(x) for x in windows.input_ids], self.batch_size):
            out[idx] = self.session.run(["logits"], padded_arrays(windows, idx, self.pad_id))[0]
        return out

    def window_logits(self, texts: list[str], pairs: list[str] | None) -> tuple[np.ndarray, Windows]:
        windows = self.windows(texts, pairs)
        return self.logits(windows), windows

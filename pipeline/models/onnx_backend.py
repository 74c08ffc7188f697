"""The ONNX backend: an exported classifier run by ONNX Runtime, its windows cut by the `tokenizers` library.

Imports neither torch nor transformers, so a one-article `pipeline predict` starts in about a
second. The windows are the PyTorch backend's (`encode_windows_fast`), and the same Decision
turns their logits into probabilities. A zero-shot embedding model's encoder runs here too
(`OnnxEmbeddingBackend`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.models.card import ModelCard
from pipeline.models.zeroshot import PROTOTYPES, mean_by_owner, normalise, with_pairs
from pipeline.text.windows import Windows, WindowSettings, encode_windows_fast, length_batches, padded_arrays


@dataclass
class OnnxBackend:
    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    settings: WindowSettings
    n_labels: int  # the width of the output: labels, or a zero-shot encoder's embedding size
    pad_id: int
    batch_size: int = 32
    output: str = "logits"  # a zero-shot encoder's graph gives "embedding"

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
        try:
            session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for a corrupt file
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise PipelineError(
                f"{onnx_file} is not a readable ONNX model ({reason}); export it again: `pipeline export --onnx`"
            ) from None
        try:
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except Exception as err:  # tokenizers raises a bare Exception for a corrupt file
            raise PipelineError(f"{folder}: its tokenizer cannot be read ({type(err).__name__}); retrain it") from None
        pad_id = tokenizer.token_to_id(str(config.get("pad_token") or "[PAD]")) or 0
        return cls(session, tokenizer, settings, n_labels, int(pad_id), batch_size)

    def windows(self, texts: list[str], pairs: list[str] | None) -> Windows:
        return encode_windows_fast(self.tokenizer, texts, pairs, self.settings)

    def logits(self, windows: Windows) -> np.ndarray:
        out = np.zeros((len(windows), self.n_labels), dtype=np.float32)
        for idx in length_batches([len(x) for x in windows.input_ids], self.batch_size):
            out[idx] = self.session.run([self.output], padded_arrays(windows, idx, self.pad_id))[0]
        return out

    def window_logits(self, texts: list[str], pairs: list[str] | None) -> tuple[np.ndarray, Windows]:
        windows = self.windows(texts, pairs)
        return self.logits(windows), windows


@dataclass
class OnnxEmbeddingBackend:
    """A zero-shot embedding model on ONNX Runtime: the encoder's graph gives each window's mean token
    vector; pooling and the cosine similarities to the label prototypes are `EmbeddingBackend`'s."""

    encoder: OnnxBackend
    prototypes: np.ndarray

    @classmethod
    def load(
        cls, folder: Path, onnx_file: Path, card: ModelCard, threads: int, batch_size: int
    ) -> OnnxEmbeddingBackend:
        pooling = card.zeroshot.pooling if card.zeroshot else "mean"
        settings = card.windows if pooling == "mean" else card.windows.model_copy(update={"max_windows": 1})
        prototypes = np.load(folder / PROTOTYPES, allow_pickle=False)
        encoder = OnnxBackend.load(folder, onnx_file, settings, prototypes.shape[1], threads, batch_size)
        encoder.output = "embedding"
        return cls(encoder, prototypes)

    def windows(self, texts: list[str], pairs: list[str] | None) -> Windows:
        return self.encoder.windows(with_pairs(texts, pairs), None)

    def window_logits(self, texts: list[str], pairs: list[str] | None) -> tuple[np.ndarray, Windows]:
        windows = self.windows(texts, pairs)
        vectors = normalise(self.encoder.logits(windows))
        similarity = normalise(mean_by_owner(vectors, windows.owner, len(texts))) @ self.prototypes.T
        n = len(texts)
        return similarity, Windows([[]] * n, [[]] * n, list(range(n)))

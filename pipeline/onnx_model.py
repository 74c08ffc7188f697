"""The fast predict path: an exported model run by ONNX Runtime, tokenised by the `tokenizers` library.

Imports neither torch nor transformers, so a one-article `pipeline predict` starts in about a
second. Windows are cut exactly as the transformers tokenizer cuts them (the same Rust
tokenizer, the same truncation strategy and stride); the window logits are combined, with the
model's temperature, by the same code as the PyTorch path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.modeling import (
    MODEL_META,
    Windows,
    apply_article_bias,
    apply_class_bias,
    combine_windows,
    cut_pairs,
    length_batches,
    marked_texts,
    mention_mask,
    mention_spans,
    pair_token_budget,
    windows_per_text,
)
from pipeline.tfidf import TfidfModel, blend_weights, blended_predict, tfidf_first_threshold


@dataclass
class OnnxClassifier:
    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer
    labels: list[str]
    max_length: int
    stride: int
    max_windows: int
    combine: str
    temperature: float
    pad_id: int
    batch_size: int = 32
    meta: dict[str, Any] = field(default_factory=dict)
    tfidf: TfidfModel | None = None  # blended: stacked with the transformer's probabilities

    @classmethod
    def load(
        cls, folder: Path, threads: int = 0, batch_size: int = 32, onnx_file: Path | None = None
    ) -> OnnxClassifier:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        meta = json.loads((folder / MODEL_META).read_text(encoding="utf-8"))
        path = onnx_file or folder / str(meta.get("onnx") or "")
        if not path.is_file():
            raise PipelineError(f"{folder} has no ONNX export; run `pipeline export --onnx`")
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        pad_id = tokenizer.token_to_id(str(config.get("pad_token") or "[PAD]")) or 0
        return cls(
            session,
            tokenizer,
            list(meta["labels"]),
            int(meta["max_length"]),
            int(meta["stride"]),
            int(meta["max_windows"]),
            str(meta["combine"]),
            float(meta.get("temperature", 1.0)),
            int(pad_id),
            batch_size,
            meta,
            TfidfModel.load(folder) if meta.get("tfidf_blend") else None,
        )

    def windows(self, texts: list[str], pairs: list[str] | None) -> Windows:
        """The token windows transformers' `tokenizer(..., return_overflowing_tokens=True)` makes."""
        tok = self.tokenizer
        tok.no_padding()
        texts = marked_texts(
            texts, pairs, bool(self.meta.get("mark_pair", False)), bool(self.meta.get("evidence_first", False))
        )
        if pairs is not None:  # cut as encode_windows cuts them
            tok.no_truncation()
            budget = pair_token_budget(self.max_length, self.stride, tok.post_processor.num_special_tokens_to_add(True))
            pairs = cut_pairs(pairs, [e.offsets for e in tok.encode_batch(pairs, add_special_tokens=False)], budget)
        tok.enable_truncation(
            self.max_length, stride=self.stride, strategy="only_second" if pairs is not None else "longest_first"
        )
        inputs: list[Any] = list(zip(pairs, texts, strict=True)) if pairs is not None else texts
        mention_pool = self.meta.get("pooling") == "mean_mention"
        spans = mention_spans(texts, pairs) if mention_pool else []
        ids, types, owner, mention = [], [], [], []
        for article, encoding in enumerate(tok.encode_batch(inputs)):
            for window in [encoding, *encoding.overflowing][: self.max_windows]:
                ids.append(window.ids)
                types.append(window.type_ids)
                owner.append(article)
                if mention_pool:
                    mention.append(mention_mask(window.sequence_ids, window.offsets, spans[article]))
        return Windows(ids, types, owner, mention if mention_pool else None)

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        probs = apply_class_bias(self._probs(texts, pairs), self.meta.get("class_bias"))
        article_bias = self.meta.get("article_bias")
        if not article_bias:
            return probs
        return apply_article_bias(probs, windows_per_text(self.windows(texts, pairs), len(texts)), article_bias)

    def _probs(self, texts: list[str], pairs: list[str] | None) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)))
        if self.meta.get("gate_label"):
            raise PipelineError("two-stage (gated) models have no ONNX path yet")
        weights = blend_weights(self.meta)
        if self.tfidf is None or weights is None:
            return self.transformer_probs(texts, pairs)[0]
        threshold = tfidf_first_threshold(self.meta)
        return blended_predict(texts, pairs, self.tfidf, weights, threshold, self.transformer_probs)[0]

    def transformer_probs(self, texts: list[str], pairs: list[str] | None) -> list[np.ndarray]:
        windows = self.windows(texts, pairs)
        logits = np.zeros((len(windows), len(self.labels)), dtype=np.float32)
        for idx in length_batches([len(x) for x in windows.input_ids], self.batch_size):
            width = max(len(windows.input_ids[i]) for i in idx)
            input_ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            token_type_ids = np.zeros((len(idx), width), dtype=np.int64)
            attention_mask = np.zeros((len(idx), width), dtype=np.int64)
            mentions = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                n = len(windows.input_ids[i])
                input_ids[row, :n] = windows.input_ids[i]
                token_type_ids[row, :n] = windows.token_type_ids[i]
                attention_mask[row, :n] = 1
                if windows.mention is not None:
                    mentions[row, :n] = windows.mention[i]
            feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            if windows.mention is not None:
                feed["mention_mask"] = mentions
            logits[idx] = self.session.run(["logits"], feed)[0]
        return [combine_windows(logits / self.temperature, windows.owner, len(texts), self.combine)]

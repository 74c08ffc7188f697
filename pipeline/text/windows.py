"""Token windows: how an article longer than a model's window is read.

An article is cut into overlapping token windows by the tokenizer's own overflow support, so a
claim or target given as the first segment of a pair is repeated in every window. The same cut
is made with a transformers tokenizer (`encode_windows`) and with the `tokenizers` library alone
(`encode_windows_fast`, the ONNX path, which imports no transformers): same Rust tokenizer, same
truncation strategy and stride. `WindowSettings` is the one value that says how a model reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.core.errors import PipelineError
from pipeline.text.evidence import evidence_first as reorder_evidence


class WindowSettings(BaseModel):
    """How a model reads a text: window size, overlap, how many windows, and how the pair is shown."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: int = Field(ge=16, le=8192)  # tokens per window, special tokens included
    stride: int = Field(ge=0)  # tokens shared by two neighbouring windows
    max_windows: int = Field(ge=1)  # windows kept per text, from its start
    mark_pair: bool = False  # mentions of the pair (target) in the text between << and >>
    evidence_first: bool = False  # the text's sentences sharing most words with the pair first
    mention_pool: bool = False  # each window carries the mask of the pair's mentions (`pooling: mean_mention`)

    @model_validator(mode="after")
    def _stride_fits(self) -> WindowSettings:
        if self.stride >= self.max_length // 2:
            # a PipelineError passes through pydantic unwrapped: the user sees this one line
            raise PipelineError(f"model.stride ({self.stride}) must be under half of max_length ({self.max_length})")
        return self


@dataclass
class Windows:
    """Token windows of a batch of texts; `owner[i]` is the text window i came from."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    owner: list[int]
    mention: list[list[int]] | None = None  # `mention_pool`: 1 on the tokens pooled for the pair

    def __len__(self) -> int:
        return len(self.input_ids)

    @classmethod
    def empty(cls) -> Windows:
        return cls([], [], [])


def windows_per_text(windows: Windows, n_texts: int) -> np.ndarray:
    return np.bincount(np.asarray(windows.owner, dtype=np.int64), minlength=n_texts)


MENTION_OPEN, MENTION_CLOSE = "<<", ">>"


def mention_pattern(target: str) -> re.Pattern[str] | None:
    """Whole-word, case-insensitive mentions of `target`; None for a blank target."""
    target = target.strip()
    return re.compile(rf"(?<!\w){re.escape(target)}(?!\w)", re.IGNORECASE) if target else None


def mark_mentions(text: str, target: str) -> str:
    """`text` with every whole-word, case-insensitive mention of `target` put between << and >>:
    the model then sees which of a sentence's names the stance is about."""
    pattern = mention_pattern(target)
    if pattern is None:
        return text
    return pattern.sub(lambda m: f"{MENTION_OPEN} {m.group(0)} {MENTION_CLOSE}", text)


def mention_mask(
    sequence_ids: list[int | None], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]
) -> list[int]:
    """1 on a window's text tokens inside a mention (`spans`: character spans in the text); where the
    window mentions none, 1 on the pair's own tokens, which have read the window (TD-BERT pooling)."""
    mask = [
        int(seq == 1 and any(a < end and b > start for start, end in spans))
        for seq, (a, b) in zip(sequence_ids, offsets, strict=True)
    ]
    return mask if any(mask) else [int(seq == 0) for seq in sequence_ids]


def mention_spans(texts: list[str], pairs: list[str] | None) -> list[list[tuple[int, int]]]:
    """The character spans of each text's mentions of its pair (`model.pooling: mean_mention`)."""
    if pairs is None:
        raise PipelineError("model.pooling 'mean_mention' needs a pair column: it pools the pair's mentions")
    patterns = [mention_pattern(p) for p in pairs]
    return [[m.span() for m in p.finditer(t)] if p else [] for t, p in zip(texts, patterns, strict=True)]


def marked_texts(texts: list[str], pairs: list[str] | None, settings: WindowSettings) -> list[str]:
    """The texts as the model reads them: sentences that share the pair's words first
    (`evidence_first`), then the pair's mentions marked (`mark_pair`)."""
    if pairs is None:
        return texts
    if settings.evidence_first:
        texts = [reorder_evidence(t, p) for t, p in zip(texts, pairs, strict=True)]
    if settings.mark_pair:
        texts = [mark_mentions(t, p) for t, p in zip(texts, pairs, strict=True)]
    return texts


def pair_token_budget(max_length: int, stride: int, special_tokens: int) -> int:
    """The most tokens a pair (claim or target) may take: a window must keep more than `stride`
    tokens for the text, or the tokenizer panics instead of raising an error."""
    return max(max_length - special_tokens - stride - 1, 1)


def cut_pairs(pairs: list[str], offsets: list[list[tuple[int, int]]], max_tokens: int) -> list[str]:
    """Each pair cut after its first `max_tokens` tokens (`offsets`: each pair's token spans)."""
    return [
        p[: spans[max_tokens - 1][1]] if len(spans) > max_tokens else p for p, spans in zip(pairs, offsets, strict=True)
    ]


def encode_windows(tokenizer: Any, texts: list[str], pairs: list[str] | None, settings: WindowSettings) -> Windows:
    """Token windows of each text (after the pair, when there is one), cut by a transformers tokenizer."""
    texts = marked_texts(texts, pairs, settings)
    if pairs is not None:
        budget = pair_token_budget(settings.max_length, settings.stride, tokenizer.num_special_tokens_to_add(pair=True))
        offsets = tokenizer(pairs, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        pairs = cut_pairs(pairs, offsets, budget)
    spans = mention_spans(texts, pairs) if settings.mention_pool else []  # in the texts as they are read
    args: tuple[Any, ...] = (pairs, texts) if pairs is not None else (texts,)
    enc = tokenizer(
        *args,
        truncation="only_second" if pairs is not None else True,
        max_length=settings.max_length,
        stride=settings.stride,
        return_overflowing_tokens=True,
        return_token_type_ids=True,
        return_attention_mask=False,
        return_offsets_mapping=settings.mention_pool,
    )
    out = Windows([], [], [], [] if settings.mention_pool else None)
    seen: dict[int, int] = {}
    for i, article in enumerate(enc["overflow_to_sample_mapping"]):
        seen[article] = seen.get(article, 0) + 1
        if seen[article] <= settings.max_windows:
            out.input_ids.append(enc["input_ids"][i])
            out.token_type_ids.append(enc["token_type_ids"][i])
            out.owner.append(int(article))
            if out.mention is not None:
                out.mention.append(mention_mask(enc.sequence_ids(i), enc["offset_mapping"][i], spans[article]))
    return out


def encode_windows_fast(tokenizer: Any, texts: list[str], pairs: list[str] | None, settings: WindowSettings) -> Windows:
    """The windows `encode_windows` makes, cut by a `tokenizers.Tokenizer` (no transformers import)."""
    tokenizer.no_padding()
    texts = marked_texts(texts, pairs, settings)
    if pairs is not None:
        tokenizer.no_truncation()
        special = tokenizer.post_processor.num_special_tokens_to_add(True)
        budget = pair_token_budget(settings.max_length, settings.stride, special)
        offsets = [e.offsets for e in tokenizer.encode_batch(pairs, add_special_tokens=False)]
        pairs = cut_pairs(pairs, offsets, budget)
    tokenizer.enable_truncation(
        settings.max_length, stride=settings.stride, strategy="only_second" if pairs is not None else "longest_first"
    )
    inputs: list[Any] = list(zip(pairs, texts, strict=True)) if pairs is not None else texts
    spans = mention_spans(texts, pairs) if settings.mention_pool else []
    out = Windows([], [], [], [] if settings.mention_pool else None)
    for article, encoding in enumerate(tokenizer.encode_batch(inputs)):
        for window in [encoding, *encoding.overflowing][: settings.max_windows]:
            out.input_ids.append(window.ids)
            out.token_type_ids.append(window.type_ids)
            out.owner.append(article)
            if out.mention is not None:
                out.mention.append(mention_mask(window.sequence_ids, window.offsets, spans[article]))
    return out


# tokens per inference batch on a CPU: 4 windows of 512 ran 1.2-1.3x faster than 32 (cache-sized work)
CPU_BATCH_TOKENS = 2048


def length_batches(lengths: list[int], batch_size: int, max_tokens: int | None = CPU_BATCH_TOKENS) -> list[list[int]]:
    """Indices in batches of similar length, longest first: at most `batch_size` rows and, when
    `max_tokens` is set, at most that many padded tokens (always at least one row)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    for i in order:
        if batches:
            current = batches[-1]
            width = lengths[current[0]]  # the first row of a batch is its longest
            if len(current) < batch_size and (max_tokens is None or width * (len(current) + 1) <= max_tokens):
                current.append(i)
                continue
        batches.append([i])
    return batches


def padded_arrays(windows: Windows, idx: list[int], pad_id: int) -> dict[str, np.ndarray]:
    """Windows `idx`, padded to the longest, as int64 arrays: a model's keyword inputs."""
    width = max(len(windows.input_ids[i]) for i in idx)
    arrays = {
        "input_ids": np.full((len(idx), width), pad_id, dtype=np.int64),
        "token_type_ids": np.zeros((len(idx), width), dtype=np.int64),
        "attention_mask": np.zeros((len(idx), width), dtype=np.int64),
    }
    if windows.mention is not None:
        arrays["mention_mask"] = np.zeros((len(idx), width), dtype=np.int64)
    for row, i in enumerate(idx):
        n = len(windows.input_ids[i])
        arrays["input_ids"][row, :n] = windows.input_ids[i]
        arrays["token_type_ids"][row, :n] = windows.token_type_ids[i]
        arrays["attention_mask"][row, :n] = 1
        if windows.mention is not None:
            arrays["mention_mask"][row, :n] = windows.mention[i]
    return arrays

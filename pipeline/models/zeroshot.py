"""Zero-shot backends: classify with labels never trained on, through the same Decision as a fine-tuned model.

- `embedding` (default; works offline with MiniLM): the article's token windows are embedded by
  a sentence encoder (mean of token vectors, L2-normalised, as all-MiniLM-L6-v2 was trained) and
  pooled into one vector; each label's prototype is the mean embedding of several phrasings of
  it. Its logits are the article's cosine similarities to the prototypes (one row per article,
  so the Decision combines with `first`), divided by the card's temperature.
- `nli`: transformers' zero-shot-classification pipeline on an NLI model (is "This article is
  about {label}." entailed by the window?); its logits are the log of each window's scores, and
  the Decision averages the windows' probabilities (`mean_probs`).

A zero-shot model is saved as a model folder with a card of kind `zeroshot-*`, so it is logged,
registered and loaded like a fine-tuned one. Self-training labels unlabelled articles with it
and keeps the most confident share of each label (`pseudo_labels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.config import Config, RuntimeConfig, ZeroShotConfig
from pipeline.core.errors import PipelineError
from pipeline.models.card import DecisionCard, ModelCard, ZeroShotCard
from pipeline.models.decision import Decision
from pipeline.models.predictor import Predictor
from pipeline.models.runtime import load_tokenizer, pick_device, pick_precision, resolve_model_name, set_threads
from pipeline.models.torch_backend import run_windows
from pipeline.models.weights import load_tokenizer_from, load_weights
from pipeline.text.windows import Windows, WindowSettings, encode_windows

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PROTOTYPES = "prototypes.npy"
# room left in an NLI window for the hypothesis ("This article is about entertainment.")
NLI_HYPOTHESIS_TOKENS = 32


def label_phrasings(zcfg: ZeroShotConfig, labels: list[str] | None = None) -> dict[str, list[str]]:
    """The config's phrasings per label; for `labels` (--labels), the config's phrasings of the
    labels it describes and `default_phrasings` filled with the label for the others."""
    if labels is None:
        return {label: list(p) for label, p in zcfg.labels.items()}
    labels = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
    if len(labels) < 2:
        raise PipelineError("--labels needs at least two different labels, comma-separated")
    return {
        label: list(zcfg.labels.get(label) or [p.replace("{}", label) for p in zcfg.default_phrasings])
        for label in labels
    }


def with_pairs(texts: list[str], pairs: list[str] | None) -> list[str]:
    """A pair (a title) leads its text: zero-shot reads one text per article."""
    if pairs is None:
        return texts
    return [f"{p}\n\n{t}" if p else t for t, p in zip(texts, pairs, strict=True)]


def mean_by_owner(rows: np.ndarray, owner: list[int], n: int) -> np.ndarray:
    owners = np.asarray(owner)
    return np.stack([rows[owners == i].mean(axis=0) for i in range(n)]) if n else np.zeros((0, rows.shape[1]))


def normalise(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12))


@dataclass
class EmbeddingBackend:
    """Label prototypes in a sentence encoder's space; an article is its pooled windows."""

    encoder: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    settings: WindowSettings  # with pooling `first`, max_windows is 1
    prototypes: np.ndarray
    device: torch.device
    precision: str
    batch_size: int = 32

    @classmethod
    def build(cls, zcfg: ZeroShotConfig, phrasings: dict[str, list[str]], runtime: RuntimeConfig) -> EmbeddingBackend:
        max_windows = zcfg.max_windows if zcfg.pooling == "mean" else 1
        settings = WindowSettings(max_length=zcfg.max_length, stride=zcfg.stride, max_windows=max_windows)
        backend = cls.encoder_only(zcfg.encoder, settings, runtime)
        backend.prototypes = np.stack([normalise(backend.embed(p).mean(axis=0)) for p in phrasings.values()])
        return backend

    @classmethod
    def encoder_only(cls, name: str, settings: WindowSettings, runtime: RuntimeConfig) -> EmbeddingBackend:
        """The sentence encoder `name` (a packaged name, a folder or a hub id) with no label prototypes:
        for `embed` alone."""
        from transformers import AutoModel

        tokenizer = load_tokenizer(name)
        device = pick_device(runtime.device)
        try:
            # a packaged folder, a local folder, or the hub id the user's config names; no code of its own
            path = resolve_model_name(name)
            encoder = (
                AutoModel.from_pretrained(  # nosec B615
                    path, use_safetensors=True, trust_remote_code=False
                )
                .to(device)
                .eval()
            )
        except OSError as err:
            raise PipelineError(f"cannot load encoder {name!r}: {str(err).splitlines()[0]}") from None
        precision = pick_precision(runtime.precision, device)
        return cls(encoder, tokenizer, settings, np.zeros((0, 0)), device, precision, runtime.eval_batch_size)

    def embed(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised vector per text: the mean of its windows' mean-pooled tokens."""
        windows = encode_windows(self.tokenizer, texts, None, self.settings)

        def mean_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            hidden = self.encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

        width = int(self.encoder.config.hidden_size)
        pad_id = int(self.tokenizer.pad_token_id or 0)
        vectors = run_windows(mean_tokens, windows, width, pad_id, self.batch_size, self.device, self.precision)
        return normalise(mean_by_owner(normalise(vectors), windows.owner, len(texts)))

    def windows(self, texts: list[str], pairs: list[str] | None) -> Windows:
        return encode_windows(self.tokenizer, with_pairs(texts, pairs), None, self.settings)

    def window_logits(self, texts: list[str], pairs: list[str] | None) -> tuple[np.ndarray, Windows]:
        """Cosine similarities to the prototypes, one row per article (its pooled windows)."""
        similarity = self.embed(with_pairs(texts, pairs)) @ self.prototypes.T
        n = len(texts)
        return similarity, Windows([[]] * n, [[]] * n, list(range(n)))

    def save(self, folder: Path) -> None:
        self.encoder.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        np.save(folder / PROTOTYPES, self.prototypes)

    @classmethod
    def load(cls, folder: Path, card: ModelCard, device: str, precision: str, batch_size: int) -> EmbeddingBackend:
        from transformers import AutoModel

        dev = pick_device(device)
        pooling = card.zeroshot.pooling if card.zeroshot else "mean"
        settings = card.windows if pooling == "mean" else card.windows.model_copy(update={"max_windows": 1})
        return cls(
            load_weights(AutoModel, folder).to(dev).eval(),
            load_tokenizer_from(folder),
            settings,
            np.load(folder / PROTOTYPES, allow_pickle=False),
            dev,
            pick_precision(precision, dev),
            batch_size,
        )


@dataclass
class NliBackend:
    """transformers' zero-shot-classification pipeline over an article's windows."""

    pipe: Any  # transformers.ZeroShotClassificationPipeline
    labels: list[str]
    hypothesis_template: str
    settings: WindowSettings  # the window left beside the hypothesis
    batch_size: int = 32

    @classmethod
    def create(
        cls,
        pipe: Any,
        labels: list[str],
        template: str,
        max_length: int,
        stride: int,
        max_windows: int,
        batch_size: int,
    ) -> NliBackend:
        window_length = max(max_length - NLI_HYPOTHESIS_TOKENS, 2 * stride + 2)
        settings = WindowSettings(max_length=window_length, stride=stride, max_windows=max_windows)
        return cls(pipe, labels, template, settings, batch_size)

    def windows(self, texts: list[str], pairs: list[str] | None) -> Windows:
        return encode_windows(self.pipe.tokenizer, with_pairs(texts, pairs), None, self.settings)

    def window_logits(self, texts: list[str], pairs: list[str] | None) -> tuple[np.ndarray, Windows]:
        """The log of each window's entailment scores over the labels."""
        windows = self.windows(texts, pairs)
        window_texts = self.pipe.tokenizer.batch_decode(windows.input_ids, skip_special_tokens=True)
        outputs = self.pipe(
            window_texts,
            candidate_labels=self.labels,
            hypothesis_template=self.hypothesis_template,
            multi_label=False,
            batch_size=self.batch_size,
        )
        scores = np.zeros((len(window_texts), len(self.labels)))
        for row, out in enumerate(outputs):
            for label, score in zip(out["labels"], out["scores"], strict=True):
                scores[row, self.labels.index(label)] = score
        return np.log(np.clip(scores, 1e-12, None)), windows

    def save(self, folder: Path) -> None:
        self.pipe.model.save_pretrained(folder)
        self.pipe.tokenizer.save_pretrained(folder)

    @classmethod
    def load(cls, folder: Path, card: ModelCard, device: str, batch_size: int) -> NliBackend:
        template = card.zeroshot.hypothesis_template if card.zeroshot else None
        w = card.windows
        pipe = _nli_pipeline(str(folder), device, str(folder))
        return cls.create(pipe, card.labels, template or "{}", w.max_length, w.stride, w.max_windows, batch_size)


def _nli_pipeline(path: str, device: str, name: str) -> Any:
    from transformers import pipeline

    try:
        return pipeline(
            "zero-shot-classification",
            model=path,
            device=pick_device(device),
            trust_remote_code=False,
            model_kwargs={"use_safetensors": True},
        )
    except (OSError, ValueError) as err:
        raise PipelineError(f"cannot load NLI model {name!r}: {str(err).splitlines()[0]}") from None


def require_zeroshot(cfg: Config) -> ZeroShotConfig:
    if cfg.zeroshot is None:
        raise PipelineError(f"config of task {cfg.task!r} has no zeroshot section; see configs/zeroshot_topic.yaml")
    return cfg.zeroshot


def build_zeroshot(cfg: Config, labels: list[str] | None = None) -> Predictor:
    """The zero-shot classifier the config describes, over its labels or `labels`."""
    zcfg = require_zeroshot(cfg)
    set_threads(cfg.runtime.threads)
    phrasings = label_phrasings(zcfg, labels)
    names = list(phrasings)
    r = cfg.runtime
    # predict puts a title before the text, as the pair (title) is put here
    text_columns = [*([cfg.data.pair_column] if cfg.data.pair_column else []), *cfg.data.text_columns]
    windows = WindowSettings(max_length=zcfg.max_length, stride=zcfg.stride, max_windows=zcfg.max_windows)
    backend: EmbeddingBackend | NliBackend
    if zcfg.engine == "nli":
        name = zcfg.nli_model or ""
        pipe = _nli_pipeline(resolve_model_name(name), r.device, name)
        t = zcfg.hypothesis_template
        backend = NliBackend.create(pipe, names, t, zcfg.max_length, zcfg.stride, zcfg.max_windows, r.eval_batch_size)
        about = ZeroShotCard(nli_model=name, hypothesis_template=t)
        decision = DecisionCard(combine="mean_probs")
    else:
        backend = EmbeddingBackend.build(zcfg, phrasings, r)
        about = ZeroShotCard(encoder=zcfg.encoder, phrasings=phrasings, pooling=zcfg.pooling)
        decision = DecisionCard(combine="first", temperature=zcfg.temperature)
    card = ModelCard(
        kind="zeroshot-nli" if zcfg.engine == "nli" else "zeroshot-embedding",
        task=cfg.task,
        labels=names,
        text_columns=text_columns,
        pair_column=None,
        windows=windows,
        decision=decision,
        zeroshot=about,
    )
    return Predictor(card, backend, Decision(names, decision.combine, decision.temperature))


def pseudo_labels(
    clf: Predictor, keep_fraction: float, labels: list[str], texts: list[str], pairs: list[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, their pseudo-labels as indices of `labels`): the zero-shot label of every text,
    keeping the `keep_fraction` most confident of each predicted label."""
    if set(clf.labels) != set(labels):
        raise PipelineError(
            f"zeroshot.labels ({', '.join(clf.labels)}) must be the task's labels ({', '.join(labels)})"
        )
    probs = clf.predict_proba(texts, pairs)
    predicted = np.asarray([labels.index(clf.labels[i]) for i in probs.argmax(axis=1)], dtype=np.int64)
    confidence = probs.max(axis=1)
    kept: list[int] = []
    for label in range(len(labels)):
        rows = np.flatnonzero(predicted == label)
        n_keep = int(np.ceil(keep_fraction * len(rows)))
        kept += rows[np.argsort(-confidence[rows], kind="stable")[:n_keep]].tolist()
    kept_rows = np.sort(np.asarray(kept, dtype=np.int64))
    return kept_rows, predicted[kept_rows]

"""Stage 3, zero-shot: classify with labels never trained on, evaluated and logged like a fine-tuned model.

Two engines, chosen by `zeroshot.engine`:
- `embedding` (default; works offline with MiniLM): the article's token windows are embedded by
  a sentence encoder (mean of token vectors, L2-normalised, as all-MiniLM-L6-v2 was trained) and
  pooled into one vector; each label's prototype is the mean embedding of several phrasings of
  it. Cosine similarity / temperature, through a softmax, gives the probabilities.
- `nli`: transformers' zero-shot-classification pipeline on an NLI model (is "This article is
  about {label}." entailed by the window?), the scores of an article's windows averaged.

A zero-shot classifier is saved as a model folder (its `pipeline.json` has `kind: zeroshot-*`),
so it is logged, registered and loaded like a fine-tuned one. Self-training labels unlabelled
articles with it and keeps the most confident share of each label (`pseudo_labels`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import Config, RuntimeConfig, ZeroShotConfig, resolve_path
from pipeline.errors import PipelineError
from pipeline.modeling import (
    MODEL_META,
    TextClassifier,
    encode_windows,
    load_tokenizer,
    pick_device,
    pick_precision,
    resolve_model_name,
    run_windows,
    set_threads,
    softmax,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pipeline.evaluate import EvalData

EMBEDDING_KIND, NLI_KIND = "zeroshot-embedding", "zeroshot-nli"
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


def _with_pairs(texts: list[str], pairs: list[str] | None) -> list[str]:
    """A pair (a title) leads its text: zero-shot reads one text per article."""
    if pairs is None:
        return texts
    return [f"{p}\n\n{t}" if p else t for t, p in zip(texts, pairs, strict=True)]


def _mean_by_owner(rows: np.ndarray, owner: list[int], n: int) -> np.ndarray:
    owners = np.asarray(owner)
    return np.stack([rows[owners == i].mean(axis=0) for i in range(n)]) if n else np.zeros((0, rows.shape[1]))


def _normalise(x: np.ndarray) -> np.ndarray:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12))


@dataclass
class EmbeddingZeroShot:
    """Label prototypes in a sentence encoder's space; an article is its pooled windows."""

    encoder: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    labels: list[str]
    phrasings: dict[str, list[str]]
    prototypes: np.ndarray
    max_length: int
    stride: int
    max_windows: int
    pooling: str
    temperature: float
    device: torch.device
    precision: str
    batch_size: int = 32
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, zcfg: ZeroShotConfig, phrasings: dict[str, list[str]], runtime: RuntimeConfig) -> EmbeddingZeroShot:
        from transformers import AutoModel

        tokenizer = load_tokenizer(zcfg.encoder)
        device = pick_device(runtime.device)
        try:
            encoder = AutoModel.from_pretrained(resolve_model_name(zcfg.encoder)).to(device).eval()
        except OSError as err:
            raise PipelineError(f"cannot load encoder {zcfg.encoder!r}: {str(err).splitlines()[0]}") from None
        clf = cls(
            encoder,
            tokenizer,
            list(phrasings),
            phrasings,
            np.zeros((0, 0)),
            zcfg.max_length,
            zcfg.stride,
            zcfg.max_windows,
            zcfg.pooling,
            zcfg.temperature,
            device,
            pick_precision(runtime.precision, device),
            runtime.eval_batch_size,
            {"encoder": zcfg.encoder},
        )
        clf.prototypes = np.stack([_normalise(clf.embed(p).mean(axis=0)) for p in phrasings.values()])
        return clf

    def embed(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised vector per text: the mean (or first) of its windows' mean-pooled tokens."""
        max_windows = self.max_windows if self.pooling == "mean" else 1
        windows = encode_windows(self.tokenizer, texts, None, self.max_length, self.stride, max_windows)

        def mean_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            hidden = self.encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

        width = int(self.encoder.config.hidden_size)
        pad_id = int(self.tokenizer.pad_token_id or 0)
        vectors = run_windows(mean_tokens, windows, width, pad_id, self.batch_size, self.device, self.precision)
        return _normalise(_mean_by_owner(_normalise(vectors), windows.owner, len(texts)))

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)))
        similarity = self.embed(_with_pairs(texts, pairs)) @ self.prototypes.T
        return softmax(similarity / self.temperature)

    def save(self, folder: Path, extra_meta: dict[str, Any] | None = None) -> None:
        self.encoder.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        np.save(folder / PROTOTYPES, self.prototypes)
        meta = {
            **self.meta,
            **(extra_meta or {}),
            "kind": EMBEDDING_KIND,
            "labels": self.labels,
            "phrasings": self.phrasings,
            "max_length": self.max_length,
            "stride": self.stride,
            "max_windows": self.max_windows,
            "pooling": self.pooling,
            "temperature": self.temperature,
        }
        (folder / MODEL_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(
        cls, folder: Path, meta: dict[str, Any], device: str, precision: str, batch_size: int
    ) -> EmbeddingZeroShot:
        from transformers import AutoModel, AutoTokenizer

        dev = pick_device(device)
        return cls(
            AutoModel.from_pretrained(folder).to(dev).eval(),
            AutoTokenizer.from_pretrained(folder),
            list(meta["labels"]),
            dict(meta["phrasings"]),
            np.load(folder / PROTOTYPES),
            int(meta["max_length"]),
            int(meta["stride"]),
            int(meta["max_windows"]),
            str(meta["pooling"]),
            float(meta["temperature"]),
            dev,
            pick_precision(precision, dev),
            batch_size,
            meta,
        )


@dataclass
class NliZeroShot:
    """transformers' zero-shot-classification pipeline over an article's windows."""

    pipe: Any  # transformers.ZeroShotClassificationPipeline
    labels: list[str]
    hypothesis_template: str
    max_length: int
    stride: int
    max_windows: int
    batch_size: int = 32
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, zcfg: ZeroShotConfig, labels: list[str], runtime: RuntimeConfig) -> NliZeroShot:
        name = zcfg.nli_model or ""
        pipe = _nli_pipeline(resolve_model_name(name), runtime.device, name)
        meta = {"nli_model": name}
        return cls(
            pipe,
            labels,
            zcfg.hypothesis_template,
            zcfg.max_length,
            zcfg.stride,
            zcfg.max_windows,
            runtime.eval_batch_size,
            meta,
        )

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)))
        tokenizer = self.pipe.tokenizer
        window_length = max(self.max_length - NLI_HYPOTHESIS_TOKENS, 2 * self.stride + 2)
        windows = encode_windows(
            tokenizer, _with_pairs(texts, pairs), None, window_length, self.stride, self.max_windows
        )
        window_texts = tokenizer.batch_decode(windows.input_ids, skip_special_tokens=True)
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
        return _mean_by_owner(scores, windows.owner, len(texts))

    def save(self, folder: Path, extra_meta: dict[str, Any] | None = None) -> None:
        self.pipe.model.save_pretrained(folder)
        self.pipe.tokenizer.save_pretrained(folder)
        meta = {
            **self.meta,
            **(extra_meta or {}),
            "kind": NLI_KIND,
            "labels": self.labels,
            "hypothesis_template": self.hypothesis_template,
            "max_length": self.max_length,
            "stride": self.stride,
            "max_windows": self.max_windows,
        }
        (folder / MODEL_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any], device: str, batch_size: int) -> NliZeroShot:
        return cls(
            _nli_pipeline(str(folder), device, str(folder)),
            list(meta["labels"]),
            str(meta["hypothesis_template"]),
            int(meta["max_length"]),
            int(meta["stride"]),
            int(meta["max_windows"]),
            batch_size,
            meta,
        )


def _nli_pipeline(path: str, device: str, name: str) -> Any:
    from transformers import pipeline

    try:
        return pipeline("zero-shot-classification", model=path, device=pick_device(device))
    except (OSError, ValueError) as err:
        raise PipelineError(f"cannot load NLI model {name!r}: {str(err).splitlines()[0]}") from None


def build_zeroshot(cfg: Config, labels: list[str] | None = None) -> EmbeddingZeroShot | NliZeroShot:
    """The zero-shot classifier the config describes, over its labels or `labels`."""
    zcfg = require_zeroshot(cfg)
    set_threads(cfg.runtime.threads)
    phrasings = label_phrasings(zcfg, labels)
    clf: EmbeddingZeroShot | NliZeroShot
    if zcfg.engine == "nli":
        clf = NliZeroShot.build(zcfg, list(phrasings), cfg.runtime)
    else:
        clf = EmbeddingZeroShot.build(zcfg, phrasings, cfg.runtime)
    # predict puts a title before the text, as the pair (title) is put here
    text_columns = [*([cfg.data.pair_column] if cfg.data.pair_column else []), *cfg.data.text_columns]
    clf.meta.update({"task": cfg.task, "text_columns": text_columns, "pair_column": None})
    return clf


def load_zeroshot(folder: Path, device: str, precision: str, batch_size: int) -> TextClassifier:
    meta = json.loads((folder / MODEL_META).read_text(encoding="utf-8"))
    if meta["kind"] == NLI_KIND:
        return NliZeroShot.load(folder, meta, device, batch_size)
    return EmbeddingZeroShot.load(folder, meta, device, precision, batch_size)


def require_zeroshot(cfg: Config) -> ZeroShotConfig:
    if cfg.zeroshot is None:
        raise PipelineError(f"config of task {cfg.task!r} has no zeroshot section; see configs/zeroshot_topic.yaml")
    return cfg.zeroshot


def pseudo_labels(
    clf: TextClassifier, keep_fraction: float, labels: list[str], texts: list[str], pairs: list[str] | None
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


def run_zeroshot(
    cfg: Config, data: EvalData | None, labels: list[str] | None = None, register: bool = False
) -> dict[str, Any]:
    """Evaluate the zero-shot classifier on `data` (default: the prepared test split) as an MLflow
    run of the task's experiment, beside its fine-tuned runs; log it as a model, registered on request.

    On the prepared data the validation split is scored too, and it decides the registry alias.
    """
    import mlflow

    from pipeline import tracking
    from pipeline.data import prepare
    from pipeline.evaluate import label_indices, log_evaluation, prepared_split_data
    from pipeline.io import atomic_dir
    from pipeline.metrics import compute_metrics, log_metrics
    from pipeline.mlflow_model import log_classifier

    started = time.perf_counter()
    zcfg = require_zeroshot(cfg)
    validation = None
    if data is None:
        prepare(cfg)
        data, validation = prepared_split_data(cfg, "test"), prepared_split_data(cfg, "validation")
    clf = build_zeroshot(cfg, labels)
    label_indices(data.labels, clf.labels)  # unknown labels fail before a run is opened
    tracking.use_experiment(cfg.mlflow.experiment)
    engine_model = f"zero-shot {zcfg.engine} ({zcfg.encoder if zcfg.engine == 'embedding' else zcfg.nli_model})"
    with mlflow.start_run(run_name=f"zeroshot-{data.name}") as run:
        mlflow.set_tags({"stage": "zeroshot", "task": cfg.task, "model": engine_model, "engine": zcfg.engine})
        tracking.log_config(cfg)
        mlflow.log_dict(label_phrasings(zcfg, labels), "zeroshot/label_phrasings.json")
        selection: dict[str, Any] | None = None
        if validation is not None:
            y_val = label_indices(validation.labels, clf.labels)
            selection = compute_metrics(y_val, clf.predict_proba(validation.texts, validation.pairs), clf.labels)
            log_metrics(selection, "val")
        result = log_evaluation(cfg, clf, engine_model, data)
        # the registry compares on validation; without one, on the data evaluated
        score = (selection or result)["macro_f1"]
        folder = resolve_path(zcfg.output_dir)
        with atomic_dir(folder) as tmp:
            clf.save(tmp)
        info = log_classifier(folder, clf.labels, zcfg.registered_model if register else None)
        alias = None
        if register and info.registered_model_version is not None:
            alias = tracking.assign_alias(zcfg.registered_model, str(info.registered_model_version), score)
            mlflow.set_tag("registered", f"{zcfg.registered_model} v{info.registered_model_version} @{alias}")
    return {
        **result,
        "run_id": run.info.run_id,
        "val_macro_f1": selection["macro_f1"] if selection else None,
        "alias": alias,
        "registered_model": zcfg.registered_model if alias else None,
        "seconds": time.perf_counter() - started,
    }

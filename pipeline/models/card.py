"""The model card: `pipeline.json` in every model folder, typed, written and read here alone.

It says what the folder holds (a fine-tuned classifier or a zero-shot one), the task's labels and
input columns, how the model reads a text (`WindowSettings`), the decision applied to its logits
(window combination, temperature, gate, TF-IDF blend, offsets), where it came from, and its ONNX
export. Folders written before the card had a `schema_version` (a flat dict, "version 1") are
read by converting them; a card that cannot be read fails with one line saying to retrain.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.core.errors import PipelineError
from pipeline.core.io import write_json_atomic
from pipeline.text.windows import WindowSettings

CARD_FILE = "pipeline.json"
STANCE_TASKS = ("stance", "target_stance")  # the tasks whose pair is a claim or a target, not a title
SCHEMA_VERSION = 2
FINETUNED, EMBEDDING, NLI = "finetuned", "zeroshot-embedding", "zeroshot-nli"
Combine = Literal["mean_logits", "max_logits", "mean_probs", "first"]
ArticleReading = Literal["windows", "mention_sentences"]


class _Card(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecisionCard(_Card):
    """What is done with a backend's window logits (see models/decision.py)."""

    combine: Combine
    temperature: float = 1.0
    multi_label: bool = False  # sigmoid per label; an article gets every label at or above its threshold
    thresholds: list[float] | None = None  # multi-label: per label, fitted on validation (None: 0.5)
    gate_label: str | None = None  # two-stage: the relatedness gate (gate.json) decides this label first
    tfidf_blend: tuple[float, float] | None = None  # stacking weights (transformer, TF-IDF); the TF-IDF files beside
    tfidf_first: float | None = None  # where the TF-IDF model is this sure it answers alone (set by export)
    class_bias: list[float] | None = None  # per-class log-probability offsets
    article_bias: list[float] | None = None  # further offsets for texts longer than one window
    article_reading: ArticleReading = (
        "windows"  # pair texts longer than one window: their windows, or mention sentences
    )


class TrainingCard(_Card):
    val_macro_f1: float | None = None
    epoch: int | None = None
    data_digest: str | None = None
    # every step of the training is done (the decision fitted on validation): only such a folder is
    # logged or registered; False while it is an epoch's checkpoint, None in cards written before this
    complete: bool | None = None
    teacher: str | None = None  # distilled: the URI of the model whose soft labels it learnt


class ZeroShotCard(_Card):
    encoder: str | None = None  # embedding engine: the sentence encoder's name
    phrasings: dict[str, list[str]] | None = None  # embedding engine: each label's phrasings (its prototype)
    pooling: Literal["mean", "first"] = "mean"  # embedding engine: the mean of the windows, or the first only
    nli_model: str | None = None
    hypothesis_template: str | None = None


class ModelCard(_Card):
    schema_version: int = SCHEMA_VERSION
    kind: Literal["finetuned", "zeroshot-embedding", "zeroshot-nli"]
    task: str | None
    labels: list[str]
    text_columns: list[str]
    pair_column: str | None
    pooling: Literal["cls", "mean", "mean_mention"] = "cls"  # the classifier head (fine-tuned models)
    windows: WindowSettings
    decision: DecisionCard
    training: TrainingCard = TrainingCard()
    zeroshot: ZeroShotCard | None = None
    onnx: str | None = None  # the ONNX file predict runs on a CPU, if exported

    @property
    def is_zeroshot(self) -> bool:
        return self.kind != FINETUNED

    @property
    def multi_label(self) -> bool:
        return self.decision.multi_label


def _from_version_1(meta: dict[str, Any]) -> dict[str, Any]:
    """A flat pipeline.json of the first format, as a card."""
    kind = str(meta.get("kind", FINETUNED))
    pooling = str(meta.get("pooling", "cls"))
    windows = {k: meta[k] for k in ("max_length", "stride", "max_windows")}
    card: dict[str, Any] = {
        "kind": kind,
        "task": meta.get("task"),
        "labels": meta["labels"],
        "text_columns": meta.get("text_columns", []),
        "pair_column": meta.get("pair_column"),
        "onnx": meta.get("onnx"),
        "training": {k: meta.get(k) for k in ("val_macro_f1", "epoch", "data_digest")},
    }
    if kind == FINETUNED:
        windows |= {
            "mark_pair": bool(meta.get("mark_pair", False)),
            "evidence_first": bool(meta.get("evidence_first", False)),
            "mention_pool": pooling == "mean_mention",
        }
        decision = {k: meta.get(k) for k in ("gate_label", "tfidf_blend", "tfidf_first", "class_bias", "article_bias")}
        card["decision"] = {"combine": meta["combine"], "temperature": float(meta.get("temperature", 1.0)), **decision}
        card["pooling"] = pooling
    elif kind == EMBEDDING:
        card["decision"] = {"combine": "first", "temperature": float(meta["temperature"])}
        card["zeroshot"] = {"encoder": meta.get("encoder"), "phrasings": meta["phrasings"], "pooling": pooling}
    else:
        card["decision"] = {"combine": "mean_probs"}
        card["zeroshot"] = {"nli_model": meta.get("nli_model"), "hypothesis_template": meta["hypothesis_template"]}
    return card | {"windows": windows}


def read_card(folder: Path) -> ModelCard:
    path = folder / CARD_FILE
    if not path.is_file():
        raise PipelineError(f"{folder} is not a pipeline model folder (no {CARD_FILE})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        version = raw.get("schema_version", 1)
        if version > SCHEMA_VERSION:
            raise PipelineError(
                f"{path} is of model card version {version}; this pipeline reads up to {SCHEMA_VERSION}"
            )
        return ModelCard.model_validate(_from_version_1(raw) if version == 1 else raw)
    except ValidationError as err:
        first = err.errors()[0]
        reason = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
        raise PipelineError(f"{path} cannot be read ({reason}); retrain the model, or export it again") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PipelineError(f"{path} cannot be read ({reason}); retrain the model, or export it again") from None


def write_card(folder: Path, card: ModelCard) -> None:
    write_json_atomic(folder / CARD_FILE, card.model_dump(mode="json"))

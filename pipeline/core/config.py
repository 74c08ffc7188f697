"""Configuration: one typed YAML file per task, dotted overrides, and the project's paths.

Every setting lives in the YAML file; the models below only validate it (an unknown or
mistyped key fails with its dotted name) and carry no defaults of their own, so the file
is the single place to read what a run did.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.core.errors import PipelineError

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the `pipeline` package


def project_root() -> Path:
    """The folder that holds configs/, the MLflow store and prepared data.

    PIPELINE_HOME wins; else the source checkout this package is installed from
    (editable install); else the working directory.
    """
    if env := os.environ.get("PIPELINE_HOME"):
        return Path(env).resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "configs").is_dir():
        return checkout
    return Path.cwd()


def resolve_path(path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (project_root() / p).resolve()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=False)


class JoinConfig(Strict):
    source: str
    key: str  # `on` would read as a YAML boolean


class TestSourceConfig(Strict):
    source: str
    join: JoinConfig | None


class EvalSetConfig(Strict):
    """A labelled file described in the config: an extra test set, or extra training data."""

    name: str
    source: str
    where: dict[str, list[str]] | None
    text_columns: list[str] = Field(min_length=1)
    pair_column: str | None
    label_column: str
    label_map: dict[str, str] | None
    # optional caps, for big sets of long articles: a label-stratified sample of max_rows rows,
    # each text cut after max_words words (its lede)
    max_rows: int | None = Field(default=None, ge=1)
    max_words: int | None = Field(default=None, ge=1)


class DataConfig(Strict):
    source: str
    where: dict[str, list[str]] | None
    join: JoinConfig | None
    test: TestSourceConfig | None
    text_columns: list[str] = Field(min_length=1)
    pair_column: str | None
    label_column: str | None  # null: multi-label as 0/1 columns (label_columns)
    label_map: dict[str, str] | None
    multi_label: bool  # an article may have several labels (or none of the 0/1 columns set)
    label_separator: str | None  # multi-label in one column: what separates the labels of a cell
    label_columns: list[str] | None  # multi-label as one 0/1 column a label, named like the label
    split_column: str | None
    split_names: dict[Literal["train", "validation", "test"], str]
    split_fractions: dict[Literal["validation", "test"], float]
    labels: list[str] | None
    id_column: str | None
    deduplicate_test: bool
    group_columns: list[str] | None
    group_link_skip_labels: list[str] | None
    split_seed: int
    prepared_dir: str
    extra_train: list[EvalSetConfig]
    extra_tests: list[EvalSetConfig]

    @model_validator(mode="after")
    def _labels_given_once(self) -> DataConfig:
        if (self.label_column is None) == (self.label_columns is None):
            raise ValueError("give exactly one of data.label_column and data.label_columns")
        if self.label_columns is not None and not self.multi_label:
            raise ValueError("data.label_columns (0/1 columns) needs data.multi_label: true")
        if self.multi_label and self.label_column is not None and not self.label_separator:
            raise ValueError("data.multi_label with data.label_column needs data.label_separator")
        return self


def stride_advice(section: str, stride: int, max_length: int) -> str:
    """Why a window and its stride do not fit, and the values that would."""
    return (
        f"{section}.stride ({stride}) must be under half of {section}.max_length ({max_length}): "
        f"set {section}.stride to at most {max(max_length // 2 - 1, 0)}, or {section}.max_length to at least "
        f"{2 * stride + 2}"
    )


class ModelConfig(Strict):
    name: str
    max_length: int = Field(ge=16, le=8192)
    stride: int = Field(ge=0)
    max_windows: int = Field(ge=1)
    combine: Literal["mean_logits", "max_logits", "mean_probs", "first"]
    attention_dropout: float = Field(ge=0.0, lt=1.0)
    pooling: Literal["cls", "mean", "mean_mention"]
    gate_label: str | None
    gate_threshold: float = Field(gt=0.0, lt=1.0)
    mark_pair: bool
    evidence_first: bool
    tfidf_blend: bool
    tfidf_first: bool
    # pair tasks: an article (a text over one window) read by its windows, or by its sentences that mention the pair
    article_reading: Literal["windows", "mention_sentences"]

    @model_validator(mode="after")
    def _stride_fits(self) -> ModelConfig:
        if self.stride >= self.max_length // 2:
            raise ValueError(stride_advice("model", self.stride, self.max_length))
        if self.tfidf_blend and self.gate_label is not None:
            raise ValueError("model.tfidf_blend and model.gate_label cannot both be set")
        if self.tfidf_first and not self.tfidf_blend:
            raise ValueError("model.tfidf_first needs model.tfidf_blend: true")
        return self


class TrainConfig(Strict):
    windows: Literal["first", "all"]
    max_length: int | None = Field(ge=16, le=8192)  # training windows; null: model.max_length
    stride: int | None = Field(ge=0)  # null: model.stride
    max_windows: int | None = Field(ge=1)  # with windows: all; null: model.max_windows
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_ratio: float = Field(ge=0, le=1)
    class_weights: Literal["none", "balanced", "sqrt"]
    early_stopping_patience: int = Field(ge=0)
    pair_dropout: float = Field(ge=0, lt=1)
    seed: int
    output_dir: str
    max_steps: int | None = Field(ge=1)
    max_examples: int | None = Field(ge=1)
    class_bias: bool  # per-class offsets fitted on validation for macro-F1, applied wherever the model predicts
    article_bias_set: str | None  # a data.extra_tests set of articles: offsets for texts over one window fitted on it
    fast_paths: bool  # pipeline/fast_bert.py: [CLS]-only last layer, torch.rand dropout masks on CPU
    thresholds: Literal["fixed", "global", "per_label"]  # multi-label: 0.5, or fitted on validation

    @model_validator(mode="after")
    def _stride_fits(self) -> TrainConfig:
        if self.max_length is not None and self.stride is not None and self.stride >= self.max_length // 2:
            raise ValueError(stride_advice("train", self.stride, self.max_length))
        return self


class RuntimeConfig(Strict):
    device: str
    precision: Literal["auto", "bf16", "fp16", "fp32"]
    threads: int = Field(ge=0)
    eval_batch_size: int = Field(ge=1)


class BaselineConfig(Strict):
    max_features: int = Field(ge=1)
    ngram_max: int = Field(ge=1, le=3)
    c_grid: list[float] = Field(min_length=1)
    solver: Literal["lbfgs", "saga", "liblinear"]
    class_weight: Literal["none", "balanced"]  # balanced: each class (each label's positives) weighted by its rarity


class MlflowConfig(Strict):
    experiment: str
    registered_model: str


class SelfTrainingConfig(Strict):
    keep_fraction: float = Field(gt=0.0, le=1.0)
    registered_model: str
    output_dir: str


class ZeroShotConfig(Strict):
    engine: Literal["embedding", "nli"]
    encoder: str
    nli_model: str | None
    hypothesis_template: str
    max_length: int = Field(ge=16, le=8192)
    stride: int = Field(ge=0)
    max_windows: int = Field(ge=1)
    pooling: Literal["mean", "first"]
    temperature: float = Field(gt=0.0)
    default_phrasings: list[str] = Field(min_length=1)
    labels: dict[str, list[str]] = Field(min_length=2)
    registered_model: str
    output_dir: str
    self_training: SelfTrainingConfig

    @model_validator(mode="after")
    def _consistent(self) -> ZeroShotConfig:
        if self.engine == "nli" and not self.nli_model:
            raise ValueError("zeroshot.engine is nli but zeroshot.nli_model is not set (a hub id or a folder)")
        if "{}" not in self.hypothesis_template or any("{}" not in p for p in self.default_phrasings):
            raise ValueError("zeroshot.hypothesis_template and zeroshot.default_phrasings need a {} for the label")
        if self.stride >= self.max_length // 2:
            raise ValueError(stride_advice("zeroshot", self.stride, self.max_length))
        return self


class TransferSourceConfig(Strict):
    name: str
    source: str
    where: dict[str, list[str]] | None
    text_columns: list[str] = Field(min_length=1)


class DistillConfig(Strict):
    teacher: str  # a model reference (models:/NAME@ALIAS, runs:/ID/model, a folder) whose logits the student learns
    temperature: float = Field(gt=0)
    alpha: float = Field(ge=0, le=1)  # weight of the teacher's soft labels; 1 - alpha: the gold labels
    soft_labels: str  # the teacher's logits and the digest of the examples they are for
    transfer_size: int = Field(ge=0)  # unlabelled (sentence, entity) pairs drawn from transfer_sources
    transfer_sources: list[TransferSourceConfig]


class Config(Strict):
    task: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    runtime: RuntimeConfig
    baseline: BaselineConfig
    mlflow: MlflowConfig
    zeroshot: ZeroShotConfig | None
    distill: DistillConfig | None
    profiles: dict[str, dict[str, Any]]

    @model_validator(mode="after")
    def _article_bias_set_exists(self) -> Config:
        name = self.train.article_bias_set
        known = [e.name for e in self.data.extra_tests]
        if name is not None and name not in known:
            raise ValueError(
                f"train.article_bias_set {name!r} is not a data.extra_tests set ({', '.join(known) or 'none'})"
            )
        return self

    @model_validator(mode="after")
    def _mention_reading_has_pairs(self) -> Config:
        if self.model.article_reading == "mention_sentences" and self.data.pair_column is None:
            raise ValueError(
                "model.article_reading: mention_sentences reads the sentences mentioning the pair: set data.pair_column"
            )
        return self

    @model_validator(mode="after")
    def _multi_label_fits(self) -> Config:
        if not self.data.multi_label:
            return self
        single_only = {
            "model.gate_label": self.model.gate_label is not None,
            "model.tfidf_first": self.model.tfidf_first,
            "train.class_bias": self.train.class_bias,
            "train.article_bias_set": self.train.article_bias_set is not None,
            "zeroshot": self.zeroshot is not None,
            "distill": self.distill is not None,
            "model.article_reading: mention_sentences": self.model.article_reading == "mention_sentences",
            "data.extra_train": bool(self.data.extra_train),
            "data.extra_tests": bool(self.data.extra_tests),
        }
        if set_keys := [k for k, on in single_only.items() if on]:
            raise ValueError(f"data.multi_label: {', '.join(set_keys)} work on single-label tasks only")
        return self

    @model_validator(mode="after")
    def _distill_has_pairs(self) -> Config:
        if self.distill is None:
            return self
        if self.distill.transfer_size and self.data.pair_column is None:
            raise ValueError(
                "distill.transfer_size: the transfer set pairs sentences with entities; it needs data.pair_column"
            )
        if self.train.class_weights != "none":
            raise ValueError("distill: the soft labels carry the classes' balance; set train.class_weights: none")
        return self

    @model_validator(mode="after")
    def _mention_pooling_has_pairs(self) -> Config:
        if self.model.pooling == "mean_mention" and self.data.pair_column is None:
            raise ValueError("model.pooling 'mean_mention' pools the pair's mentions: it needs data.pair_column")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _parse_value(text: str) -> Any:
    # YAML parsing gives `1` -> int, `1e-4` -> str (YAML 1.1), `[a, b]` -> list, `null` -> None.
    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; the key must already exist in the file."""
    for item in overrides:
        if "=" not in item:
            raise PipelineError(f"override {item!r} is not of the form key.path=value")
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        node: Any = raw
        for depth, key in enumerate(keys[:-1]):
            if not isinstance(node, dict) or key not in node:
                raise PipelineError(f"unknown config key: {'.'.join(keys[: depth + 1])}")
            node = node[key]
        if not isinstance(node, dict) or keys[-1] not in node:
            raise PipelineError(f"unknown config key: {dotted.strip()}")
        node[keys[-1]] = _parse_value(text)
    return raw


def _format_validation_error(err: ValidationError) -> str:
    errors = err.errors()
    # a misspelt key is both unknown and missing: name the unknown one, with a suggestion
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        missing = [".".join(map(str, e["loc"])) for e in errors if e["type"] == "missing"]
        close = difflib.get_close_matches(where, missing, n=1)
        return f"unknown config key: {where}" + (f" (did you mean {close[0]}?)" if close else "")
    if first["type"] == "value_error":  # our own cross-field checks carry the whole message
        return str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        return f"missing config key: {where}"
    return f"bad config value for {where}: {first['msg']} (got {first.get('input')!r})"


def default_config_path(task: str = "topic") -> Path:
    return project_root() / "configs" / f"{task}.yaml"


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, profile: str | None = None
) -> Config:
    """The config file, then the named profile's overrides, then `--set` overrides, validated."""
    cfg_path = Path(path) if path else default_config_path()
    if not cfg_path.is_file():
        raise PipelineError(f"config file not found: {cfg_path}")
    try:
        # libyaml's loader where PyYAML has it: the pure-Python one costs 70 ms of a one-article predict
        safe_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # both are PyYAML's safe loaders
        raw = yaml.load(cfg_path.read_text(encoding="utf-8"), Loader=safe_loader)  # nosec B506
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PipelineError(f"config file {cfg_path} is not valid YAML: {problem}{at}") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"config file {cfg_path} does not hold a mapping")
    if profile:
        profiles = raw.get("profiles") or {}
        if profile not in profiles:
            raise PipelineError(
                f"{cfg_path.name} has no profile {profile!r} (profiles: {', '.join(profiles) or 'none'})"
            )
        raw = apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in (profiles[profile] or {}).items()])
    raw = apply_overrides(raw, overrides or [])
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise PipelineError(f"{cfg_path.name}: {_format_validation_error(err)}") from None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, the shape MLflow params take."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out

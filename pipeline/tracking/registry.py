"""The model registry: registering a model folder with its `champion` / `challenger` alias, and finding a model by
reference (a folder, `models:/NAME@ALIAS`, `models:/NAME/VERSION`, `runs:/...`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.config import project_root
from pipeline.core.errors import PipelineError
from pipeline.models.card import CARD_FILE
from pipeline.models.loading import load_model
from pipeline.models.predictor import Predictor
from pipeline.tracking.store import (
    StoreUnavailable,
    client,
    first_line,
    import_mlflow,
    is_locked,
    read_sqlite,
    shown_uri,
    store_reads,
)

CHAMPION, CHALLENGER = "champion", "challenger"
SELECTION_METRIC = "val_macro_f1"


@dataclass
class Registered:
    model_uri: str  # models:/NAME/VERSION when registered, else the run's model URI
    alias: str | None  # champion or challenger; None when not registered
    version: str | None


def register_model(folder: Path, labels: list[str], name: str | None, selection_score: float) -> Registered:
    """Log `folder` as the active run's pyfunc model; with a `name`, register it there and give it the
    alias its validation score earns (`assign_alias`), noted as a tag of the run."""
    import mlflow

    # lazy on purpose: defining the pyfunc class imports mlflow (2 s), which predict never needs
    from pipeline.tracking.pyfunc import log_pyfunc

    info = log_pyfunc(folder, labels, name)
    version = info.registered_model_version
    if name is None or version is None:
        return Registered(info.model_uri, None, None)
    alias = assign_alias(name, str(version), selection_score)
    mlflow.set_tag("registered", f"{name} v{version} @{alias}")
    return Registered(f"models:/{name}/{version}", alias, str(version))


def champion_score(name: str) -> tuple[str, float] | None:
    """(version, validation macro-F1) of the current champion, or None."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client().get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if is_locked(err):  # not "no champion": that would hand the alias to any model
            raise
        return None
    score = mv.tags.get(SELECTION_METRIC)
    return (mv.version, float(score)) if score is not None else (mv.version, float("-inf"))


def assign_alias(name: str, version: str, val_macro_f1: float) -> str:
    """champion if first or strictly better on validation than the champion, else challenger."""
    c = client()
    c.set_model_version_tag(name, version, SELECTION_METRIC, f"{val_macro_f1:.6f}")
    current = champion_score(name)
    alias = CHAMPION if current is None or val_macro_f1 > current[1] else CHALLENGER
    c.set_registered_model_alias(name, alias, version)
    return alias


def _model_folder(root: Path) -> Path:
    hits = sorted(root.rglob(CARD_FILE))
    if not hits:
        raise PipelineError(f"no pipeline model inside {root}")
    return hits[0].parent


def resolve_model(ref: str) -> tuple[Path, str]:
    """A local folder for a model reference: a folder, `models:/NAME@ALIAS|VERSION` or `runs:/...`.

    Registry models in a local store are read in place; remote ones are downloaded once
    into .cache/models/NAME/vVERSION. Returns (folder, canonical URI).
    """
    local = Path(ref).expanduser()
    if local.is_dir():
        return _model_folder(local), str(local.resolve())
    if not ref.startswith(("models:/", "runs:/")):
        raise PipelineError(f"model not found: {ref} (give a folder, models:/NAME@ALIAS or runs:/RUN/PATH)")
    if fast := _local_alias(ref):
        return fast
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    try:
        with store_reads():
            return _resolve_in_store(ref, mlflow)
    except MlflowException as err:
        raise PipelineError(f"model {ref} not found in {shown_uri()}: {first_line(err)}") from None


def _resolve_in_store(ref: str, mlflow: Any) -> tuple[Path, str]:
    if ref.startswith("models:/"):
        name, _, which = ref[len("models:/") :].partition("@")
        c = client()
        if which:
            mv = c.get_model_version_by_alias(name, which)
        else:
            name, _, version = ref[len("models:/") :].partition("/")
            mv = c.get_model_version(name, version)
        uri = f"models:/{name}/{mv.version}"
        source = c.get_model_version_download_uri(name, mv.version)
        if source.startswith("file://") and Path(source[7:]).is_dir():
            return _model_folder(Path(source[7:])), uri
        cache = project_root() / ".cache" / "models" / name / f"v{mv.version}"
    else:
        uri = ref
        cache = project_root() / ".cache" / "runs" / ref[len("runs:/") :].replace("/", "_")
    if not cache.is_dir():
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent))
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp))
            os.replace(tmp, cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _model_folder(cache), uri


def _local_alias(ref: str) -> tuple[Path, str] | None:
    """`models:/NAME@ALIAS` read straight from a local sqlite store, without importing MLflow (about
    2 s of a one-article predict); None whenever anything is not as expected, and MLflow answers.
    A store that answers but has no such alias raises at once: predict's optional stance models
    would otherwise import MLflow only to learn that they are absent. A locked store is waited
    for, then fails in one line (`read_sqlite`)."""
    name, _, alias = ref[len("models:/") :].partition("@")
    if not alias:
        return None
    rows = read_sqlite(
        "SELECT mv.version, mv.storage_location FROM registered_model_aliases a JOIN model_versions mv "
        "ON a.name = mv.name AND a.version = mv.version WHERE a.name = ? AND a.alias = ?",
        (name, alias),
    )
    if rows is None:
        return None
    if not rows:
        raise PipelineError(f"model {ref} not found in {shown_uri()}")
    version, location = rows[0]
    if not str(location).startswith("file://") or not Path(str(location)[7:]).is_dir():
        return None
    try:
        return _model_folder(Path(str(location)[7:])), f"models:/{name}/{version}"
    except PipelineError:
        return None


def load_registered(
    model_ref: str | None, registered_model: str, device: str, precision: str, threads: int, batch_size: int = 32
) -> tuple[Predictor, str]:
    """The given model, or the registered champion; says to run `make train` when there is none."""
    ref = model_ref or f"models:/{registered_model}@{CHAMPION}"
    try:
        folder, uri = resolve_model(ref)
    except StoreUnavailable:  # not "no trained model": the store could not say
        raise
    except PipelineError:
        if model_ref is None:
            raise PipelineError(
                f"no trained model ({ref}); run `make train` first, or predict with --zero-shot"
            ) from None
        raise
    return load_model(folder, device, precision, batch_size, threads), uri

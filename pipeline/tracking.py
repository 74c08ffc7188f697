"""MLflow plumbing shared by the stages: store location, experiments, registry aliases, model lookup.

By default runs go to a sqlite database and an artifact folder inside the project
(`mlflow.db`, `mlartifacts/`); MLFLOW_TRACKING_URI points elsewhere (a server, say).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import PACKAGE_DIR, Config, flatten, project_root
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from pipeline.modeling import TextClassifier

CHAMPION, CHALLENGER = "champion", "challenger"
SELECTION_METRIC = "val_macro_f1"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def artifact_root() -> Path:
    return project_root() / "mlartifacts"


def _import_mlflow() -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    # a server that goes away fails a call in seconds, not after minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    import mlflow

    # MLflow's advice on pickled pyfunc models, type hints and dataset sources is noise for our users
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


_server_checked: set[str] = set()


def check_server() -> None:
    """A tracking server that does not answer fails here at once, in one line, rather than after
    MLflow's retries (minutes); a local store needs no check."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")) or uri in _server_checked:
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
            response.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise PipelineError(
            f"MLflow tracking server {uri} does not answer ({reason}); start it, or unset MLFLOW_TRACKING_URI"
        ) from None
    _server_checked.add(uri)


def use_experiment(name: str) -> str:
    """Select (creating if needed) the experiment; local stores keep artifacts in the project."""
    mlflow = _import_mlflow()
    check_server()
    from mlflow.exceptions import MlflowException

    try:
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            location = artifact_root().as_uri() + f"/{name}" if tracking_uri().startswith("sqlite:") else None
            exp_id = mlflow.create_experiment(name, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        mlflow.set_experiment(experiment_id=exp_id)
    except MlflowException as err:
        raise PipelineError(f"MLflow store {tracking_uri()} failed: {str(err).splitlines()[0]}") from None
    return str(exp_id)


def git_commit() -> str | None:
    """The commit of the code that runs, `+dirty` when it has uncommitted changes; None outside git."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def log_config(cfg: Config) -> None:
    """The resolved config as params and as config.yaml, and the code's git commit, on the active run."""
    mlflow = _import_mlflow()
    params = {k: ("null" if v is None else str(v))[:500] for k, v in flatten(cfg.to_dict()).items()}
    mlflow.log_params(params)
    mlflow.log_dict(cfg.to_dict(), "config.yaml")
    commit = git_commit()
    if commit:
        mlflow.set_tags({"git_commit": commit, "mlflow.source.git.commit": commit.removesuffix("+dirty")})


def client() -> MlflowClient:
    _import_mlflow()
    check_server()
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def champion_score(name: str) -> tuple[str, float] | None:
    """(version, validation macro-F1) of the current champion, or None."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
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
    from pipeline.modeling import MODEL_META

    hits = sorted(root.rglob(MODEL_META))
    if not hits:
        raise PipelineError(f"no pipeline model inside {root}")
    return hits[0].parent


class TolerantLog:
    """Calls MLflow logging functions until one fails, then skips the rest: training goes on, and
    the first error is kept to report once the model is safe on disk."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled  # off in the other processes of a distributed run: the main one logs
        self.error: BaseException | None = None

    def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        if not self.enabled or self.error is not None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:  # MlflowException, requests' connection errors: the store is what failed
            self.error = err


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
    mlflow = _import_mlflow()
    from mlflow.exceptions import MlflowException

    try:
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
    except MlflowException as err:
        raise PipelineError(f"model {ref} not found in {tracking_uri()}: {str(err).splitlines()[0]}") from None


def _local_alias(ref: str) -> tuple[Path, str] | None:
    """`models:/NAME@ALIAS` read straight from a local sqlite store, without importing MLflow (about
    2 s of a one-article predict); None whenever anything is not as expected, and MLflow answers.
    A store that answers but has no such alias raises at once: predict's optional stance models
    would otherwise import MLflow only to learn that they are absent."""
    import sqlite3

    uri = tracking_uri()
    name, _, alias = ref[len("models:/") :].partition("@")
    db = Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None
    if not alias or db is None or not db.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute(
                "SELECT mv.version, mv.storage_location FROM registered_model_aliases a JOIN model_versions mv "
                "ON a.name = mv.name AND a.version = mv.version WHERE a.name = ? AND a.alias = ?",
                (name, alias),
            ).fetchone()
    except sqlite3.Error:
        return None
    if row is None:
        raise PipelineError(f"model {ref} not found in {uri}")
    if not str(row[1]).startswith("file://") or not Path(str(row[1])[7:]).is_dir():
        return None
    try:
        return _model_folder(Path(str(row[1])[7:])), f"models:/{name}/{row[0]}"
    except PipelineError:
        return None


def load_classifier(
    model_ref: str | None, registered_model: str, device: str, precision: str, threads: int, batch_size: int = 32
) -> tuple[TextClassifier, str]:
    """The given model, or the registered champion; says to run `make train` when there is none."""
    from pipeline.modeling import load_model

    ref = model_ref or f"models:/{registered_model}@{CHAMPION}"
    try:
        folder, uri = resolve_model(ref)
    except PipelineError:
        if model_ref is None:
            raise PipelineError(
                f"no trained model ({ref}); run `make train` first, or predict with --zero-shot"
            ) from None
        raise
    return load_model(folder, device, precision, batch_size, threads), uri

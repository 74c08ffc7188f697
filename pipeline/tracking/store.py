"""The MLflow store: where runs go, the experiment of a task, the resolved config on a run, failing servers.

By default runs go to a sqlite database and an artifact folder inside the project
(`mlflow.db`, `mlartifacts/`); MLFLOW_TRACKING_URI points elsewhere (a server, say).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.config import PACKAGE_DIR, Config, flatten, project_root
from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def artifact_root() -> Path:
    return project_root() / "mlartifacts"


def import_mlflow() -> Any:
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
        # only an http(s) tracking URI gets here (checked above)
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:  # nosec B310
            response.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise PipelineError(
            f"MLflow tracking server {uri} does not answer ({reason}); start it, or unset MLFLOW_TRACKING_URI"
        ) from None
    _server_checked.add(uri)


def use_experiment(name: str) -> str:
    """Select (creating if needed) the experiment; local stores keep artifacts in the project."""
    mlflow = import_mlflow()
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
    # git with a fixed argv, on the package's own folder: no input of anyone's
    import subprocess  # nosec B404

    def git(*args: str) -> str:
        return subprocess.run(  # nosec B603 B607
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
    mlflow = import_mlflow()
    params = {k: ("null" if v is None else str(v))[:500] for k, v in flatten(cfg.to_dict()).items()}
    mlflow.log_params(params)
    mlflow.log_dict(cfg.to_dict(), "config.yaml")
    commit = git_commit()
    if commit:
        mlflow.set_tags({"git_commit": commit, "mlflow.source.git.commit": commit.removesuffix("+dirty")})


def client() -> MlflowClient:
    import_mlflow()
    check_server()
    from mlflow.tracking import MlflowClient

    return MlflowClient()


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


def store_errors() -> tuple[type[BaseException], ...]:
    """What a failing MLflow store raises: MLflow's own errors and requests' connection errors."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException

    return (MlflowException, RequestException)

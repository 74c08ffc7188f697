"""The MLflow store: where runs go, the experiment of a task, the resolved config on a run, failing servers.

By default runs go to a sqlite database and an artifact folder inside the project
(`mlflow.db`, `mlartifacts/`); MLFLOW_TRACKING_URI points elsewhere (a server, say). Every
experiment is marked as a model-training one with a saved runs view of the key metrics, every
run records the process that runs it (so that a run whose process died is marked KILLED the
next time a run starts), credentials in a tracking URI never reach a message, and a locked
sqlite store is waited for a few seconds and then reported in one line.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import sqlite3
import time
import warnings
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.config import PACKAGE_DIR, Config, flatten, project_root
from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# MLflow 3's experiment kind (the UI's experiment-kind selector writes it, mlflow/demo sets it too)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # "Machine learning" in the UI; the other is genai_development
# A saved runs view is an experiment tag the UI lists under "saved views" and opens with ?viewStateShareKey=
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
KEY_METRICS_VIEW = "pipeline-key-metrics"
# few, so that they fit a window: the UI shows a column only for a metric some run has
KEY_METRICS = ("test_macro_f1", "val_macro_f1", "test_accuracy", "test_micro_f1", "test_fnc_score")
KEY_TAGS = ("stage", "task", "model")

# who runs a run: set on every new run, and again by the process that resumes one
OWNER_HOST, OWNER_PID, OWNER_PID_NAMESPACE, OWNER_PROCESS_START = (
    "pipeline.host",
    "pipeline.pid",
    "pipeline.pid_namespace",
    "pipeline.process_start",
)
KILLED_NOTE = "pipeline.marked_killed"

STORE_WAIT_ENV = "PIPELINE_STORE_WAIT_SECONDS"
STORE_WAIT_DEFAULT = 10.0


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


_CREDENTIALS = re.compile(r"(?<=://)[^/\s?#]*@")


def mask_credentials(text: str) -> str:
    """`text` with the user and password of every URI in it replaced by `***`
    (`http://user:secret@host/` -> `http://***@host/`), for anything a message prints."""
    return _CREDENTIALS.sub("***@", text)


def shown_uri() -> str:
    """The tracking URI as messages show it: without its credentials."""
    return mask_credentials(tracking_uri())


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
    # it logs a database error's traceback before raising it as an MlflowException, which we report in one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

    if _CREDENTIALS.search(tracking_uri()):
        # MLflow prints "View run ... at <tracking URI>/#/..." when a run ends, credentials included
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(tracking_uri())
    _register_owner_tags()
    return mlflow


_server_checked: set[str] = set()


def _health_request(uri: str) -> Any:
    """The server's /health request; urllib takes no credentials in a URL, so those of the URI go
    as basic auth, as MLflow (requests) sends them."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)).rstrip("/") + "/health")
    if parts.username is not None:
        user, password = urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or "")
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    return request


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
        with urllib.request.urlopen(_health_request(uri), timeout=5) as response:  # nosec B310
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = mask_credentials(str(getattr(err, "reason", err)))
        raise StoreUnavailable(
            f"MLflow tracking server {shown_uri()} does not answer ({reason}); start it, or unset MLFLOW_TRACKING_URI"
        ) from None
    _server_checked.add(uri)


class StoreUnavailable(PipelineError):
    """The store cannot be reached or read now: a model or experiment may well be in it."""


class StoreBusy(StoreUnavailable):
    """The sqlite store stayed locked by another process for longer than we wait."""


def store_wait_seconds() -> float:
    """How long a locked sqlite store is waited for: PIPELINE_STORE_WAIT_SECONDS, else 10 s."""
    raw = os.environ.get(STORE_WAIT_ENV, "").strip()
    if not raw:
        return STORE_WAIT_DEFAULT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise PipelineError(f"{STORE_WAIT_ENV}={raw!r}: give a number of seconds, 0 or more")
    return seconds


def is_locked(err: BaseException) -> bool:
    """Whether `err` (sqlite3's, SQLAlchemy's or MLflow's wrapping of them) is sqlite's lock error."""
    seen: BaseException | None = err
    for _ in range(5):  # the error and the ones it was raised from
        if seen is None:
            return False
        if "database is locked" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def busy_error(waited: float) -> StoreBusy:
    return StoreBusy(
        f"the MLflow store is busy (database is locked): {shown_uri()} stayed locked by another process for "
        f"{waited:g} s; try again when it is done (or wait longer with {STORE_WAIT_ENV})"
    )


def _sqlite_file() -> Path | None:
    uri = tracking_uri()
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def read_sqlite(query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]] | None:
    """`query`'s rows from the local sqlite store, read-only, waiting up to `store_wait_seconds()`
    while another process holds a lock (sqlite retries until then); None when the store is not a
    sqlite file, or the query fails otherwise (MLflow then answers). A lock held past the wait
    raises StoreBusy."""
    wait = store_wait_seconds()
    db = _sqlite_file()
    if db is None or not db.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=wait)) as conn:
            return list(conn.execute(query, params).fetchall())
    except sqlite3.Error as err:
        if is_locked(err):
            raise busy_error(wait) from None
        return None


def wait_for_store() -> None:
    """Return once the local sqlite store can be read, waiting while another process holds a
    lock on it; StoreBusy after `store_wait_seconds()`. MLflow's own wait on a lock is a fixed 20 s
    a query, then a traceback: this makes the wait ours, and the failure one line."""
    read_sqlite("SELECT count(*) FROM sqlite_master")


@contextmanager
def store_reads() -> Iterator[None]:
    """Reads of the store: wait for a locked sqlite store, and report a lock MLflow still meets as StoreBusy."""
    wait_for_store()
    try:
        yield
    except Exception as err:
        if is_locked(err):
            raise busy_error(store_wait_seconds()) from None
        raise


def use_experiment(name: str) -> str:
    """Select (creating if needed) the experiment; local stores keep artifacts in the project. The
    experiment is marked as a model-training one with the key-metrics view (`mark_experiment`),
    and its runs whose process died are marked KILLED (`mark_lost_runs`)."""
    mlflow = import_mlflow()
    check_server()
    from mlflow.exceptions import MlflowException

    try:
        with store_reads():
            exp = mlflow.get_experiment_by_name(name)
            if exp is None:
                location = artifact_root().as_uri() + f"/{name}" if tracking_uri().startswith("sqlite:") else None
                exp_id = mlflow.create_experiment(name, artifact_location=location, tags=experiment_tags({}))
            else:
                exp_id = exp.experiment_id
                mark_experiment(exp_id, exp.tags)
            mlflow.set_experiment(experiment_id=exp_id)
            mark_lost_runs(str(exp_id))
    except MlflowException as err:
        raise PipelineError(f"MLflow store {shown_uri()} failed: {first_line(err)}") from None
    return str(exp_id)


def first_line(err: BaseException) -> str:
    """The first line of an error's message, without credentials."""
    return mask_credentials((str(err).strip().splitlines() or [type(err).__name__])[0][:300])


def key_metrics_view() -> dict[str, Any]:
    """The runs table's state in the saved view: the run's registered model, our tags and the key
    metrics (the UI's default columns are source, models and datasets, and no metric)."""
    columns = ["attributes.`Models`"]
    columns += [f"tags.`{tag}`" for tag in KEY_TAGS] + [f"metrics.`{metric}`" for metric in KEY_METRICS]
    return {"selectedColumns": columns}


def experiment_tags(current: dict[str, str]) -> dict[str, str]:
    """The experiment tags that `current` lacks: the model-training kind (a kind already chosen is
    kept) and the key-metrics view (rewritten when our columns changed)."""
    missing = {}
    if not current.get(EXPERIMENT_KIND_TAG):
        missing[EXPERIMENT_KIND_TAG] = EXPERIMENT_KIND
    state = json.dumps(key_metrics_view(), separators=(",", ":"))
    key = VIEW_TAG_PREFIX + KEY_METRICS_VIEW
    try:
        saved = json.loads(current[key])
        if saved["state"] == state:
            return missing
        created = int(saved["createdAt"])
    except (KeyError, TypeError, ValueError):
        created = int(time.time() * 1000)
    view = {"name": "Key metrics", "createdAt": created, "updatedAt": int(time.time() * 1000), "state": state}
    return missing | {key: json.dumps(view, separators=(",", ":"))}


def mark_experiment(experiment_id: str, tags: dict[str, str]) -> None:
    """Give an experiment created before (or by another tool) the tags of ours."""
    missing = experiment_tags(tags)
    if missing:
        c = client()
        for key, value in missing.items():
            c.set_experiment_tag(experiment_id, key, value)


def runs_page(experiment_id: str) -> str:
    """The UI's address (after the server's root) of an experiment's runs table with the key metrics:
    MLflow 3.17's UI picks the experiment's first tab by its global GenAI / machine-learning switch,
    not by the experiment's kind, so the address says which."""
    return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={KEY_METRICS_VIEW}"


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """What tells process `pid` from a later one given the same pid: its start (clock ticks after
    boot) and the boot; "" where /proc does not say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()
    return f"{boot}:{fields[19]}" if len(fields) > 19 else ""


def owner_tags() -> dict[str, str]:
    """The tags that name this process as the one running a run."""
    pid = os.getpid()
    return {
        OWNER_HOST: socket.gethostname(),
        OWNER_PID: str(pid),
        OWNER_PID_NAMESPACE: _pid_namespace(),
        OWNER_PROCESS_START: _process_start(pid),
    }


def process_gone(tags: dict[str, str]) -> bool:
    """Whether the process a run's owner tags name has certainly ended: only a process of this
    host and pid namespace can be looked at; anything not sure counts as alive."""
    if tags.get(OWNER_HOST) != socket.gethostname() or tags.get(OWNER_PID_NAMESPACE, "") != _pid_namespace():
        return False
    try:
        pid = int(tags[OWNER_PID])
    except (KeyError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: a process of another user has it
        pass
    started, now = tags.get(OWNER_PROCESS_START, ""), _process_start(pid)
    return bool(started and now and started != now)  # the pid was given to another process since


def mark_lost_runs(experiment_id: str) -> list[str]:
    """Mark KILLED this experiment's runs that are RUNNING but whose process is gone (a training
    killed, a machine switched off); their ids. Runs of another host, and runs without owner tags,
    are left alone: nothing here can tell whether their process is alive."""
    from mlflow.entities import RunStatus

    c = client()
    lost = []
    for run in c.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        tags = run.data.tags
        if not process_gone(tags):
            continue
        note = f"process {tags[OWNER_PID]} on {tags[OWNER_HOST]} had ended; marked KILLED by process {os.getpid()}"
        c.set_tag(run.info.run_id, KILLED_NOTE, note)
        c.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        lost.append(run.info.run_id)
    return lost


def claim_active_run() -> bool:
    """Make the active run's owner tags name this process (a run resumed with
    `mlflow.start_run(run_id=...)` still names the process that was interrupted); False when no
    run is active."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return False
    tags = owner_tags()
    if any(run.data.tags.get(key) != value for key, value in tags.items()):
        mlflow.set_tags(tags)
    return True


_owner_registered = False


def _register_owner_tags() -> None:
    """Every new run, whoever starts it, gets `owner_tags()`: MLflow resolves a new run's tags through
    its run-context providers."""
    global _owner_registered
    if _owner_registered:
        return
    try:
        from mlflow.tracking.context.abstract_context import RunContextProvider
        from mlflow.tracking.context.registry import _run_context_provider_registry
    except ImportError:  # another MLflow: runs go untagged, and so are never marked KILLED
        return

    class OwnerContext(RunContextProvider):
        def in_context(self) -> bool:
            return True

        def tags(self) -> dict[str, str]:
            return owner_tags()

    _run_context_provider_registry.register(OwnerContext)
    _owner_registered = True


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
    wait_for_store()
    from mlflow.tracking import MlflowClient

    return MlflowClient()


class TolerantLog:
    """Calls MLflow logging functions until one fails, then skips the rest: training goes on, and
    the first error is kept to report once the model is safe on disk. The first call in a run also
    claims the run for this process (`claim_active_run`), so that a resumed run is not taken for a
    lost one."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled  # off in the other processes of a distributed run: the main one logs
        self.error: BaseException | None = None
        self.claimed = False

    def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        if not self.enabled or self.error is not None:
            return
        try:
            if not self.claimed:
                self.claimed = claim_active_run()
            fn(*args, **kwargs)
        except Exception as err:  # MlflowException, requests' connection errors: the store is what failed
            self.error = err


def store_errors() -> tuple[type[BaseException], ...]:
    """What a failing MLflow store raises: MLflow's own errors, requests' connection errors, and a
    database error MLflow did not wrap (sqlite's lock among them). StoreUnavailable is a
    PipelineError, whose message is already the one line to print."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException
    from sqlalchemy.exc import OperationalError

    return (MlflowException, RequestException, OperationalError, sqlite3.OperationalError)

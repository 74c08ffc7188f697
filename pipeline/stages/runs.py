"""Stage 6, compare: the runs of every task side by side, and champion/challenger promotion.

`pipeline runs` lists runs newest first (fine-tuned, zero-shot, TF-IDF and evaluation runs alike)
with their model, data digest, test macro-F1, duration and current registry alias.
`pipeline promote TASK` scores the challenger and the champion on the same test rows and moves
`champion` only when the challenger's macro-F1 is higher beyond bootstrap noise: the 95%
interval of the paired difference (the same resampled rows for both) lies above zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.core.config import Config
from pipeline.core.errors import PipelineError
from pipeline.core.labelled import gold_targets
from pipeline.core.metrics import compute_metrics, resample_indices, resampled_label_macro_f1
from pipeline.stages.evaluate import prepared_test_data
from pipeline.tracking import store
from pipeline.tracking.log import log_dataset, log_metrics
from pipeline.tracking.registry import CHALLENGER, CHAMPION, load_registered


def _aliases_by_run() -> dict[str, list[str]]:
    """run id -> ["topic v3 @champion", ...] for every registered version that has an alias."""
    c = store.client()
    out: dict[str, list[str]] = {}
    for model in c.search_registered_models():
        for alias, version in (model.aliases or {}).items():
            mv = c.get_model_version(model.name, version)
            if mv.run_id:
                out.setdefault(mv.run_id, []).append(f"{model.name} v{version} @{alias}")
    return out


def list_runs(task: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Runs of every experiment (or of `task`'s runs), newest first."""
    import mlflow

    store.client()  # a server that is down, or a locked store, fails here in one line
    with store.store_reads():
        experiments = [e.name for e in mlflow.search_experiments()]
        if not experiments:
            return []
        frame = mlflow.search_runs(
            experiment_names=experiments,
            filter_string=f"tags.task = '{task}'" if task else "",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
        aliases = _aliases_by_run()

    def get(row: Any, key: str) -> Any:
        value = row.get(key)
        return None if value is None or (isinstance(value, float) and np.isnan(value)) else value

    rows = []
    for _, row in frame.iterrows():
        start, end = row.get("start_time"), row.get("end_time")
        duration = (end - start).total_seconds() if end is not None and start is not None and end == end else None
        rows.append(
            {
                "run_id": row["run_id"],
                "name": get(row, "tags.mlflow.runName"),
                "task": get(row, "tags.task"),
                "stage": get(row, "tags.stage"),
                "model": get(row, "tags.model") or get(row, "tags.model_uri"),
                "data_digest": get(row, "tags.data_digest"),
                "test_macro_f1": get(row, "metrics.test_macro_f1"),
                "val_macro_f1": get(row, "metrics.val_macro_f1"),
                "duration_s": round(duration, 1) if duration is not None else None,
                "alias": ", ".join(aliases.get(row["run_id"], [])) or None,
                "started": str(start)[:19] if start is not None else None,
            }
        )
    return rows


def render_runs(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="runs, newest first")
    columns = ("started", "name", "task", "model", "data_digest", "test_macro_f1", "duration_s", "alias")
    for column in columns:
        table.add_column(
            column.replace("_", " "), justify="right" if column in ("test_macro_f1", "duration_s") else "left"
        )
    for r in rows:
        f1 = f"{r['test_macro_f1']:.4f}" if r["test_macro_f1"] is not None else ""
        duration = f"{r['duration_s']:.0f} s" if r["duration_s"] is not None else ""
        model = str(r["model"] or "")
        table.add_row(
            r["started"] or "",
            r["name"] or "",
            r["task"] or "",
            model if len(model) <= 40 else "…" + model[-39:],
            r["data_digest"] or "",
            f1,
            duration,
            r["alias"] or "",
        )
    Console(width=200).print(table)


def paired_bootstrap(y_true: np.ndarray, chosen_a: np.ndarray, chosen_b: np.ndarray) -> tuple[float, float]:
    """95% interval of macro-F1(b) - macro-F1(a) over resamples of the rows, the same rows for both;
    gold and chosen labels as 0/1 (rows × labels), so single- and multi-label tasks alike."""
    idx = resample_indices(len(y_true))
    diffs = resampled_label_macro_f1(y_true, chosen_b, idx) - resampled_label_macro_f1(y_true, chosen_a, idx)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


@dataclass
class Promotion:
    model: str
    champion_version: str
    challenger_version: str
    champion_macro_f1: float
    challenger_macro_f1: float
    difference: float
    difference_ci95: tuple[float, float]
    n: int
    promoted: bool


def promote(cfg: Config, dry_run: bool = False) -> Promotion:
    """Score champion and challenger of the task's registered model on its prepared test split;
    move `champion` to the challenger when it is better beyond the bootstrap noise."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = cfg.mlflow.registered_model
    store.use_experiment(cfg.mlflow.experiment)
    c = store.client()
    versions = {}
    for alias in (CHAMPION, CHALLENGER):
        try:
            versions[alias] = c.get_model_version_by_alias(name, alias).version
        except MlflowException:
            raise PipelineError(f"registered model {name!r} has no {alias}; train one first") from None
    data = prepared_test_data(cfg)
    r = cfg.runtime
    scored: dict[str, dict[str, Any]] = {}
    chosen = {}
    labels: list[str] = []
    for alias, version in versions.items():
        clf, _ = load_registered(f"models:/{name}/{version}", name, r.device, r.precision, r.threads)
        labels = labels or clf.labels
        if set(clf.labels) != set(labels):
            raise PipelineError(f"champion and challenger of {name!r} have different labels: they cannot be compared")
        probs = clf.predict_proba(data.texts, data.pairs)
        scored[alias] = compute_metrics(gold_targets(data, clf.labels), probs, clf.labels, clf.decision.thresholds)
        order = [clf.labels.index(label) for label in labels]  # both models' columns in one label order
        chosen[alias] = clf.decision.chosen(probs)[:, order]
    y = gold_targets(data, labels)
    y = y if y.ndim == 2 else np.eye(len(labels), dtype=np.int8)[y]
    low, high = paired_bootstrap(y, chosen[CHAMPION], chosen[CHALLENGER])
    difference = scored[CHALLENGER]["macro_f1"] - scored[CHAMPION]["macro_f1"]
    promoted = low > 0 and not dry_run
    with mlflow.start_run(run_name=f"promote-{name}"):
        mlflow.set_tags(
            {
                "stage": "promote",
                "task": cfg.task,
                "model": f"models:/{name} v{versions[CHALLENGER]} vs v{versions[CHAMPION]}",
            }
        )
        import pandas as pd

        frame = pd.DataFrame({"text": data.texts, "label": data.labels, **({"pair": data.pairs} if data.pairs else {})})
        mlflow.set_tag("data_digest", log_dataset(frame, data.source, data.name, "test"))
        for alias in versions:
            log_metrics(scored[alias], f"{alias}_test")
        mlflow.log_metrics({"macro_f1_difference": difference, "difference_ci_low": low, "difference_ci_high": high})
        mlflow.set_tag("promoted", str(promoted).lower())
    if promoted:
        c.set_registered_model_alias(name, CHAMPION, versions[CHALLENGER])
        c.delete_registered_model_alias(name, CHALLENGER)
    return Promotion(
        name,
        versions[CHAMPION],
        versions[CHALLENGER],
        scored[CHAMPION]["macro_f1"],
        scored[CHALLENGER]["macro_f1"],
        difference,
        (low, high),
        len(data.texts),
        promoted,
    )

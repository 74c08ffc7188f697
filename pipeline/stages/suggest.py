"""Stage, suggest: which unlabelled articles to label next, and a simulation that measures the claim.

`suggest` scores a table of unlabelled articles with the task's champion, ranks them by the
strategy (`pipeline.models.selection`) and writes a CSV, or a Label Studio import file with the
model's labels as pre-annotations; Label Studio's JSON export is read back as `data.source`.

`simulate` replays active learning on the prepared splits: from `start` labelled train articles,
`step` more a round by the strategy and, from the same start, by random choice; after each round
the learner is retrained and scored on validation and test. The learner is a logistic regression
on the frozen encoder's article embeddings (C chosen on validation each round): a retrain takes
milliseconds, so many seeds and rounds fit on a CPU where fine-tuning each round would take hours.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import Config
from pipeline.core.errors import PipelineError
from pipeline.core.io import join_text_columns, read_table, write_text_atomic
from pipeline.models.card import STANCE_TASKS
from pipeline.models.selection import STRATEGIES, pick, uncertainty
from pipeline.models.zeroshot import EmbeddingBackend, with_pairs
from pipeline.text.windows import WindowSettings
from pipeline.tracking import store
from pipeline.tracking.registry import load_registered

FORMATS = ("csv", "label-studio")
# how the frozen encoder reads an article for diversity and for the simulation's learner
EMBED_WINDOWS = WindowSettings(max_length=256, stride=32, max_windows=4)
C_GRID = (1.0, 10.0, 100.0)  # the simulation learner's regularisation, chosen on validation each round
REACH = 0.95  # the simulation reports the labels each strategy needs to reach this test macro-F1


def encoder(cfg: Config) -> EmbeddingBackend:
    return EmbeddingBackend.encoder_only(cfg.model.name, EMBED_WINDOWS, cfg.runtime)


@dataclass
class Suggestions:
    path: Path
    n: int
    of: int
    model_uri: str
    extra_files: list[Path] = field(default_factory=list)


def suggest(
    cfg: Config,
    data: Path,
    out: Path,
    n: int = 200,
    strategy: str = "margin",
    fmt: str = "csv",
    text_columns: list[str] | None = None,
    model_ref: str | None = None,
    seed: int = 0,
) -> Suggestions:
    """The `n` articles of `data` most worth labelling, best first, written to `out`."""
    if fmt not in FORMATS:
        raise PipelineError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if strategy not in STRATEGIES:
        raise PipelineError(f"--strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if n < 1:
        raise PipelineError(f"--n must be at least 1 (got {n})")
    columns = text_columns or cfg.data.text_columns
    df = read_table(data, columns)
    texts = join_text_columns(df, columns)
    keep = np.flatnonzero([bool(t) for t in texts])
    if not len(keep):
        raise PipelineError(f"{data}: every row's text is empty")
    r = cfg.runtime
    clf, uri = load_registered(model_ref, cfg.mlflow.registered_model, r.device, r.precision, r.threads)
    pair_column = clf.card.pair_column
    pairs = None
    if pair_column:
        if pair_column in df.columns:
            pairs = [str(df[pair_column].iloc[i]) for i in keep]
        elif clf.card.task in STANCE_TASKS:
            raise PipelineError(f"{data.name} has no column {pair_column!r}, which this stance model reads")
        else:
            pairs = [""] * len(keep)
    kept_texts = [texts[i] for i in keep]
    probs = clf.predict_proba(kept_texts, pairs)

    def embed(rows: np.ndarray) -> np.ndarray:  # called by `diverse` alone, so the encoder loads only then
        return encoder(cfg).embed(
            with_pairs([kept_texts[i] for i in rows], [pairs[i] for i in rows] if pairs else None)
        )

    ranked = pick(probs, strategy, n, np.random.default_rng(seed), embed, None, clf.card.multi_label)
    chosen = clf.decision.chosen(probs[ranked])
    rows = df.iloc[keep[ranked]].copy()
    rows.insert(0, "rank", np.arange(1, len(ranked) + 1))
    rows.insert(1, "row", keep[ranked])
    rows["predicted"] = [" ".join(clf.labels[j] for j in np.flatnonzero(c)) for c in chosen]
    rows["score"] = probs[ranked].max(axis=1).round(6)
    rows["uncertainty"] = uncertainty(probs[ranked], "entropy" if strategy == "diverse" else strategy).round(6)
    extra: list[Path] = []
    if fmt == "csv":
        write_text_atomic(out, rows.to_csv(index=False))
    else:
        texts_out = [kept_texts[i] for i in ranked]
        write_text_atomic(out, json.dumps(label_studio_tasks(rows, texts_out, uri), indent=1))
        config_path = out.with_name(f"{out.stem}.label_config.xml")
        write_text_atomic(config_path, label_studio_config(clf.labels, clf.card.multi_label))
        extra.append(config_path)
    return Suggestions(out, len(ranked), len(keep), uri, extra)


def label_studio_tasks(rows: Any, texts: list[str], model_uri: str) -> list[dict[str, Any]]:
    """Label Studio import tasks: the row's fields as `data` (the model's text as `text`), and the
    model's labels as a pre-annotation (`predictions`) for the `label` choices of `text`."""
    tasks = []
    for (_, row), text in zip(rows.iterrows(), texts, strict=True):
        data = {str(k): ("" if v is None else str(v)) for k, v in row.items() if k not in ("predicted", "score")}
        data["text"] = text
        choices = str(row["predicted"]).split(" ")
        result = {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": choices}}
        prediction = {"model_version": model_uri, "score": float(row["score"]), "result": [result]}
        tasks.append({"data": data, "predictions": [prediction]})
    return tasks


def label_studio_config(labels: list[str], multi_label: bool) -> str:
    """The labelling interface the tasks are for: one `label` choice (several when multi-label) of `text`."""
    from html import escape

    choice = "multiple" if multi_label else "single"
    options = "\n".join(f'    <Choice value="{escape(label, quote=True)}"/>' for label in labels)
    return (
        f'<View>\n  <Text name="text" value="$text"/>\n  <Choices name="label" toName="text" choice="{choice}">\n'
        f"{options}\n  </Choices>\n</View>\n"
    )


@dataclass
class Simulation:
    strategy: str
    seeds: list[int]
    labelled: list[int]  # articles labelled at each round
    curves: dict[str, dict[str, list[list[float]]]]  # strategy -> split -> seed -> macro-F1 a round
    run_id: str = ""
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"strategy": self.strategy, "seeds": self.seeds, "labelled": self.labelled}
        for name, splits in self.curves.items():
            test = np.asarray(splits["test"])
            reached = [next((n for n, f in zip(self.labelled, row, strict=True) if f >= REACH), None) for row in test]
            out[name] = {
                "test_mean": [round(float(x), 4) for x in test.mean(axis=0)],
                "test_std": [round(float(x), 4) for x in test.std(axis=0)],
                "validation_mean": [round(float(x), 4) for x in np.asarray(splits["validation"]).mean(axis=0)],
                f"labels_to_{REACH}": reached,
            }
        return out


def simulate(
    cfg: Config, start: int = 50, step: int = 50, rounds: int = 6, strategy: str = "margin", seeds: int = 3
) -> Simulation:
    """Active learning replayed on the prepared splits, against random choice from the same start; one MLflow run."""
    import mlflow

    from pipeline.stages.evaluate import prepared_split_data

    if strategy not in STRATEGIES or strategy == "random":
        raise PipelineError(f"--strategy {strategy!r}: choose one of margin, entropy, diverse")
    if start < 2 or step < 1 or rounds < 1 or seeds < 1:
        raise PipelineError("--start must be at least 2, and --step, --rounds and --seeds at least 1")
    if cfg.data.multi_label:
        raise PipelineError("the simulation replays single-label tasks")
    splits = {name: prepared_split_data(cfg, name) for name in ("train", "validation", "test")}
    if start + step * rounds > len(splits["train"].texts):
        raise PipelineError(
            f"--start {start} + {rounds} rounds of {step} is more than the {len(splits['train'].texts)} train articles"
        )
    began = time.perf_counter()
    backend = encoder(cfg)
    vectors = {name: backend.embed(with_pairs(d.texts, d.pairs)) for name, d in splits.items()}
    labels = sorted(set(splits["train"].labels))
    y = {name: np.asarray([labels.index(v) for v in d.labels]) for name, d in splits.items()}
    counts = [start + step * i for i in range(rounds + 1)]
    curves: dict[str, dict[str, list[list[float]]]] = {s: {"validation": [], "test": []} for s in (strategy, "random")}
    for seed in range(seeds):
        first = np.random.default_rng(seed).choice(len(y["train"]), start, replace=False)
        for name in (strategy, "random"):
            val, test = _replay(vectors, y, first, step, rounds, name, seed)
            curves[name]["validation"].append(val)
            curves[name]["test"].append(test)
    result = Simulation(strategy, list(range(seeds)), counts, curves, seconds=time.perf_counter() - began)
    result.run_id = _log_simulation(cfg, result, mlflow)
    return result


def _replay(
    vectors: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    first: np.ndarray,
    step: int,
    rounds: int,
    how: str,
    seed: int,
) -> tuple[list[float], list[float]]:
    """Validation and test macro-F1 after each round of one strategy from the labelled rows `first`."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1000 + seed)
    labelled = list(first)
    val_scores, test_scores = [], []
    for round_ in range(rounds + 1):
        model = _fit(vectors["train"][labelled], y["train"][labelled], vectors["validation"], y["validation"])
        val_scores.append(float(f1_score(y["validation"], model.predict(vectors["validation"]), average="macro")))
        test_scores.append(float(f1_score(y["test"], model.predict(vectors["test"]), average="macro")))
        if round_ == rounds:
            break
        pool = np.setdiff1d(np.arange(len(y["train"])), labelled)
        probs = _full_proba(model, vectors["train"][pool], int(y["train"].max()) + 1)
        pool_vectors = vectors["train"][pool]
        picked = pick(probs, how, step, rng, pool_vectors.__getitem__, vectors["train"][labelled])
        labelled += [int(i) for i in pool[picked]]
    return val_scores, test_scores


def _fit(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    best, best_f1 = None, -1.0
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=2000).fit(x, y)
        f1 = float(f1_score(y_val, model.predict(x_val), average="macro"))
        if f1 > best_f1:
            best, best_f1 = model, f1
    return best


def _full_proba(model: Any, x: np.ndarray, k: int) -> np.ndarray:
    """Probabilities over all `k` labels (a label the labelled rows lack gets 0)."""
    out = np.zeros((len(x), k))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def _log_simulation(cfg: Config, result: Simulation, mlflow: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    store.use_experiment(cfg.mlflow.experiment)
    summary = result.summary()
    with mlflow.start_run(run_name=f"active-learning-{result.strategy}") as run:
        mlflow.set_tags({"stage": "suggest-simulate", "task": cfg.task, "learner": "logistic regression on encoder"})
        params = {"strategy": result.strategy, "seeds": len(result.seeds), "encoder": cfg.model.name}
        mlflow.log_params(params | {"labelled": result.labelled})
        for name in (result.strategy, "random"):
            for i, n in enumerate(result.labelled):
                mlflow.log_metric(f"test_macro_f1_{name}", summary[name]["test_mean"][i], step=n)
                mlflow.log_metric(f"val_macro_f1_{name}", summary[name]["validation_mean"][i], step=n)
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in (result.strategy, "random"):
            mean, std = np.asarray(summary[name]["test_mean"]), np.asarray(summary[name]["test_std"])
            ax.plot(result.labelled, mean, marker="o", label=name)
            ax.fill_between(result.labelled, mean - std, mean + std, alpha=0.2)
        ax.axhline(REACH, color="grey", linestyle=":", linewidth=1)
        title = f"active learning ({len(result.seeds)} seeds)"
        ax.set(xlabel="labelled train articles", ylabel="test macro-F1", title=title)
        ax.legend()
        mlflow.log_figure(fig, "learning_curves.png")
        plt.close(fig)
        mlflow.log_dict(summary, "learning_curves.json")
    return str(run.info.run_id)

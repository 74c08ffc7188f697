"""The `pipeline` command: a thin Typer layer over the stage functions.

Every command takes `--config` and repeatable `--set key.path=value` overrides. A user error
(PipelineError) prints one line on stderr and exits with code 2. Heavy libraries are imported
inside the commands so that `--help` answers at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.core.errors import PipelineError

app = typer.Typer(
    help="News-article classification by topic and stance, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (default: configs/topic.yaml).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config key: --set train.epochs=1.")]
ProfileOpt = Annotated[
    str | None, typer.Option("--profile", help="A named set of overrides from the config's `profiles` section.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]
ModelOpt = Annotated[
    str | None, typer.Option(help="models:/NAME@ALIAS, runs:/..., or a folder (default: the champion).")
]
DataOpt = Annotated[
    Path | None, typer.Option(help="Labelled csv/jsonl/parquet file (default: the prepared test split).")
]
TextColumnOpt = Annotated[str, typer.Option(help="Text column(s), comma-separated, joined.")]
LabelColumnOpt = Annotated[str, typer.Option(help="Gold label column.")]
TargetModelOpt = Annotated[
    str | None, typer.Option(help="Target-stance model (default: models:/target_stance@champion, where registered).")
]
ClaimModelOpt = Annotated[
    str | None, typer.Option(help="Claim-stance model (default: models:/stance@champion, where registered).")
]
SparkMasterOpt = Annotated[str | None, typer.Option(help="Spark master (default: spark-submit's, else local[*]).")]
LabelMapOpt = Annotated[str | None, typer.Option(help="Map data labels to model labels: a=x,b=y.")]


def _config(config: Path | None, overrides: list[str] | None, profile: str | None = None) -> Any:
    from pipeline.core.config import load_config

    return load_config(config, overrides or [], profile)


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False))


def _column_list(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text is not None else None


@app.command()
def init(
    data: Annotated[Path, typer.Argument(help="Labelled csv, csv.gz, jsonl, jsonl.gz or parquet file.")],
    task: Annotated[str, typer.Option(help="Name of the new task (a-z, 0-9, _): its config, model and MLflow names.")],
    text_column: TextColumnOpt = "text",
    label_column: Annotated[
        str | None, typer.Option(help="Label column (multi-label: labels joined by --label-separator).")
    ] = None,
    pair_column: Annotated[
        str | None, typer.Option(help="Column read first in every window: a title, claim or target.")
    ] = None,
    multi_label: Annotated[bool, typer.Option("--multi-label", help="An article may have several labels.")] = False,
    label_separator: Annotated[
        str | None, typer.Option(help="With --multi-label: what separates a cell's labels (default: a space).")
    ] = None,
    label_columns: Annotated[
        str | None, typer.Option(help="Multi-label as 0/1 columns, one a label, comma-separated (no --label-column).")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Config file to write (default: configs/TASK.yaml).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing config file.")] = False,
) -> None:
    """Write a complete, commented config for a new task from a labelled file (then train, predict)."""
    from pipeline.stages.init import init_config

    r = init_config(
        data,
        task,
        _column_list(text_column) or [],
        label_column,
        pair_column,
        multi_label,
        label_separator,
        _column_list(label_columns),
        output,
        force,
    )
    for warning in r.warnings:
        typer.echo(f"warning: {warning}", err=True)
    w = r.windows
    typer.echo(f"wrote {r.path}: {r.rows} rows, {len(r.label_counts)} labels")
    typer.echo("  articles per label: " + ", ".join(f"{label} {n}" for label, n in r.label_counts.items()))
    typer.echo(
        f"  tokens median {w.median:.0f}, p90 {w.p90:.0f}, max {w.max}, {w.share_over_window:.0%} over the window: "
        f"max_length {w.max_length}, stride {w.stride}, max_windows {w.max_windows}"
    )
    typer.echo("next:")
    for command in r.commands:
        typer.echo(f"  {command}")


@app.command()
def prepare(config: ConfigOpt = None, set_: SetOpt = None, profile: ProfileOpt = None, force: bool = False) -> None:
    """Clean, deduplicate and split the data source; write a DatasetDict and a data card."""
    from pipeline.stages.prepare import prepare as run_prepare

    cfg = _config(config, set_, profile)
    result = run_prepare(cfg, force=force)
    card = result.card
    state = "unchanged, reused" if result.reused else "written"
    typer.echo(f"prepared data {state}: {result.path}")
    typer.echo(f"  rows read {card['rows_read']}, dropped {card['dropped']}, digest {card['content_digest']}")
    for split, info in card["splits"].items():
        tok = info["tokens"]
        typer.echo(
            f"  {split:<10} {info['n']:>6} rows, tokens mean {tok['mean']}, "
            f"p90 {tok['p90']}, over window {tok['share_over_window']:.0%}"
        )


@app.command()
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    register: Annotated[bool, typer.Option(help="Register the model in the MLflow registry.")] = True,
    pseudo_labels: Annotated[
        bool,
        typer.Option(
            "--pseudo-labels",
            help="Self-training: learn the zero-shot labels of the train articles, not their gold labels.",
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue this config's interrupted training after its last complete epoch, in the same MLflow run.",
        ),
    ] = False,
    engine: Annotated[
        str, typer.Option(help="local: this process (or torchrun's); spark: TorchDistributor's processes.")
    ] = "local",
    num_processes: Annotated[int, typer.Option(min=1, help="Data-parallel processes with --engine spark.")] = 2,
    spark_master: SparkMasterOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune, keep the best epoch on validation, evaluate on test, log and register."""
    _set_quiet(quiet)
    from pipeline.stages.train import train as run_train
    from pipeline.tracking.store import store_errors

    cfg = _config(config or (_default_zeroshot_config() if pseudo_labels else None), set_, profile)
    if engine not in ("local", "spark"):
        raise PipelineError(f"--engine {engine!r}: choose local or spark")
    options = {"register": register, "pseudo_labels": pseudo_labels, "resume": resume}
    try:
        if engine == "spark":
            from pipeline.stages.spark import train_on_spark

            r = train_on_spark(cfg, num_processes, spark_master, options)
        else:
            r = run_train(cfg, **options)
    except store_errors() as err:
        from pipeline.core.config import resolve_path

        raise PipelineError(
            f"the MLflow store failed ({_first_line(err)}); the trained model is kept in "
            f"{resolve_path(cfg.train.output_dir)}: `pipeline log-model` logs it once the store is back"
        ) from None
    if not r.main_process:  # another process of a distributed run: the main one reports
        return
    t = r.test_metrics
    typer.echo(f"best epoch {r.best_epoch}: validation macro-F1 {r.val_macro_f1:.4f}")
    fnc = f", FNC-1 score {t['fnc_score']:.2f}" if "fnc_score" in t else ""
    if t.get("multi_label"):
        fnc = f", micro-F1 {t['micro_f1']:.4f}, samples-F1 {t['samples_f1']:.4f}, Hamming loss {t['hamming_loss']:.4f}"
    typer.echo(f"test: macro-F1 {t['macro_f1']:.4f}, accuracy {t['accuracy']:.4f}{fnc} (n={t['n']})")
    per_class = ", ".join(f"{label} {row['f1']:.3f}" for label, row in t["per_class"].items())
    typer.echo(f"test F1 per class: {per_class}")
    for name, extra in r.extra_test_metrics.items():
        typer.echo(f"{name}: macro-F1 {extra['macro_f1']:.4f}, accuracy {extra['accuracy']:.4f} (n={extra['n']})")
    typer.echo(f"model {r.model_uri} alias {r.alias}; run {r.run_id}; {r.seconds:.0f} s")


@app.command("log-model")
def log_model(
    folder: Annotated[Path, typer.Argument(help="A trained model folder (default: models/topic).")] = Path(
        "models/topic"
    ),
    register: Annotated[bool, typer.Option(help="Register the model in the MLflow registry.")] = True,
) -> None:
    """Log a model trained while the tracking store was away: its config, test metrics, the model, its alias."""
    from pipeline.core.config import resolve_path
    from pipeline.stages.train import log_trained_model

    r = log_trained_model(resolve_path(folder), register=register)
    typer.echo(f"logged {folder}: test macro-F1 {r.test_macro_f1:.4f} (n={r.n}); run {r.run_id}")
    if r.alias:
        typer.echo(f"registered {r.registered_model} @{r.alias}")


@app.command()
def baseline(config: ConfigOpt = None, set_: SetOpt = None, profile: ProfileOpt = None) -> None:
    """TF-IDF + logistic regression, logged to the same experiment for comparison."""
    from pipeline.stages.baseline import run_baseline

    r = run_baseline(_config(config, set_, profile))
    micro = f", micro-F1 {r.test['micro_f1']:.4f}" if "micro_f1" in r.test else ""
    typer.echo(
        f"tfidf baseline (C={r.c:g}): validation macro-F1 {r.val['macro_f1']:.4f}, "
        f"test macro-F1 {r.test['macro_f1']:.4f}{micro}; run {r.run_id}; {r.seconds:.0f} s"
    )


@app.command()
def evaluate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    data: DataOpt = None,
    text_column: TextColumnOpt = "text",
    label_column: LabelColumnOpt = "label",
    label_map: LabelMapOpt = None,
    pair_column: Annotated[str | None, typer.Option(help="Claim/target column: the first segment of a pair.")] = None,
    on: Annotated[str | None, typer.Option("--on", help="One of the config's data.extra_tests, by name.")] = None,
    unseen_targets: Annotated[
        bool,
        typer.Option(
            "--unseen-targets",
            help="Score rows whose target the training data never mentions apart from the others "
            "(default data: every extra test set).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a model on the test split or a labelled file, as an MLflow run."""
    from pipeline.core import progress
    from pipeline.core.labelled import extra_test_data, load_eval_file, parse_label_map
    from pipeline.stages.evaluate import evaluate as run_evaluate
    from pipeline.stages.evaluate import prepared_test_data, split_by_seen_targets

    cfg = _config(config, set_, profile)
    if on is not None:
        sets = extra_test_data(cfg, on)
    elif data is not None:
        columns = [c.strip() for c in text_column.split(",") if c.strip()]
        separator = cfg.data.label_separator or " " if cfg.data.multi_label else None  # the task's own cells
        sets = [
            load_eval_file(
                data, columns, label_column, parse_label_map(label_map), pair_column, label_separator=separator
            )
        ]
    else:
        sets = extra_test_data(cfg) if unseen_targets else [prepared_test_data(cfg).mapped(parse_label_map(label_map))]
    if unseen_targets:
        sets = [part for s in sets for part in split_by_seen_targets(cfg, s).values()]
    _set_quiet(quiet)
    for eval_data in sets:
        with progress.reporting(f"evaluate {eval_data.name}", len(eval_data.texts), counts_texts=True):
            r = run_evaluate(cfg, model, eval_data)
        if as_json:
            _echo_json(r.summary() | ({"data": r.data_name} if len(sets) > 1 else {}))
            continue
        _print_evaluation(r.metrics, r.data_name, r.model_uri)
        typer.echo(f"run {r.run_id}")


@app.command()
def zeroshot(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML config (default: configs/zeroshot_topic.yaml).")
    ] = None,
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    labels: Annotated[
        str | None, typer.Option(help="Labels to choose from, comma-separated (default: the config's).")
    ] = None,
    data: DataOpt = None,
    text_column: TextColumnOpt = "text",
    label_column: LabelColumnOpt = "label",
    label_map: LabelMapOpt = None,
    pair_column: Annotated[str | None, typer.Option(help="A title column: it leads the text.")] = None,
    register: Annotated[
        bool, typer.Option(help="Register the zero-shot model (zeroshot.registered_model) for predict.")
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Classify with labels never trained on; evaluated and logged like `evaluate`, beside the fine-tuned runs."""
    from pipeline.core.labelled import load_eval_file, parse_label_map
    from pipeline.stages.zeroshot import run_zeroshot

    cfg = _config(config or _default_zeroshot_config(), set_, profile)
    eval_data = None
    if data is not None:
        columns = [c.strip() for c in text_column.split(",") if c.strip()]
        eval_data = load_eval_file(data, columns, label_column, parse_label_map(label_map), pair_column)
    label_list = labels.split(",") if labels is not None else None
    _set_quiet(quiet)
    r = run_zeroshot(cfg, eval_data, label_list, register=register, label_map=parse_label_map(label_map))
    if as_json:
        _echo_json(r.evaluation.summary())
        return
    engine = cfg.zeroshot.engine if cfg.zeroshot else ""
    _print_evaluation(r.evaluation.metrics, r.evaluation.data_name, f"zero-shot ({engine})")
    if r.val_macro_f1 is not None:
        typer.echo(f"  validation macro-F1 {r.val_macro_f1:.4f}")
    if r.alias:
        typer.echo(f"registered {r.registered_model} @{r.alias}")
    typer.echo(f"run {r.evaluation.run_id}; {r.seconds:.0f} s")


def _default_zeroshot_config() -> Path:
    from pipeline.core.config import default_config_path

    return default_config_path("zeroshot_topic")


def _print_evaluation(m: dict[str, Any], data_name: str, model: str) -> None:
    if m.get("multi_label"):
        typer.echo(
            f"{model} on {data_name} (n={m['n']}): micro-F1 {m['micro_f1']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
            f"samples-F1 {m['samples_f1']:.4f}, subset accuracy {m['subset_accuracy']:.4f}, "
            f"Hamming loss {m['hamming_loss']:.4f}, labels an article {m['label_cardinality']:.2f}"
        )
    else:
        typer.echo(f"{model} on {data_name} (n={m['n']}): macro-F1 {m['macro_f1']:.4f}, accuracy {m['accuracy']:.4f}")
    if "fnc_score" in m:
        typer.echo(f"  FNC-1 relative score {m['fnc_score']:.2f}")
    for label, row in m["per_class"].items():
        typer.echo(
            f"  {label:<16} precision {row['precision']:.3f} recall {row['recall']:.3f} "
            f"f1 {row['f1']:.3f} support {row['support']}"
        )


@app.command()
def predict(
    paths: Annotated[
        list[str], typer.Argument(help=".txt article(s), folder(s) of .txt, .jsonl with 'text', or - for stdin.")
    ],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    claim: Annotated[
        list[str] | None, typer.Option("--claim", help="A claim to score the article's stance toward (repeatable).")
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="Score the stance toward this entity (repeatable; default: the main names)."),
    ] = None,
    no_stance: Annotated[bool, typer.Option("--no-stance", help="Topic only: no target stance.")] = False,
    zero_shot: Annotated[
        bool,
        typer.Option(
            "--zero-shot", help="Topic by the zero-shot classifier of the config (default configs/zeroshot_topic.yaml)."
        ),
    ] = False,
    target_model: TargetModelOpt = None,
    claim_model: ClaimModelOpt = None,
    stdin: Annotated[
        str,
        typer.Option(
            "--stdin", help="How to read `-`: auto (JSONL when its first line is a JSON object), text, jsonl."
        ),
    ] = "auto",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Label articles with the registered champion model; `--claim` adds the stance toward each claim.
    An input that cannot be read is reported (stderr, and `"error"` in the JSON) and the others are
    scored; the exit code is 2 only when no input could be scored."""
    from pipeline.stages.predict import predict_stream
    from pipeline.text.articles import given_names, iter_inputs, unless_all_bad

    _set_quiet(quiet)
    cfg = _config(config or (_default_zeroshot_config() if zero_shot else None), set_, profile)
    classifier = None
    if zero_shot:
        from pipeline.models.zeroshot import build_zeroshot

        classifier = build_zeroshot(cfg)
    results = predict_stream(
        unless_all_bad(iter_inputs(paths, stdin)),
        model,
        cfg.task,
        cfg.mlflow.registered_model,
        cfg.runtime.device,
        cfg.runtime.precision,
        cfg.runtime.threads,
        claims=given_names(claim, "--claim"),
        claim_model_ref=claim_model,
        targets=[] if no_stance else (given_names(target, "--target") or None),
        target_model_ref=target_model,
        classifier=classifier,
    )
    _write_predictions(results, cfg.task, as_json, _count_inputs(paths))


@app.command()
def explain(
    article: Annotated[str | None, typer.Argument(help="A .txt article (not with --evaluate).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    label: Annotated[str | None, typer.Option(help="Explain this label (default: the predicted one).")] = None,
    target: Annotated[str | None, typer.Option(help="Explain the stance toward this entity.")] = None,
    claim: Annotated[str | None, typer.Option(help="Explain the stance toward this claim.")] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Also write a page that highlights the sentences.")
    ] = None,
    evaluate: Annotated[
        bool, typer.Option("--evaluate", help="Score the explanations' faithfulness on test articles (an MLflow run).")
    ] = False,
    n: Annotated[int, typer.Option("--n", help="With --evaluate: test articles to explain.")] = 200,
    on: Annotated[str | None, typer.Option("--on", help="With --evaluate: one of data.extra_tests, by name.")] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Why the model gave a label: the sentences that drove it (occlusion) and, for a blended model, its terms."""
    from pipeline.core import progress

    cfg = _config(config, set_, profile)
    _set_quiet(quiet)
    if evaluate:
        from pipeline.stages.explain import evaluate_faithfulness

        if article is not None:
            raise PipelineError("--evaluate scores test articles: give no ARTICLE")
        with progress.reporting("explain --evaluate", n):
            f = evaluate_faithfulness(cfg, model, n, on)
        if as_json:
            _echo_json(f.result.as_json())
            return
        r = f.result
        typer.echo(f"faithfulness of {f.model_uri} on {f.data_name} (n={r.n}), {f.seconds:.0f} s")
        for kind, values in (("comprehensiveness", r.comprehensiveness), ("sufficiency", r.sufficiency)):
            typer.echo(f"  {kind:<18} " + "  ".join(f"{key} {value:.4f}" for key, value in values.items()))
        typer.echo(f"run {f.run_id}")
        return
    if article is None:
        raise PipelineError("give an ARTICLE to explain, or --evaluate")
    from pipeline.stages.explain import explain_article, write_html

    x = explain_article(cfg, article, model, label, target, claim)
    e = x.explanation
    if html_out is not None:
        write_html(e, x.text, Path(article).name, html_out)
    toward = f" toward {x.pair!r}" if x.stance else ""
    if as_json:
        _echo_json(e.as_json() | ({"pair": x.pair} if x.stance else {}))
        return
    typer.echo(f"{e.label} ({e.score:.3f}){toward} by {x.model_uri}; {len(e.sentences)} sentences, {x.seconds:.2f} s")
    for s in e.top(5):
        shown = s.text if len(s.text) <= 110 else s.text[:107] + "..."
        typer.echo(f"  {s.weight:+.4f}  {shown}")
    if e.terms:
        typer.echo("  terms: " + ", ".join(f"{t['term']} {t['weight']:+.3f}" for t in e.terms))
    if html_out is not None:
        typer.echo(f"wrote {html_out}")


@app.command()
def suggest(
    data: Annotated[
        Path | None, typer.Argument(help="Unlabelled csv/jsonl/parquet articles (not with --simulate).")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    n: Annotated[int, typer.Option("--n", help="Articles to suggest.")] = 200,
    strategy: Annotated[
        str, typer.Option(help="margin | entropy | diverse (uncertain, then k-centre) | random.")
    ] = "margin",
    fmt: Annotated[str, typer.Option("--format", help="csv | label-studio (JSON tasks with pre-annotations).")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write.")] = None,
    text_column: Annotated[
        str | None, typer.Option(help="Text column(s), comma-separated (default: the config's).")
    ] = None,
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Replay active learning on the prepared splits against random choice.")
    ] = False,
    start: Annotated[int, typer.Option(help="--simulate: labelled train articles to start from.")] = 50,
    step: Annotated[int, typer.Option(help="--simulate: articles labelled a round.")] = 50,
    rounds: Annotated[int, typer.Option(help="--simulate: rounds.")] = 6,
    seeds: Annotated[int, typer.Option(help="--simulate: seeds (start sets) to average over.")] = 3,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Which articles to label next (uncertainty, optionally with diversity); --simulate measures the gain."""
    cfg = _config(config, set_, profile)
    _set_quiet(quiet)
    if simulate:
        from pipeline.stages.suggest import REACH
        from pipeline.stages.suggest import simulate as run_simulation

        if data is not None:
            raise PipelineError("--simulate replays the prepared splits: give no DATA")
        sim = run_simulation(cfg, start, step, rounds, strategy, seeds)
        summary = sim.summary()
        if as_json:
            _echo_json(summary | {"run_id": sim.run_id})
            return
        typer.echo(f"active learning, {strategy} against random, {seeds} seeds, {sim.seconds:.0f} s; run {sim.run_id}")
        typer.echo("  labelled   " + " ".join(f"{k:>11}" for k in sim.labelled))
        for name in (strategy, "random"):
            row = summary[name]
            cells = " ".join(f"{m:.3f}±{sd:.3f}" for m, sd in zip(row["test_mean"], row["test_std"], strict=True))
            typer.echo(f"  {name:<10} {cells}  (test macro-F1; labels to {REACH}: {row[f'labels_to_{REACH}']})")
        return
    if data is None or output is None:
        raise PipelineError("give DATA (unlabelled articles) and --output FILE, or --simulate")
    from pipeline.stages.suggest import suggest as run_suggest

    r = run_suggest(cfg, data, output, n, strategy, fmt, _column_list(text_column), model)
    typer.echo(f"wrote {r.path}: {r.n} of {r.of} articles to label, by {strategy} ({r.model_uri})")
    for extra in r.extra_files:
        typer.echo(f"wrote {extra}: the Label Studio labelling interface for these tasks")


def _write_predictions(results: Iterator[dict[str, Any]], task: str, as_json: bool, total: int | None) -> None:
    """Each result as it comes (JSON lines) or a table at the end; bad inputs on stderr; exit 2 when
    nothing could be scored."""
    from pipeline.core import progress
    from pipeline.stages.predict import render_table

    rows: list[dict[str, Any]] = []
    bad = good = 0
    with progress.reporting("predict", total):
        for r in results:
            if "error" in r:
                bad += 1
                typer.echo(f"error: {r['error']}", err=True)
            else:
                good += 1
                if "truncated_at_chars" in r:
                    read = r["truncated_at_chars"]
                    typer.echo(f"note: {r['source']}: longer than {read:,} characters, read that far", err=True)
            if as_json:
                _echo_json(r)
            elif "error" not in r:
                rows.append(r)
    if rows:
        render_table(rows, task)
    if not good:  # each bad input has had its line; more than one get a summary
        if bad > 1:
            typer.echo(f"error: none of the {bad} inputs could be scored", err=True)
        raise typer.Exit(2)
    if bad:
        typer.echo(f"note: {good} of {good + bad} inputs scored, {bad} could not be read (above)", err=True)


def _count_inputs(paths: list[str]) -> int | None:
    """How many articles `paths` hold, where that is known without reading them (no JSONL, no stdin)."""
    total = 0
    for name in paths:
        path = Path(name)
        if name == "-" or name.lower().endswith(".jsonl"):
            return None
        total += sum(1 for _ in path.glob("*.txt")) if path.is_dir() else 1
    return total


def _set_quiet(quiet: bool) -> None:
    if quiet:
        import os

        from pipeline.core.progress import QUIET_ENV

        os.environ[QUIET_ENV] = "1"


@app.command()
def batch(
    inputs: Annotated[
        list[str], typer.Argument(help="Parquet, CSV(.gz) or JSONL files, folders or globs (spark: any path or table).")
    ],
    output: Annotated[str, typer.Option("--output", "-o", help="The Parquet folder to write.")],
    engine: Annotated[
        str, typer.Option(help="local: this process; spark: Spark (spark-submit's cluster, else local[N]).")
    ] = "local",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = None,
    text_column: Annotated[str, typer.Option(help="Column with the article text.")] = "text",
    title_column: Annotated[
        str | None, typer.Option(help="Column with the title (default: `title` where there is one).")
    ] = None,
    id_column: Annotated[str, typer.Option(help="Column that identifies a row; copied to the output.")] = "id",
    keep: Annotated[
        list[str] | None, typer.Option("--keep", help="Another input column to copy to the output (repeatable).")
    ] = None,
    target: Annotated[
        list[str] | None, typer.Option("--target", help="Add the stance toward this entity (repeatable).")
    ] = None,
    claim: Annotated[
        list[str] | None, typer.Option("--claim", help="Add the stance toward this claim (repeatable).")
    ] = None,
    target_model: TargetModelOpt = None,
    claim_model: ClaimModelOpt = None,
    spark_master: SparkMasterOpt = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing output (swapped in once the new one is whole).")
    ] = False,
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows read and labelled at a time (local engine).")] = 1024,
    partitions: Annotated[
        int | None, typer.Option(min=1, help="Spark tasks to label in (default: the input's, at least one a core).")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Label a table of articles into Parquet: topic label, score and class probabilities, stance when asked."""
    from pipeline.stages.batch import Columns, batch_local, batch_spark, check_output, scorers
    from pipeline.text.articles import given_names

    _set_quiet(quiet)
    cfg = _config(config, set_)
    if engine not in ("local", "spark"):
        raise PipelineError(f"--engine {engine!r}: choose local or spark")
    check_output(output, overwrite)
    cols = Columns(text_column, title_column, id_column, keep or [])
    jobs = scorers(
        cfg.task, model, cfg.mlflow.registered_model, given_names(target, "--target"), target_model,
        given_names(claim, "--claim"), claim_model,
    )  # fmt: skip
    if engine == "local":
        r = batch_local(inputs, output, cols, jobs, cfg.runtime, chunk_rows, sys.stderr.isatty())
    else:
        r = batch_spark(inputs, output, cols, jobs, spark_master, overwrite, partitions)
    typer.echo(
        f"{r.rows} rows labelled ({r.errors} with an error) in {r.seconds:.1f} s, {r.rows_per_s:.1f} rows/s: {r.output}"
    )


@app.command()
def serve(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: ModelOpt = None,
    target_model: TargetModelOpt = None,
    claim_model: ClaimModelOpt = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (this machine only by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5001,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Larger request bodies get a 413.")] = 2_000_000,
    max_records: Annotated[int, typer.Option(min=1, help="Records in one request, at most.")] = 256,
) -> None:
    """An HTTP service on MLflow's scoring protocol: POST /invocations, GET /health."""
    from pipeline.stages.serve import ServeSettings, load_models
    from pipeline.stages.serve import serve as run_serve

    cfg = _config(config, set_)
    models = load_models(cfg, model, target_model, claim_model)
    run_serve(models, ServeSettings(host, port, max_body_bytes, max_records))


@app.command()
def runs(
    task: Annotated[str | None, typer.Option(help="Only the runs of this task (topic, stance, ...).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Only the runs of this config's task.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The runs of every task, newest first: model, data digest, test macro-F1, duration, alias."""
    from pipeline.stages.runs import list_runs, render_runs

    rows = list_runs(_config(config, None).task if config is not None else task, limit)
    if as_json:
        for row in rows:
            _echo_json(row)
    elif not rows:
        typer.echo("no runs yet: `make train` makes some")
    else:
        render_runs(rows)


@app.command()
def promote(
    task: Annotated[str | None, typer.Argument(help="The task: its config is configs/TASK.yaml (or give -c).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    dry_run: Annotated[bool, typer.Option(help="Compare only; never move the alias.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Score challenger and champion on the same test split; promote the challenger only when it is
    better beyond the bootstrap noise."""
    from dataclasses import asdict

    from pipeline.core.config import default_config_path
    from pipeline.stages.runs import promote as run_promote

    if task is None and config is None:
        raise PipelineError("name the task (pipeline promote topic) or its config (-c configs/NAME.yaml)")
    r = run_promote(_config(config or default_config_path(task or ""), set_), dry_run=dry_run)
    if as_json:
        _echo_json(asdict(r))
        return
    low, high = r.difference_ci95
    typer.echo(f"{r.model} on its test split (n={r.n}):")
    typer.echo(f"  champion   v{r.champion_version}: macro-F1 {r.champion_macro_f1:.4f}")
    typer.echo(f"  challenger v{r.challenger_version}: macro-F1 {r.challenger_macro_f1:.4f}")
    typer.echo(f"  difference {r.difference:+.4f}, 95% bootstrap interval [{low:+.4f}, {high:+.4f}]")
    if r.promoted:
        typer.echo(f"promoted: v{r.challenger_version} is now the champion")
    else:
        reason = "dry run" if dry_run and low > 0 else "the interval includes 0 or lies below it"
        typer.echo(f"not promoted ({reason}): v{r.champion_version} stays the champion")


@app.command()
def export(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="Export to ONNX (the only format so far).")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Also quantise the weights to int8 and use that.")] = False,
) -> None:
    """Store an ONNX copy of a model in its folder; predict and evaluate then run it without torch."""
    from pipeline.stages.evaluate import prepared_split_data
    from pipeline.stages.export import export_onnx
    from pipeline.tracking.registry import CHAMPION, resolve_model

    if not onnx:
        raise PipelineError("say which format: --onnx (with --int8 for int8 weights)")
    cfg = _config(config, set_, profile)
    folder, uri = resolve_model(model or f"models:/{cfg.mlflow.registered_model}@{CHAMPION}")
    check = prepared_split_data(cfg, "validation")
    n = min(len(check.texts), 500)
    pairs = check.pairs[:n] if check.pairs is not None else None
    r = export_onnx(folder, int8, check.texts[:n], pairs, cfg.model.tfidf_first)
    typer.echo(
        f"{uri}: {r.onnx} written to {r.folder}; same label as PyTorch on {r.agreement:.1%} "
        f"of {n} validation texts (largest probability difference {r.max_prob_diff:.4f})"
    )
    if cfg.model.tfidf_first:
        typer.echo(
            f"TF-IDF first: answers alone where its top probability is ≥ {r.tfidf_first} "
            f"({r.tfidf_first_share:.0%} of the validation texts), no validation label changed"
            if r.tfidf_first is not None
            else "TF-IDF first: every threshold would change a validation label; the transformer reads every text"
        )


@app.command()
def bench(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N test articles.")] = None,
    train: Annotated[
        bool, typer.Option("--train", help="Training step rate against a default transformers.Trainer instead.")
    ] = False,
    steps: Annotated[int, typer.Option(help="Optimizer steps each side runs with --train.")] = 30,
    as_json: JsonOpt = False,
) -> None:
    """Predict speed against the plain transformers pipeline (batch 1 and 16), side by side in one process."""
    from dataclasses import asdict

    from pipeline.stages.bench import bench_predict, bench_train

    if train:
        t = bench_train(_config(config, set_, profile), steps)
        if as_json:
            _echo_json(asdict(t))
            return
        typer.echo(f"{t.steps} steps of {t.batch_size} windows, the same {t.windows} training windows:")
        typer.echo(
            f"  transformers.Trainer (defaults: {t.trainer_optim}, {t.trainer_precision}) "
            f"{t.trainer_steps_per_s:.3f} steps/s"
        )
        ours = "pipeline train (train.fast_paths)" if t.fast_paths else "pipeline train"
        typer.echo(f"  {ours:<46}  {t.ours_steps_per_s:.3f} steps/s")
        typer.echo(f"  speed-up: {t.speedup:.2f}x")
        return
    r = bench_predict(_config(config, set_, profile), model, limit)
    if as_json:
        _echo_json(r.summary())
        return
    typer.echo(f"{r.model_uri} on {r.n} test articles, {r.device}:")
    for m in r.runs:
        typer.echo(
            f"  {m.name:<40} {m.articles_per_s:7.1f} articles/s {m.tokens_per_s:9.0f} tokens/s "
            f"peak {m.peak_rss_mb:6.0f} MB  macro-F1 {m.macro_f1:.4f}"
        )
    summary = r.summary()
    typer.echo(f"  speed-up: {summary['speedup_vs_bs1']:.2f}x batch 1, {summary['speedup_vs_bs16']:.2f}x batch 16")
    typer.echo(
        f"  our predict path gives the PyTorch model's label on {r.label_agreement_with_torch:.1%} of "
        f"articles; the transformer read {r.transformer_read_share:.0%} of them"
    )


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def main() -> None:
    # typer ships its own click; its usage errors would print a multi-line panel, we print one line
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    try:
        code = typer.main.get_command(app).main(prog_name="pipeline", standalone_mode=False)
    except NoArgsIsHelpError as err:
        typer.echo(err.ctx.get_help() if err.ctx else "pipeline --help", err=True)
        sys.exit(2)
    except UsageError as err:  # a wrong option or argument
        command = err.ctx.command_path if err.ctx else "pipeline"
        typer.echo(f"error: {err.format_message().splitlines()[0]} (see `{command} --help`)", err=True)
        sys.exit(2)
    except ClickException as err:
        typer.echo(f"error: {err.format_message().splitlines()[0]}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except PipelineError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except BrokenPipeError:  # `pipeline predict ... | head`: the reader has what it wanted
        sys.stderr.close()
        sys.exit(0)
    except OSError as err:  # the machine, not the code: a full disk, a file that went away, no permission
        from pipeline.core.io import os_reason

        where = f"{err.filename}: " if err.filename else ""
        typer.echo(f"error: {where}{os_reason(err)}", err=True)
        sys.exit(2)
    except Exception as err:
        from pipeline.tracking.store import store_errors

        if not isinstance(err, store_errors()):
            raise
        typer.echo(f"error: the MLflow store failed: {_first_line(err)}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)

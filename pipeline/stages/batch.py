"""Stage 5b, batch: label a table of articles (Parquet, CSV, JSONL; millions of rows) into a Parquet folder.

Two engines, one output. `local` streams the files in chunks through the predictor in this
process; `spark` reads them with Spark and scores them with the registered pyfunc model through
MLflow's `spark_udf`, on `local[N]` or on the cluster of `spark-submit` / a notebook. Both go
through `score_frame`, so they give the labels `pipeline predict` gives. A row whose text is
empty or not a string gets an `error` and null labels. The output appears whole or not at all.
"""

from __future__ import annotations

import glob
import re
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.errors import PipelineError
from pipeline.core.io import atomic_dir
from pipeline.core.progress import advance, quiet, reporting
from pipeline.models.card import ModelCard
from pipeline.models.frames import output_schema, score_frame
from pipeline.models.predictor import Predictor
from pipeline.tracking.registry import CHAMPION, load_registered, resolve_model
from pipeline.tracking.store import import_mlflow

FILE_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".json")
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")  # s3://, dbfs:/, abfss://, hdfs://


@dataclass
class Columns:
    """Which input columns hold what; `title` None: a column named title, where there is one."""

    text: str = "text"
    title: str | None = None
    id: str = "id"
    keep: list[str] = field(default_factory=list)


@dataclass
class Scorer:
    """One model of the job and what its columns are called: topic, a target's stance or a claim's."""

    prefix: str
    model_ref: str
    pair: str | None = None  # the target or claim every row is scored against
    probabilities: bool = False  # a prob column per class (topic), or the label and its score only


@dataclass
class BatchResult:
    output: str
    engine: str
    rows: int
    errors: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def scorers(
    task: str, model_ref: str | None, registered: str, targets: list[str], target_model: str | None,
    claims: list[str], claim_model: str | None,
) -> list[Scorer]:  # fmt: skip
    """The topic model, then a stance model per target and per claim, with the columns they get."""
    out = [Scorer(task, model_ref or f"models:/{registered}@{CHAMPION}", probabilities=True)]
    seen: dict[str, str] = {}
    for target in targets:
        slug = re.sub(r"\W+", "_", target.lower()).strip("_") or "target"
        if slug in seen:
            raise PipelineError(f"--target {target!r} and {seen[slug]!r} would both be the columns stance_{slug}_*")
        seen[slug] = target
        out.append(Scorer(f"stance_{slug}", target_model or f"models:/target_stance@{CHAMPION}", pair=target))
    for k, claim in enumerate(claims, 1):
        out.append(Scorer(f"claim{k}", claim_model or f"models:/stance@{CHAMPION}", pair=claim))
    return out


def named_columns(scorer: Scorer, labels: list[str], multi_label: bool = False) -> dict[str, str]:
    """{score_frame column: output column} of one scorer."""
    names = {"label": f"{scorer.prefix}_label", "score": f"{scorer.prefix}_score"}
    if multi_label:
        names = {"label": names["label"], "labels": f"{scorer.prefix}_labels", "score": names["score"]}
    if scorer.probabilities:
        names |= {f"prob_{label}": f"{scorer.prefix}_prob_{label}" for label in labels}
    return names


def check_output(output: str, overwrite: bool) -> None:
    if URI.match(output):
        return  # Spark's writer refuses or replaces it (mode errorifexists / overwrite)
    path = Path(output)
    if path.exists() and not overwrite:
        raise PipelineError(
            f"{output} exists: give --overwrite to replace it (the old output stays until the new one is whole)"
        )
    if path.exists() and not path.is_dir():
        raise PipelineError(f"{output} is a file; the output is a Parquet folder")


def input_files(inputs: list[str]) -> list[Path]:
    """Files of the local engine: each input a file, a folder of Parquet files, or a glob."""
    files: list[Path] = []
    for name in inputs:
        matches = sorted(glob.glob(name)) if glob.has_magic(name) else [name]
        if not matches or not Path(matches[0]).exists():
            raise PipelineError(f"no input matches {name}")
        for match in map(Path, matches):
            if match.is_dir():
                parts = sorted(match.glob("*.parquet"))
                if not parts:
                    raise PipelineError(f"no .parquet files in folder {match}")
                files += parts
            elif not match.name.lower().endswith(FILE_SUFFIXES):
                raise PipelineError(
                    f"unsupported input {match.name} (expected {', '.join(FILE_SUFFIXES)} or a Parquet folder)"
                )
            else:
                files.append(match)
    return files


def read_chunks(files: list[Path], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The rows of every file, `chunk_rows` at a time, as the file types them (CSV: all strings)."""
    import pyarrow.parquet as pq

    for path in files:
        name = path.name.lower()
        try:
            if name.endswith(".parquet"):
                for record_batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                    yield record_batch.to_pandas()
            elif name.endswith((".csv", ".csv.gz")):
                yield from pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=chunk_rows, encoding="utf-8")
            else:
                yield from pd.read_json(
                    path, lines=name.endswith((".jsonl", ".jsonl.gz")), dtype=False, chunksize=chunk_rows
                )
        except PipelineError:
            raise
        except Exception as err:  # pandas and pyarrow raise many types for a corrupt file
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise PipelineError(f"cannot read {path}: {reason[:300]}") from None


def count_rows(files: list[Path]) -> int | None:
    """Rows in all files when their metadata says (Parquet), else None."""
    import pyarrow.parquet as pq

    if not all(f.name.lower().endswith(".parquet") for f in files):
        return None
    try:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except Exception:  # a corrupt file is reported, with its name, when its rows are read
        return None


def check_columns(columns: list[str], given: Columns, where: str) -> Columns:
    """`given` with the title column settled; a missing text, id or kept column is an error."""
    wanted = [given.text, given.id, *given.keep] + ([given.title] if given.title else [])
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise PipelineError(f"{where} has no column {', '.join(map(repr, missing))} (columns: {', '.join(columns)})")
    title = given.title or ("title" if "title" in columns else None)
    return Columns(given.text, title, given.id, given.keep)


def label_chunk(chunk: pd.DataFrame, cols: Columns, models: list[tuple[Scorer, Predictor]]) -> pd.DataFrame:
    """The output rows of one chunk: id, kept columns, every scorer's columns, error."""
    frame = pd.DataFrame({"text": chunk[cols.text].to_numpy()})
    if cols.title:
        frame["title"] = chunk[cols.title].to_numpy()
    out = chunk[[cols.id, *cols.keep]].reset_index(drop=True)
    error = None
    for scorer, predictor in models:
        scored = score_frame(predictor, frame, scorer.pair)
        for source, name in named_columns(scorer, predictor.labels, predictor.card.multi_label).items():
            out[name] = scored[source]
        error = scored["error"]
    out["error"] = error
    return out


def batch_local(
    inputs: list[str],
    output: str,
    cols: Columns,
    jobs: list[Scorer],
    runtime: Any,
    chunk_rows: int,
    show_progress: bool,
) -> BatchResult:
    """The local engine: chunks of `chunk_rows` through the predictors, one Parquet part per chunk."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if URI.match(output):
        raise PipelineError(f"--engine local writes a local folder, not {output}: use --engine spark")
    files = input_files(inputs)
    start = time.perf_counter()
    models = [
        (s, load_registered(s.model_ref, "", runtime.device, runtime.precision, runtime.threads)[0]) for s in jobs
    ]
    rows = errors = 0
    progress = Progress(
        TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(), TextColumn("articles"), TimeElapsedColumn(),
        disable=not show_progress or quiet(), console=Console(stderr=True),
    )  # fmt: skip
    total = count_rows(files)
    # a terminal gets the bar; a log file (a cluster job) gets a line every ~10 s
    lines = reporting("batch", total) if not show_progress and not quiet() else nullcontext()
    with atomic_dir(Path(output)) as tmp, progress, lines:
        task = progress.add_task("batch", total=total)
        settled: Columns | None = None
        for part, chunk in enumerate(read_chunks(files, chunk_rows)):
            settled = settled or check_columns([str(c) for c in chunk.columns], cols, str(files[0]))
            labelled = label_chunk(chunk, settled, models)
            labelled.to_parquet(tmp / f"part-{part:05d}.parquet", index=False)
            rows += len(labelled)
            errors += int(labelled["error"].notna().sum())
            progress.update(task, advance=len(chunk))
            advance(len(chunk))
        if rows == 0:
            raise PipelineError(f"no rows in {', '.join(inputs)}")
    return BatchResult(output, "local", rows, errors, time.perf_counter() - start)


def read_spark(spark: Any, inputs: list[str]) -> Any:
    """One DataFrame of every input: files by their suffix, any other path as Parquet, a bare name as a table."""
    frames = []
    for name in inputs:
        low = name.lower()
        if low.endswith((".csv", ".csv.gz")):
            frames.append(spark.read.options(header=True, multiLine=True, escape='"').csv(name))
        elif low.endswith((".jsonl", ".jsonl.gz", ".json")):
            frames.append(spark.read.json(name))
        elif "/" not in name and not Path(name).exists():
            frames.append(spark.table(name))  # a table of the catalog: NAME or catalog.schema.NAME
        else:
            frames.append(spark.read.parquet(name))
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame, allowMissingColumns=True)
    return out


def spark_model_uri(ref: str) -> tuple[str, ModelCard]:
    """The MLflow model URI spark_udf loads, and its model card."""
    from pipeline.models.card import read_card

    folder, uri = resolve_model(ref)
    if not ref.startswith(("models:/", "runs:/")):
        if not (Path(ref) / "MLmodel").is_file():
            raise PipelineError(f"--engine spark runs MLflow models (models:/NAME@ALIAS, runs:/...); {ref} is not one")
        uri = str(Path(ref).resolve())

    return uri, read_card(folder)


def spark_value(F: Any, struct: str, field: str) -> Any:
    """A field of spark_udf's result as the local engine writes it: null where a row has no label.
    MLflow casts a string column holding None to the string "None", and a missing score is NaN."""
    error = F.col(f"{struct}.error")
    if field == "error":
        return F.when(error != "None", error)
    value = F.col(f"{struct}.`{field}`")
    if field == "label":
        return F.when(error.isNull() | (error == "None"), value)
    return F.when(~F.isnan(value), value)


def batch_spark(
    inputs: list[str],
    output: str,
    cols: Columns,
    jobs: list[Scorer],
    master: str | None,
    overwrite: bool,
    partitions: int | None = None,
) -> BatchResult:
    """The Spark engine: every scorer a `spark_udf` over the registered pyfunc model."""
    from pipeline.stages.spark import is_local, spark_session

    spark = spark_session(master)
    mlflow = import_mlflow()  # with the project's tracking URI, where models:/ URIs are looked up
    from pyspark.sql import functions as F

    start = time.perf_counter()
    df = read_spark(spark, inputs)
    cols = check_columns(list(df.columns), cols, ", ".join(inputs))
    # round-robin into at least one partition a core: Parquet splits by row group, so a small file can land
    # in one task whatever its size; labelling costs far more than the shuffle
    df = df.repartition(partitions or max(df.rdd.getNumPartitions(), spark.sparkContext.defaultParallelism))
    article = F.struct(
        F.col(cols.text).cast("string").alias("text"),
        (F.col(cols.title).cast("string") if cols.title else F.lit(None).cast("string")).alias("title"),
    )
    outputs = [F.col(cols.id), *map(F.col, cols.keep)]
    for k, scorer in enumerate(jobs):
        uri, card = spark_model_uri(scorer.model_ref)
        labels, schema = card.labels, output_schema(card.labels, card.multi_label)
        udf = mlflow.pyfunc.spark_udf(spark, uri, result_type=schema, env_manager="local")
        call = (
            article
            if scorer.pair is None
            else F.struct(
                article["text"].alias("text"), article["title"].alias("title"), F.lit(scorer.pair).alias("pair")
            )
        )
        df = df.withColumn(f"__scored{k}", udf(call))
        outputs += [
            spark_value(F, f"__scored{k}", source).alias(name)
            for source, name in named_columns(scorer, labels, card.multi_label).items()
        ]
    labelled = df.select(*outputs, spark_value(F, f"__scored{len(jobs) - 1}", "error").alias("error"))
    if URI.match(output) or not is_local(spark):
        labelled.write.mode("overwrite" if overwrite else "errorifexists").parquet(output)
    else:
        with atomic_dir(Path(output)) as tmp:
            labelled.write.mode("overwrite").parquet(str(tmp))
    # what was committed, counted in one job over the written files
    counts = spark.read.parquet(output).agg(F.count(F.lit(1)), F.count("error")).first()
    rows, errors = int(counts[0]), int(counts[1])
    return BatchResult(output, "spark", rows, errors, time.perf_counter() - start)

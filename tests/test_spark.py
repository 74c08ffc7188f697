"""Spark in local[2]: `pipeline batch --engine spark` scores through MLflow's spark_udf, and
`pipeline train --engine spark` trains through TorchDistributor. Skipped where pyspark or Java
is missing, unless PIPELINE_REQUIRE_SPARK=1 (CI sets it)."""

import importlib.util
import os
import shutil

import pandas as pd
import pytest
from conftest import run_cli
from test_batch import ARTICLES, table, values

from pipeline.stages.batch import Columns, batch_local, batch_spark, scorers

HAVE_SPARK = importlib.util.find_spec("pyspark") is not None and shutil.which("java") is not None
if not HAVE_SPARK and os.environ.get("PIPELINE_REQUIRE_SPARK") == "1":
    raise RuntimeError("PIPELINE_REQUIRE_SPARK=1 but pyspark or Java is missing: run `make install-spark`")
pytestmark = [
    pytest.mark.spark,
    pytest.mark.xdist_group("spark"),  # one JVM per test process: the Spark tests share one
    pytest.mark.skipif(not HAVE_SPARK, reason="pyspark and Java: make install-spark"),
]


def many_articles(n: int) -> pd.DataFrame:
    rows = [ARTICLES[i % 3] for i in range(n)]
    return pd.DataFrame(rows, columns=["id", "title", "text"]).assign(id=[f"r{i}" for i in range(n)])


def test_spark_gives_the_local_engines_labels_each_id_once(trained, tmp_path):
    cfg, _ = trained
    source = table(tmp_path)
    jobs = scorers(cfg.task, None, cfg.mlflow.registered_model, [], None, [], None)
    spark_out, local_out = tmp_path / "spark", tmp_path / "local"
    r = batch_spark([str(source)], str(spark_out), Columns(keep=["section"]), jobs, "local[2]", False)
    assert (r.rows, r.errors) == (5, 2)
    batch_local([str(source)], str(local_out), Columns(keep=["section"]), jobs, cfg.runtime, 1024, False)
    spark = pd.read_parquet(spark_out).sort_values("id").reset_index(drop=True)
    local = pd.read_parquet(local_out).sort_values("id").reset_index(drop=True)
    assert spark.columns.tolist() == local.columns.tolist()
    assert values(spark["topic_label"]) == values(local["topic_label"])
    assert values(spark["error"]) == values(local["error"]) == [None] * 3 + ["empty text", "no text"]
    assert spark.isna().sum().tolist() == local.isna().sum().tolist()
    assert spark["topic_prob_sport"].iloc[:3].tolist() == pytest.approx(
        local["topic_prob_sport"].iloc[:3].tolist(), abs=1e-5
    )


def test_a_killed_python_worker_is_retried_and_no_row_is_written_twice(trained, tmp_path):
    """The first attempt of one task of the batch job kills its Python worker (as an OOM kill would):
    Spark runs the task again, and the committed output holds every id exactly once."""
    from pyspark.sql import functions as F

    from pipeline.stages.spark import spark_session

    cfg, _ = trained
    marker = str(tmp_path / "killed-once")

    def kill_first_attempt(text):
        import os

        from pyspark import TaskContext

        context = TaskContext.get()
        if context.partitionId() == 1 and context.attemptNumber() == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the Python worker dies mid-task
        return text

    spark = spark_session("local[2]")
    articles = spark.createDataFrame(many_articles(400)).repartition(4)
    articles.withColumn("text", F.udf(kill_first_attempt, "string")("text")).createOrReplaceTempView("articles_once")
    jobs = scorers(cfg.task, None, cfg.mlflow.registered_model, [], None, [], None)
    r = batch_spark(["articles_once"], str(tmp_path / "out"), Columns(), jobs, "local[2]", False)
    assert os.path.exists(marker), "a worker was killed"
    out = pd.read_parquet(tmp_path / "out")
    assert r.rows == 400 and len(out) == 400 and out["id"].is_unique
    assert set(out["topic_label"]) == {"sport", "business", "tech"}


def test_torch_distributor_trains_one_model_in_two_processes_and_logs_one_run(home, tiny_model_dir):
    import mlflow
    from conftest import make_config, synthetic_rows, write_csv

    source = write_csv(home / "news.csv", synthetic_rows(30))
    config = make_config(home, tiny_model_dir, source, train__epochs=2, train__batch_size=10, train__learning_rate=2e-2)
    done = run_cli(
        home, "train", "-c", str(config), "--engine", "spark", "--num-processes", "2", "--spark-master", "local[2]"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best epoch") == 1 and done.stdout.count("test: macro-F1") == 1
    [run] = mlflow.search_runs(experiment_names=["topic"]).to_dict("records")
    assert run["tags.processes"] == "2"
    assert run["metrics.test_macro_f1"] > 0.5, run["metrics.test_macro_f1"]  # chance is 0.33
    [version] = mlflow.MlflowClient().search_model_versions("name='topic'")
    assert str(version.version) == "1"
    assert (home / "model" / "pipeline.json").is_file()

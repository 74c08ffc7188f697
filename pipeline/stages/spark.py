"""Apache Spark as the engine past one machine: the session `pipeline batch` and `pipeline train --engine spark` use.

`SparkSession.builder.getOrCreate()` is asked for the session, so `spark-submit` or a Databricks
notebook supplies the cluster; alone on one machine it is `local[N]`. pyspark is an extra
(`make install-spark`) and is imported only here.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from pipeline.core.errors import PipelineError

TASK_ATTEMPTS = 4  # Spark's default spark.task.maxFailures, which local mode otherwise sets to 1
LOCAL_MASTER = re.compile(r"^local(\[(\d+|\*)\])?$")


def import_pyspark() -> Any:
    try:
        import pyspark
    except ImportError:
        raise PipelineError("pyspark is not installed: run `make install-spark` (Java 17 and pyspark)") from None
    return pyspark


def with_retries(master: str) -> str:
    """`local[N]` as `local[N,4]`: a killed task is then retried, as on a cluster."""
    match = LOCAL_MASTER.match(master)
    if not match:
        return master
    return f"local[{match.group(2) or 1},{TASK_ATTEMPTS}]"


def spark_session(master: str | None, app_name: str = "pipeline") -> Any:
    """The active session (spark-submit's, a notebook's), else one on `master` (default local[*])."""
    import_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    launched = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit started this driver with its own master
    builder = SparkSession.builder.appName(app_name)
    if not launched or master is not None:
        master = with_retries(master or "local[*]")
        builder = builder.master(master)
    if master is not None and master.startswith("local"):
        # one machine: workers run this venv's Python, Spark stays on loopback and prints no progress bars
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = (
            builder.config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.host", "127.0.0.1")
        )
    try:
        spark = builder.getOrCreate()
    except Exception as err:  # no Java, a bad master URL: Py4J and Spark raise many types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise PipelineError(f"cannot start Spark ({master or 'from spark-submit'}): {first[:300]}") from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def is_local(spark: Any) -> bool:
    return str(spark.sparkContext.master).startswith("local")


def train_process(cfg: Any, options: dict[str, Any]) -> Any:
    """One process of a TorchDistributor training: the data-parallel `train()` that torchrun also runs
    (accelerate reads the rank and world size TorchDistributor sets)."""
    from pipeline.stages.train import train

    return train(cfg, show_progress=False, **options)


def train_on_spark(cfg: Any, num_processes: int, master: str | None, options: dict[str, Any]) -> Any:
    """`train()` in `num_processes` processes through Spark's TorchDistributor: on the driver in local
    mode (`local[N]`), else as barrier tasks on the executors; returns the main process's result."""
    from pipeline.models.runtime import gpu_present

    spark = spark_session(master, app_name=f"pipeline train {cfg.task}")
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(num_processes=num_processes, local_mode=is_local(spark), use_gpu=gpu_present())
    try:
        return distributor.run(train_process, cfg, options)
    except RuntimeError as err:
        if isinstance(err.__cause__, PipelineError) or "PipelineError" in str(err):
            raise PipelineError(str(err).strip().splitlines()[-1]) from None
        raise

"""The MLflow pyfunc flavour of a trained classifier: `mlflow.pyfunc.load_model(uri).predict(df)`.

Input: a DataFrame with a `text` column, optionally `title` and `pair` (the target or claim of a
pair task). Output: the label, its probability, one `prob_<label>` column per class and `error`
(why a row got no label), as `pipeline.models.frames.score_frame` gives them: Spark's `spark_udf`
and `pipeline batch` get the numbers of `pipeline predict`, on the ONNX export where there is one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.core.config import PACKAGE_DIR
from pipeline.models.card import read_card
from pipeline.models.frames import score_frame
from pipeline.models.loading import load_model

PIP_REQUIREMENTS = [
    "torch==2.13.0",
    "transformers==5.24.0",
    "onnxruntime==1.32.0",  # a folder with an ONNX export (`pipeline export`) is served by it
    "numpy",
    "pandas",
    "pyyaml",
    "pydantic>=2.7",
]


@contextmanager
def _no_type_hint_warnings() -> Iterator[None]:
    """MLflow warns, at class definition and at logging, that predict() has no type hints (they are
    left out on purpose: MLflow would read them as an input schema). It forces its own "once"
    filter, so the warning is dropped where it is shown."""
    shown = warnings.showwarning
    warnings.showwarning = lambda *args, **kwargs: None
    try:
        yield
    finally:
        warnings.showwarning = shown


with _no_type_hint_warnings():
    import mlflow.pyfunc

    class NewsClassifierModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
        def load_context(self, context: Any) -> None:
            # a Spark Python worker is given OMP_NUM_THREADS = spark.task.cpus: as many threads as its task's cores
            threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
            self.classifier = load_model(Path(context.artifacts["model"]), threads=threads)

        def predict(self, context, model_input, params=None):
            return score_frame(self.classifier, model_input)


def log_pyfunc(folder: Path, labels: list[str], registered_name: str | None) -> Any:
    """Log the model folder as a pyfunc model of the active run, with a signature and an input
    example (a `pair` column too for pair tasks); returns MLflow's ModelInfo."""
    import pandas as pd
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema, TensorSpec

    example = pd.DataFrame({"text": ["Shares rose after the company reported record profits."]})
    chosen = {"labels": [labels[0]]} if read_card(folder).multi_label else {}
    output = pd.DataFrame(
        {
            "label": [labels[0]],
            **chosen,
            "score": [1.0],
            **{f"prob_{label}": [0.0] for label in labels},
            "error": ["no text"],
        }
    )
    inputs: list[ColSpec | TensorSpec] = [ColSpec("string", "text"), ColSpec("string", "title", required=False)]
    if read_card(folder).pair_column:  # the claim or target: optional, empty when left out
        example.insert(0, "pair", ["Company profits rise"])
        inputs.insert(0, ColSpec("string", "pair", required=False))
    signature = ModelSignature(inputs=Schema(inputs), outputs=infer_signature(example, output).outputs)
    with _no_type_hint_warnings():
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=NewsClassifierModel(),
            artifacts={"model": str(folder)},
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=PIP_REQUIREMENTS,
            signature=signature,
            input_example=example,
            registered_model_name=registered_name,
        )

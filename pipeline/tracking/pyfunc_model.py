"""The pyfunc model of a trained classifier as MLflow's models-from-code script.

`log_pyfunc` logs this file's source, not a pickled object: MLflow runs it when the model is loaded
(`mlflow.models.set_model`), and the model folder artifact is read with `load_model` (safetensors,
JSON and ONNX, never a pickle). Importing it has that one effect, so only MLflow imports it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.models.frames import score_frame
from pipeline.models.loading import load_model
from pipeline.tracking.pyfunc import no_type_hint_warnings

with no_type_hint_warnings():
    import mlflow.pyfunc
    from mlflow.models import set_model

    class NewsClassifierModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
        def load_context(self, context: Any) -> None:
            # a Spark Python worker is given OMP_NUM_THREADS = spark.task.cpus: as many threads as its task's cores
            threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
            self.classifier = load_model(Path(context.artifacts["model"]), threads=threads)

        def predict(self, context, model_input, params=None):
            return score_frame(self.classifier, model_input)

    set_model(NewsClassifierModel())

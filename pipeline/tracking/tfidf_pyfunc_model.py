"""The pyfunc model of the TF-IDF baseline as MLflow's models-from-code script.

`log_tfidf_pyfunc` logs this file's source beside the baseline's npz and JSON files (read with
allow_pickle=False): no pickle is written or read. Importing it calls `mlflow.models.set_model`, so
only MLflow imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.tracking.pyfunc import TfidfBaseline, no_type_hint_warnings

with no_type_hint_warnings():
    import mlflow.pyfunc
    from mlflow.models import set_model

    class TfidfBaselineModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
        def load_context(self, context: Any) -> None:
            self.baseline = TfidfBaseline.load(Path(context.artifacts["model"]))

        def predict(self, context, model_input, params=None):
            return self.baseline.score(model_input)

    set_model(TfidfBaselineModel())

"""The MLflow pyfunc flavour of a trained classifier: `mlflow.pyfunc.load_model(uri).predict(df)`.

Input: a DataFrame with a `text` column (and `pair` for sentence-pair tasks). Output: the
label, its probability and one `prob_<label>` column per class.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.core.config import PACKAGE_DIR
from pipeline.models.card import read_card
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
            self.classifier = load_model(Path(context.artifacts["model"]))

        def predict(self, context, model_input, params=None):
            import pandas as pd

            texts = [str(t) for t in model_input["text"]]
            pairs = None
            if "pair" in model_input:
                pairs = ["" if p is None or p != p else str(p) for p in model_input["pair"]]
            elif self.classifier.card.pair_column:
                pairs = [""] * len(texts)  # a pair model with no pair given: an empty first segment, as predict does
            probs = self.classifier.predict_proba(texts, pairs)
            labels = self.classifier.labels
            out = pd.DataFrame({f"prob_{label}": probs[:, i] for i, label in enumerate(labels)})
            out.insert(0, "score", probs.max(axis=1))
            out.insert(0, "label", [labels[i] for i in probs.argmax(axis=1)])
            return out


def log_pyfunc(folder: Path, labels: list[str], registered_name: str | None) -> Any:
    """Log the model folder as a pyfunc model of the active run, with a signature and an input
    example (a `pair` column too for pair tasks); returns MLflow's ModelInfo."""
    import pandas as pd
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema, TensorSpec

    example = pd.DataFrame({"text": ["Shares rose after the company reported record profits."]})
    output = pd.DataFrame({"label": [labels[0]], "score": [1.0], **{f"prob_{label}": [0.0] for label in labels}})
    signature = infer_signature(example, output)
    if read_card(folder).pair_column:  # the claim, target or title: optional, empty when left out
        example.insert(0, "pair", ["Company profits rise"])
        inputs: list[ColSpec | TensorSpec] = [ColSpec("string", "pair", required=False), ColSpec("string", "text")]
        signature = ModelSignature(inputs=Schema(inputs), outputs=signature.outputs)
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

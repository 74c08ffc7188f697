"""The MLflow pyfunc flavour of a classifier and of the TF-IDF baseline: `mlflow.pyfunc.load_model(uri).predict(df)`.

Input: a DataFrame with a `text` column, optionally `title` and `pair` (the target or claim of a
pair task). Output: the label, its probability, one `prob_<label>` column per class and `error`
(why a row got no label), as `pipeline.models.frames.score_frame` gives them: Spark's `spark_udf`
and `pipeline batch` get the numbers of `pipeline predict`, on the ONNX export where there is one.

Both are logged as models from code: the logged model is a script (pyfunc_model.py,
tfidf_pyfunc_model.py), a copy of the package it imports, and a folder of safetensors, ONNX, npz and
JSON files; nothing in it is a pickle, so loading a model someone sent runs only our own code.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.config import PACKAGE_DIR
from pipeline.core.errors import PipelineError
from pipeline.core.io import normalise_text
from pipeline.core.metrics import label_sets
from pipeline.models.card import read_card
from pipeline.models.frames import LABELS_SEP, row_error
from pipeline.models.tfidf import TfidfModel, tfidf_texts

PIP_REQUIREMENTS = [
    "torch==2.13.0",
    "transformers==5.24.0",
    "onnxruntime==1.32.0",  # a folder with an ONNX export (`pipeline export`) is served by it
    "numpy",
    "pandas",
    "pyyaml",
    "pydantic>=2.7",
]
TFIDF_PIP_REQUIREMENTS = ["numpy", "pandas", "pyyaml", "pydantic>=2.7"]  # the baseline runs in numpy alone

MODEL_SCRIPT = Path(__file__).with_name("pyfunc_model.py")
TFIDF_SCRIPT = Path(__file__).with_name("tfidf_pyfunc_model.py")
BASELINE_FILE = "tfidf_baseline.json"  # the baseline's labels and pair column, beside TfidfModel's files


@contextmanager
def no_type_hint_warnings() -> Iterator[None]:
    """MLflow warns, at class definition and at logging, that predict() has no type hints (they are
    left out on purpose: MLflow would read them as an input schema). It forces its own "once"
    filter, so the warning is dropped where it is shown."""
    shown = warnings.showwarning
    warnings.showwarning = lambda *args, **kwargs: None
    try:
        yield
    finally:
        warnings.showwarning = shown


def _signature_and_example(labels: list[str], multi_label: bool, pair: bool) -> tuple[Any, Any]:
    """A signature (text, optional title, and an optional pair for pair tasks) and an input example."""
    import pandas as pd
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema, TensorSpec

    example = pd.DataFrame({"text": ["Shares rose after the company reported record profits."]})
    chosen = {"labels": [labels[0]]} if multi_label else {}
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
    if pair:  # the claim or target: optional, empty when left out
        example.insert(0, "pair", ["Company profits rise"])
        inputs.insert(0, ColSpec("string", "pair", required=False))
    return ModelSignature(inputs=Schema(inputs), outputs=infer_signature(example, output).outputs), example


def _log_from_code(script: Path, folder: Path, requirements: list[str], **kwargs: Any) -> Any:
    import mlflow.pyfunc

    # code_paths: the script imports `pipeline`, which a fresh environment (`mlflow models serve`
    # with its own virtualenv, a remote Spark worker) has not installed
    with no_type_hint_warnings():
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(script),
            artifacts={"model": str(folder)},
            code_paths=[str(PACKAGE_DIR)],
            pip_requirements=requirements,
            **kwargs,
        )


def log_pyfunc(folder: Path, labels: list[str], registered_name: str | None) -> Any:
    """Log the model folder as a pyfunc model of the active run, with a signature and an input
    example (a `pair` column too for pair tasks); returns MLflow's ModelInfo."""
    card = read_card(folder)
    signature, example = _signature_and_example(labels, card.multi_label, bool(card.pair_column))
    return _log_from_code(
        MODEL_SCRIPT,
        folder,
        PIP_REQUIREMENTS,
        signature=signature,
        input_example=example,
        registered_model_name=registered_name,
    )


@dataclass
class TfidfBaseline:
    """The TF-IDF baseline as the pyfunc serves it: the numpy model, its labels and the column of its pair."""

    model: TfidfModel
    labels: list[str]
    pair_column: str | None  # None: the baseline read the text alone

    def save(self, folder: Path) -> None:
        self.model.save(folder)
        info = {"labels": self.labels, "pair_column": self.pair_column}
        (folder / BASELINE_FILE).write_text(json.dumps(info), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> TfidfBaseline:
        try:
            info = json.loads((folder / BASELINE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise PipelineError(f"{folder} is not a TF-IDF baseline ({BASELINE_FILE}: {err})") from None
        return cls(TfidfModel.load(folder), list(info["labels"]), info.get("pair_column"))

    def score(self, frame: Any) -> Any:
        """label, score, prob_<label> and error for each row, as `score_frame` shapes them; the pair is the
        `pair` column, else the baseline's pair column (`title` for topic). Multi-label: labels at 0.5."""
        import pandas as pd

        n, labels = len(frame), self.labels
        texts = frame["text"].tolist() if "text" in frame else [None] * n
        errors = [row_error(t) for t in texts]
        ok = [i for i, e in enumerate(errors) if e is None]
        pairs: list[str] | None = None
        if self.pair_column is not None:
            column = "pair" if "pair" in frame else self.pair_column
            values = frame[column].tolist() if column in frame else [None] * n
            pairs = [str(values[i]) if isinstance(values[i], str) else "" for i in ok]
        probs = np.full((n, len(labels)), np.nan)
        if ok:
            inputs = tfidf_texts([normalise_text(str(texts[i])) for i in ok], pairs)
            probs[ok] = np.exp(self.model.log_proba(inputs))
        best = [int(probs[i].argmax()) if e is None else -1 for i, e in enumerate(errors)]
        out = pd.DataFrame({"label": pd.Series([labels[b] if b >= 0 else None for b in best], dtype="object")})
        if self.model.multi_label:
            out["labels"] = pd.Series([None] * n, dtype="object")
            if ok:
                out.loc[ok, "labels"] = [
                    LABELS_SEP.join(labels[j] for j in sorted(np.flatnonzero(c), key=lambda j: -row[j]))
                    for c, row in zip(label_sets(probs[ok], None), probs[ok], strict=True)
                ]
        out["score"] = [float(probs[i, b]) if b >= 0 else np.nan for i, b in enumerate(best)]
        for j, label in enumerate(labels):
            out[f"prob_{label}"] = probs[:, j]
        out["error"] = pd.Series(errors, dtype="object")
        return out


def log_tfidf_pyfunc(baseline: TfidfBaseline) -> Any:
    """Log the baseline as a pyfunc model of the active run (npz and JSON files, served by
    tfidf_pyfunc_model.py); returns MLflow's ModelInfo."""
    import tempfile

    signature, example = _signature_and_example(
        baseline.labels, baseline.model.multi_label, baseline.pair_column is not None
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tfidf"
        folder.mkdir()
        baseline.save(folder)
        return _log_from_code(TFIDF_SCRIPT, folder, TFIDF_PIP_REQUIREMENTS, signature=signature, input_example=example)

"""The TF-IDF model: numpy inference equal to scikit-learn's, its save/load round trip, the stacking
weights, and a blended model trained, exported and predicted end to end on a tiny BERT."""

import json
import os
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest
from conftest import make_config, run_cli, synthetic_rows, write_csv

from pipeline.core.config import BaselineConfig, load_config
from pipeline.models.tfidf import (
    TFIDF_FIRST_GRID,
    TfidfModel,
    fit_stack,
    fit_tfidf,
    fit_tfidf_first,
    log_clipped,
    stack,
)

SENTENCES = [
    ("The Bank of England raised rates; shares fell. Shares fell again!", "business"),
    ("Café owners and the économie: profits rose, profits rose at the bank", "business"),
    ("Investors at a CAFÉ sold shares as the bank's profits rose and rates fell", "business"),
    ("The team won the cup final; the team won the league", "sport"),
    ("A late goal won the match for the team, the coach said", "sport"),
    ("The coach praised the team after the cup match", "sport"),
    ("New phone software lets users browse the internet faster", "tech"),
    ("Internet users complained about the phone software update", "tech"),
    ("A faster chip for the phone: users and software makers cheer", "tech"),
]
SETTINGS = BaselineConfig(max_features=1000, ngram_max=2, c_grid=[0.3, 3.0], solver="saga", class_weight="none")


def fitted_on(rows, labels):
    texts = [t for t, _ in rows]
    y = np.asarray([labels.index(label) for _, label in rows])
    return fit_tfidf(SETTINGS, texts, y, texts, y, labels, seed=0), texts


@pytest.mark.parametrize("labels", [["business", "sport", "tech"], ["business", "sport"]])
def test_numpy_tfidf_gives_scikit_learns_probabilities(labels, tmp_path):
    rows = [r for r in SENTENCES if r[1] in labels]
    fitted, texts = fitted_on(rows, labels)
    model = TfidfModel.from_fitted(fitted)
    unseen = ["Shares in the café phone maker rose; the team's coach bought some", "", "Économie ÉCONOMIE économie"]
    for batch in (texts, unseen):
        assert np.allclose(np.exp(model.log_proba(batch)), fitted.predict_proba(batch), atol=1e-10)
    model.save(tmp_path)
    again = TfidfModel.load(tmp_path)
    assert np.array_equal(again.log_proba(texts + unseen), model.log_proba(texts + unseen))


def test_fit_tfidf_names_a_label_without_train_examples():
    from pipeline.core.errors import PipelineError

    with pytest.raises(PipelineError, match="tech"):
        fitted_on([r for r in SENTENCES if r[1] != "tech"], ["business", "sport", "tech"])


def test_stack_weights_follow_the_informative_model():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    informative = np.full((300, 3), 0.1)
    informative[np.arange(300), y] = 0.8
    noise = rng.dirichlet(np.ones(3), 300)
    a, b = fit_stack(log_clipped(informative), log_clipped(noise), y)
    assert a > 1.0 and b < 0.1
    b_first, a_first = fit_stack(log_clipped(noise), log_clipped(informative), y)
    assert a_first > 1.0 and b_first < 0.1
    # weight (1, 0) is the first model unchanged; probabilities always sum to one
    assert np.allclose(stack(log_clipped(informative), log_clipped(noise), (1.0, 0.0)), informative)
    assert np.allclose(stack(log_clipped(noise), log_clipped(informative), (a_first, b_first)).sum(axis=1), 1.0)


def test_blended_model_trains_exports_and_predicts_without_scikit_learn(home, tiny_model_dir):
    from pipeline.models.loading import load_model, load_torch
    from pipeline.stages.export import export_onnx
    from pipeline.stages.train import train

    src = write_csv(home / "news.csv", synthetic_rows(20))
    cfg = load_config(make_config(home, tiny_model_dir, src, model__tfidf_blend=True, train__max_steps=2))
    result = train(cfg)
    folder = result.model_dir
    a, b = json.loads((folder / "pipeline.json").read_text())["decision"]["tfidf_blend"]
    assert a >= 0 and b > 0, "keyword-separable text: the TF-IDF model must get weight"
    texts = [r["text"] for r in synthetic_rows(4, seed=5)]
    blended = load_torch(folder, "cpu", "fp32")
    alone = load_torch(folder, "cpu", "fp32")
    tfidf, alone.decision.tfidf, alone.decision.blend = alone.decision.tfidf, None, None
    expected = stack(log_clipped(alone.predict_proba(texts)), tfidf.log_proba(texts), (a, b))
    assert np.allclose(blended.predict_proba(texts), expected)
    assert export_onnx(folder, False, texts, None).agreement == 1.0
    assert np.allclose(load_model(folder, "cpu").predict_proba(texts), expected, atol=1e-4)

    # TF-IDF first: fitted on the check texts, it changes none of their labels, and where the TF-IDF
    # model is sure enough its own probabilities are the answer
    report = export_onnx(folder, False, texts, None, tfidf_first=True)
    threshold = json.loads((folder / "pipeline.json").read_text())["decision"]["tfidf_first"]
    assert report.tfidf_first == threshold and threshold in TFIDF_FIRST_GRID
    p_tfidf = np.exp(tfidf.log_proba(texts))
    sure = p_tfidf.max(axis=1) >= threshold
    assert report.tfidf_first_share == sure.mean() > 0
    for model in (load_torch(folder, "cpu", "fp32"), load_model(folder, "cpu")):
        probs = model.predict_proba(texts)
        assert (probs.argmax(axis=1) == expected.argmax(axis=1)).all()
        assert np.allclose(probs[sure], p_tfidf[sure]) and np.allclose(probs[~sure], expected[~sure], atol=1e-4)

    article = home / "a.txt"
    article.write_text("match goal team player coach season cup league win goal\n")
    env = {**os.environ, "PIPELINE_HOME": str(home)}
    command = [sys.executable, "-X", "importtime", "-m", "pipeline", "predict", "--model", str(folder), str(article)]
    traced = subprocess.run([*command, "--no-stance"], capture_output=True, text=True, env=env, timeout=300)
    assert traced.returncode == 0, traced.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in traced.stderr.splitlines() if "import time" in line}
    assert not {"sklearn", "scipy", "torch"} & imported
    out = run_cli(home, "predict", "--model", str(folder), "--no-stance", "--json", str(article))
    assert json.loads(out.stdout)["topic"]["label"] == "sport"


def test_tfidf_first_threshold_is_the_lowest_that_changes_no_label():
    p_tfidf = np.asarray([[0.9, 0.1], [0.55, 0.45], [0.4, 0.6], [0.7, 0.3]])
    p_full = np.asarray([[0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    # row 1: the TF-IDF model says 0 at 0.55 where the blend says 1, so 0.55 and below change a label
    assert fit_tfidf_first(p_tfidf, p_full, (0.3, 0.5, 0.55, 0.6, 0.95)) == 0.6
    assert fit_tfidf_first(p_tfidf, p_full, (0.3, 0.5)) is None


def test_the_decision_runs_the_transformer_only_where_the_tfidf_model_is_unsure():
    from pipeline.models.decision import Decision
    from pipeline.models.predictor import Predictor
    from pipeline.text.windows import Windows

    class Tfidf:
        def log_proba(self, texts):
            return np.log(np.asarray([[0.9, 0.1] if "sure" in t else [0.5, 0.5] for t in texts]))

    class Backend:
        """Logits whose softmax is (0.2, 0.8) for every text it is given; it notes which."""

        seen: ClassVar[list[str]] = []

        def windows(self, texts, pairs):
            return Windows([[1]] * len(texts), [[0]] * len(texts), list(range(len(texts))))

        def window_logits(self, texts, pairs):
            self.seen.extend(texts)
            return np.tile(np.log([0.2, 0.8]), (len(texts), 1)), self.windows(texts, pairs)

    def predictor(threshold):
        decision = Decision(["a", "b"], tfidf=Tfidf(), blend=(1.0, 1.0), tfidf_first=threshold)  # type: ignore[arg-type]
        return Predictor(None, Backend(), decision)  # type: ignore[arg-type]

    class Card:
        labels: ClassVar[list[str]] = ["a", "b"]

    texts = ["sure a", "maybe b", "sure c", "maybe d"]
    model = predictor(0.8)
    model.card = Card()  # type: ignore[assignment]
    out = model.predict_proba(texts)
    assert Backend.seen == ["maybe b", "maybe d"]
    assert np.allclose(out[[0, 2]], [0.9, 0.1]) and np.allclose(out[[1, 3]], [0.2, 0.8])
    Backend.seen.clear()
    everything = predictor(None)
    everything.card = Card()  # type: ignore[assignment]
    assert np.allclose(everything.predict_proba(texts)[0], [0.18 / 0.26, 0.08 / 0.26])
    assert Backend.seen == texts
    Backend.seen.clear()
    assert np.allclose(model.predict_proba(["sure"]), [[0.9, 0.1]]) and Backend.seen == []

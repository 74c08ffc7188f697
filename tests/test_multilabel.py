"""Multi-label tasks: the metrics and thresholds, prepare's label sets and iterative split, the one-vs-rest
TF-IDF model, and a tiny model trained, predicted, evaluated and exported end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import LABELS, ROOT, WORDS, isolate, make_config, run_cli, write_csv
from sklearn.metrics import f1_score, hamming_loss

from pipeline.core.config import load_config
from pipeline.core.metrics import compute_metrics, fit_thresholds, label_sets


def multilabel_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Articles about one or two of LABELS: the words of each of their labels, space-separated labels."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        labels = sorted(rng.sample(LABELS, rng.choice([1, 1, 2])))
        words = [w for label in labels for w in WORDS[label].split()]
        body = " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))
        rows.append({"id": f"a{i}", "title": f"news {i}", "text": body, "labels": " ".join(labels)})
    return rows


def multilabel_config(home: Path, model: str | Path, **changes: object) -> Path:
    src = write_csv(home / "multi.csv", multilabel_rows(150))
    changes = {
        "data__multi_label": True,
        "data__label_column": "labels",
        "data__label_separator": " ",
        "train__learning_rate": 2e-2,
        "train__warmup_ratio": 0.0,
        "train__epochs": 6,
        "train__early_stopping_patience": 2,
        **changes,
    }
    return make_config(home, model, src, **changes)


def test_label_sets_give_every_article_a_label() -> None:
    probs = np.array([[0.9, 0.6, 0.1], [0.2, 0.3, 0.1], [0.1, 0.1, 0.45]])
    chosen = label_sets(probs, [0.5, 0.5, 0.4])
    assert chosen.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]  # the second: none above, so its best one


def test_multilabel_metrics_are_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((200, 4)) < 0.3).astype(np.int8)
    probs = np.clip(y * 0.6 + rng.random((200, 4)) * 0.5, 0, 1)
    m = compute_metrics(y, probs, ["a", "b", "c", "d"], [0.5, 0.6, 0.4, 0.5])
    chosen = label_sets(probs, [0.5, 0.6, 0.4, 0.5])
    for average in ("micro", "macro", "samples"):
        assert m[f"{average}_f1"] == pytest.approx(f1_score(y, chosen, average=average, zero_division=0))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(y, chosen))
    assert m["label_cardinality"] == pytest.approx(y.sum(axis=1).mean())
    assert m["macro_f1_ci95"][0] <= m["macro_f1"] <= m["macro_f1_ci95"][1]
    assert set(m["per_class"]) == {"a", "b", "c", "d"} and m["multi_label"]


def test_per_label_thresholds_beat_the_global_one_where_they_can() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((400, 2)) < 0.3).astype(np.int8)
    # label 0 is well calibrated around 0.5; label 1 runs low: its positives sit near 0.2
    probs = np.column_stack([y[:, 0] * 0.5 + rng.random(400) * 0.45, y[:, 1] * 0.15 + rng.random(400) * 0.12])
    fixed, global_, per_label = (fit_thresholds(probs, y, how) for how in ("fixed", "global", "per_label"))
    assert fixed == [0.5, 0.5] and len(set(global_)) == 1
    assert per_label[1] < 0.3 < per_label[0]

    def f1(t: list[float]) -> float:
        return f1_score(y, label_sets(probs, t), average="macro")

    assert f1(per_label) > f1(global_) >= f1(fixed) - 1e-9


def test_prepare_reads_label_sets_and_splits_every_label(home: Path, tiny_model_dir: Path) -> None:
    from pipeline.stages.prepare import label_names, prepare, split_targets

    cfg = load_config(multilabel_config(home, tiny_model_dir))
    prepared = prepare(cfg)
    from datasets import load_from_disk

    dataset = load_from_disk(str(prepared.path))
    assert label_names(dataset["train"]) == LABELS
    for split in ("train", "validation", "test"):
        y = split_targets(dataset[split])
        assert y.shape[1] == 3 and y.sum(axis=1).min() >= 1
        assert (y.sum(axis=0) > 0).all()  # iterative stratification puts every label in every split
    assert prepared.card["multi_label"] and prepared.card["splits"]["train"]["labels"]["tech"] > 0


def test_label_columns_give_the_same_label_sets(home: Path, tiny_model_dir: Path) -> None:
    from datasets import load_from_disk

    from pipeline.stages.prepare import prepare

    rows = multilabel_rows(60)
    wide = [
        {**{k: r[k] for k in ("id", "title", "text")}, **{x: int(x in r["labels"].split()) for x in LABELS}}
        for r in rows
    ]
    src = write_csv(home / "wide.csv", wide)
    by_cell = load_config(multilabel_config(home, tiny_model_dir))
    by_columns = load_config(
        make_config(
            home,
            tiny_model_dir,
            src,
            data__multi_label=True,
            data__label_column=None,
            data__label_columns=LABELS,
            data__prepared_dir=str(home / "prepared-wide"),
        )
    )
    write_csv(home / "multi.csv", rows)  # the same 60 rows as one column of labels
    a, b = (load_from_disk(str(prepare(c).path)) for c in (by_cell, by_columns))
    key = {r["id"]: r["label"] for split in a.values() for r in split}
    assert {r["id"]: r["label"] for split in b.values() for r in split} == key


def test_one_vs_rest_tfidf_matches_scikit_learn() -> None:
    from pipeline.models.tfidf import TfidfModel, fit_tfidf

    rows = multilabel_rows(120, seed=3)
    texts = [r["text"] for r in rows]
    y = np.array([[int(x in r["labels"].split()) for x in LABELS] for r in rows], dtype=np.int8)
    settings = load_config(ROOT / "configs" / "reuters.yaml").baseline.model_copy(update={"c_grid": [1.0]})
    fitted = fit_tfidf(settings, texts[:80], y[:80], texts[80:], y[80:], LABELS, seed=0)
    model = TfidfModel.from_fitted(fitted)
    assert model.multi_label
    np.testing.assert_allclose(np.exp(model.log_proba(texts[80:])), fitted.predict_proba(texts[80:]), atol=1e-8)


@pytest.fixture(scope="module")
def trained_multilabel(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    home = tmp_path_factory.mktemp("multilabel-home")
    with pytest.MonkeyPatch.context() as mp:
        isolate(mp, home)
        from pipeline.stages.train import train

        cfg = load_config(multilabel_config(home, tiny_model_dir, model__tfidf_blend=True))
        result = train(cfg, show_progress=False)
    return home, cfg, result


def test_trained_multilabel_model_learns_and_fits_thresholds(trained_multilabel) -> None:
    from pipeline.models.card import read_card

    _, _, result = trained_multilabel
    card = read_card(result.model_dir)
    assert card.multi_label and card.decision.thresholds is not None and len(card.decision.thresholds) == 3
    assert card.decision.tfidf_blend is not None
    m = result.test_metrics
    assert m["multi_label"] and m["micro_f1"] > 0.8 and m["macro_f1"] > 0.8
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"


def test_multilabel_predict_evaluate_and_export(trained_multilabel, tmp_path: Path) -> None:
    home, _, result = trained_multilabel
    config = str(home / "config.yaml")
    article = tmp_path / "both.txt"
    article.write_text("shares profit market bank " * 5 + "match goal team league " * 5)
    out = run_cli(home, "predict", "-c", config, "--no-stance", "--json", str(article))
    assert out.returncode == 0, out.stderr
    topic = json.loads(out.stdout)["topic"]
    assert {x["label"] for x in topic["labels"]} == {"business", "sport"}
    assert set(topic["scores"]) == set(LABELS) and topic["labels"][0]["score"] >= topic["labels"][1]["score"]

    out = run_cli(home, "evaluate", "-c", config, "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert {"micro_f1", "macro_f1", "samples_f1", "per_label", "hamming_loss"} <= set(summary)
    assert summary["macro_f1"] == pytest.approx(result.test_metrics["macro_f1"])

    out = run_cli(home, "export", "-c", config, "--onnx", "--model", str(result.model_dir))
    assert out.returncode == 0, out.stderr
    out = run_cli(
        home, "predict", "-c", config, "--no-stance", "--json", "--model", str(result.model_dir), str(article)
    )
    assert {x["label"] for x in json.loads(out.stdout)["topic"]["labels"]} == {"business", "sport"}


def test_multilabel_frames_carry_the_label_set(trained_multilabel) -> None:
    import pandas as pd

    from pipeline.models.frames import output_schema, score_frame
    from pipeline.models.loading import load_model

    _, _, result = trained_multilabel
    predictor = load_model(result.model_dir, "cpu", "fp32", 8)
    frame = pd.DataFrame({"text": ["team goal match league " * 5 + "software internet chip " * 5, ""]})
    out = score_frame(predictor, frame)
    assert set(out.loc[0, "labels"].split("|")) == {"sport", "tech"} and out.loc[0, "label"] in {"sport", "tech"}
    assert out.loc[1, "labels"] is None and out.loc[1, "error"] == "empty text"
    assert "labels string" in output_schema(predictor.labels, multi_label=True)


def test_multilabel_baseline_is_one_vs_rest(home: Path, tiny_model_dir: Path) -> None:
    from pipeline.stages.baseline import run_baseline

    result = run_baseline(load_config(multilabel_config(home, tiny_model_dir)))
    assert result.test["multi_label"] and result.test["micro_f1"] > 0.7


def test_multilabel_config_refuses_single_label_settings(home: Path, tiny_model_dir: Path) -> None:
    from pipeline.core.errors import PipelineError

    path = multilabel_config(home, tiny_model_dir, train__class_bias=True)
    with pytest.raises(PipelineError, match="single-label tasks only"):
        load_config(path)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["label_separator"] = None
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PipelineError, match="label_separator"):
        load_config(path)


def test_a_multi_label_head_starts_at_the_label_priors(tiny_model_dir: Path) -> None:
    import torch

    from pipeline.models.torch_backend import build_classifier
    from pipeline.stages.optimise import set_prior_bias

    model = build_classifier(str(tiny_model_dir), LABELS, 0.0, "cls", multi_label=True)
    y = np.array([[1, 0, 0]] * 9 + [[1, 1, 0]], dtype=np.int8)
    set_prior_bias(model, y)
    np.testing.assert_allclose(torch.sigmoid(model.classifier.bias).detach().numpy(), [1 - 1e-4, 0.1, 1e-4], rtol=1e-4)
    assert model.config.problem_type == "multi_label_classification"


def test_batch_writes_a_multilabel_models_label_sets(trained_multilabel, tmp_path: Path) -> None:
    import pandas as pd

    from pipeline.stages.batch import Columns, Scorer, batch_local

    _, cfg, result = trained_multilabel
    frame = pd.DataFrame({"id": ["a", "b"], "text": ["shares bank market " * 6 + "team goal league " * 6, ""]})
    frame.to_csv(tmp_path / "in.csv", index=False)
    jobs = [Scorer("topic", str(result.model_dir), probabilities=True)]
    r = batch_local([str(tmp_path / "in.csv")], str(tmp_path / "out"), Columns(), jobs, cfg.runtime, 8, False)
    out = pd.read_parquet(tmp_path / "out").set_index("id")
    assert r.rows == 2 and r.errors == 1
    assert set(out.loc["a", "topic_labels"].split("|")) == {"business", "sport"}
    assert {f"topic_prob_{label}" for label in LABELS} <= set(out.columns)

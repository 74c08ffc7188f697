"""Train -> evaluate -> predict on a tiny random BERT: the MLflow run, the registry, the outputs."""

import json

import pytest
from conftest import make_config, run_cli, synthetic_rows, write_csv

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.core.labelled import load_eval_file, parse_label_map
from pipeline.stages.evaluate import evaluate, prepared_test_data
from pipeline.stages.predict import predict
from pipeline.stages.train import train
from pipeline.stages.train_data import drop_pairs, length_grouped_batches
from pipeline.text.articles import Article
from pipeline.tracking import registry, store


def test_length_grouped_batches_cover_every_example_once():
    import random

    lengths = [random.Random(i).randint(5, 500) for i in range(103)]
    batches = length_grouped_batches(lengths, 8, random.Random(0))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(103))
    assert all(len(b) <= 8 for b in batches)


def test_drop_pairs_blanks_a_seeded_share_and_nothing_else():
    pairs = [f"title {i}" for i in range(1000)]
    dropped = drop_pairs(pairs, 0.3, seed=7)
    assert dropped == drop_pairs(pairs, 0.3, seed=7)
    assert 250 < dropped.count("") < 350
    assert all(d in ("", p) for d, p in zip(dropped, pairs, strict=True))
    assert drop_pairs(pairs, 0.0, seed=7) == pairs


def test_training_learns_logs_and_registers(trained):
    _, result = trained
    import mlflow

    assert result.alias == "champion" and result.model_uri == "models:/topic/1"
    assert result.val_macro_f1 > 0.8, "a tiny BERT must learn keyword-separable classes"
    assert (result.model_dir / "pipeline.json").is_file() and (result.model_dir / "config.yaml").is_file()
    run = mlflow.get_run(result.run_id)
    metrics = run.data.metrics
    for key in ("train_loss", "val_macro_f1", "test_macro_f1", "test_accuracy", "val_macro_f1_mean_logits"):
        assert key in metrics
    assert run.data.params["train.epochs"] == "6"
    history = mlflow.tracking.MlflowClient().get_metric_history(result.run_id, "train_loss")
    assert len(history) >= 2 and history[-1].value < history[0].value
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(result.run_id, "test")}
    assert {"test/confusion_matrix.png", "test/metrics.json"} <= artifacts
    assert len(run.inputs.dataset_inputs) == 3


def test_local_store_answers_for_an_absent_alias_without_mlflow(trained):
    assert registry._local_alias("models:/topic@champion") is not None
    with pytest.raises(PipelineError, match="not found"):
        registry._local_alias("models:/target_stance@champion")


def test_evaluate_and_predict_use_the_champion(trained):
    cfg, result = trained
    out = evaluate(cfg, None, prepared_test_data(cfg)).metrics
    assert out["n"] == result.test_metrics["n"]
    # the registered champion, read back, scores what training scored: the same decision
    assert out["macro_f1"] == pytest.approx(result.test_metrics["macro_f1"], abs=1e-6)
    assert out["log_loss"] == pytest.approx(result.test_metrics["log_loss"], abs=1e-6)
    assert set(out["per_class"]) == {"business", "sport", "tech"}

    articles = [Article("a", "match goal team player coach season cup league win goal"), Article("b", "shares profit")]
    results = predict(articles, None, cfg.task, cfg.mlflow.registered_model, "cpu", "fp32")
    assert results[0]["topic"]["label"] == "sport"
    for r in results:
        assert set(r) == {"source", "metadata", "topic"}
        assert sum(r["topic"]["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert r["topic"]["score"] == max(r["topic"]["scores"].values())


def test_evaluate_on_a_file_with_a_label_map_and_unknown_labels(trained, tmp_path):
    cfg, _ = trained
    rows = [
        dict(r, label={"business": "biz", "sport": "sports", "tech": "tech"}[r["label"]]) for r in synthetic_rows(3)
    ]
    path = write_csv(tmp_path / "other.csv", rows)
    with pytest.raises(PipelineError, match="labels the model does not know: biz, sports"):
        evaluate(cfg, None, load_eval_file(path, ["title", "text"], "label", {}))
    data = load_eval_file(path, ["title", "text"], "label", parse_label_map("biz=business,sports=sport"))
    assert evaluate(cfg, None, data).metrics["n"] == 9


def test_alias_goes_to_the_better_model_on_validation(home):
    c = store.client()
    c.create_registered_model("m")
    versions = [c.create_model_version("m", source=str(home)).version for _ in range(3)]
    assert registry.assign_alias("m", versions[0], 0.80) == "champion"
    assert registry.assign_alias("m", versions[1], 0.75) == "challenger"
    assert registry.assign_alias("m", versions[2], 0.85) == "champion"
    assert c.get_model_version_by_alias("m", "champion").version == versions[2]
    assert c.get_model_version_by_alias("m", "challenger").version == versions[1]


def test_cli_json_outputs(trained, shared_home):
    home = shared_home
    config = str(home / "config.yaml")
    ev = run_cli(home, "evaluate", "-c", config, "--json")
    assert ev.returncode == 0, ev.stderr
    obj = json.loads(ev.stdout)
    assert set(obj) == {"n", "accuracy", "macro_f1", "per_class", "run_id"}
    assert set(obj["per_class"]["sport"]) == {"precision", "recall", "f1", "support"}

    pr = run_cli(home, "predict", "-c", config, "--json", "-", stdin="date 2021-05-05\nmatch goal team win")
    assert pr.returncode == 0, pr.stderr
    [line] = pr.stdout.strip().splitlines()
    obj = json.loads(line)
    assert obj["source"] == "<stdin>" and obj["metadata"] == {"date": "2021-05-05"}
    assert set(obj["topic"]) == {"label", "score", "scores"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "missing.txt"], "file not found"),
        (["train", "--set", "train.epoch=1"], "unknown config key: train.epoch"),
        (["evaluate", "--data", "missing.csv"], "file not found"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(home, args, message):
    res = run_cli(home, *args)
    assert res.returncode == 2
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_predict_without_a_model_says_to_train(home):
    article = home / "a.txt"
    article.write_text("Some news.")
    res = run_cli(home, "predict", str(article))
    assert res.returncode == 2
    assert "run `make train`" in res.stderr


def test_pair_column_reaches_every_stage(home, tiny_model_dir):
    """A pair task: the title is the first segment of every window, in train, evaluate and predict."""
    src = write_csv(home / "news.csv", synthetic_rows(20))
    cfg = load_config(
        make_config(
            home, tiny_model_dir, src, data__text_columns=["text"], data__pair_column="title", train__max_steps=2
        )
    )
    result = train(cfg, show_progress=False)
    card = json.loads((result.model_dir / "pipeline.json").read_text())
    assert card["pair_column"] == "title" and card["text_columns"] == ["text"]
    data = prepared_test_data(cfg)
    assert data.pairs is not None and all(p.endswith(tuple("0123456789")) for p in data.pairs)
    assert evaluate(cfg, None, data).metrics["n"] == len(data.texts)
    article = Article("a", "match goal team", {"title": "sport news 1"})
    [out] = predict([article], None, cfg.task, cfg.mlflow.registered_model, "cpu", "fp32")
    assert out["topic"]["label"] in {"business", "sport", "tech"}


def test_training_calibrates_and_logs_probability_metrics(trained):
    import json

    import mlflow

    _, result = trained
    run = mlflow.get_run(result.run_id)
    metrics = run.data.metrics
    for key in ("temperature", "test_ece", "test_ece_uncalibrated", "test_log_loss", "test_weighted_f1"):
        assert key in metrics
    assert metrics["test_macro_f1_ci_low"] <= metrics["test_macro_f1"] <= metrics["test_macro_f1_ci_high"]
    card = json.loads((result.model_dir / "pipeline.json").read_text())
    assert card["schema_version"] == 2 and card["decision"]["temperature"] == pytest.approx(metrics["temperature"])
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(result.run_id, "test")}
    for name in ("reliability_diagram.png", "confusion_matrix_normalized.png", "mistakes.json", "per_class.json"):
        assert f"test/{name}" in artifacts
    assert run.data.tags.get("git_commit")


def test_runs_lists_newest_first_with_alias(trained, shared_home):
    _, result = trained
    out = run_cli(shared_home, "runs", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    [row] = [r for r in rows if r["run_id"] == result.run_id]
    assert row["alias"] == "topic v1 @champion" and row["test_macro_f1"] == pytest.approx(
        result.test_metrics["macro_f1"]
    )
    assert rows == sorted(rows, key=lambda r: r["started"], reverse=True)


def test_promote_moves_champion_only_beyond_the_noise(trained_here, home):
    cfg, _ = trained_here
    weak = train(cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 1})}), show_progress=False)
    assert weak.alias == "challenger"
    config = str(home / "config.yaml")
    kept = run_cli(home, "promote", "topic", "-c", config, "--json")
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["promoted"] is False
    c = store.client()
    # the weak model as champion, the good one as challenger: now the challenger wins
    c.set_registered_model_alias("topic", "champion", "2")
    c.set_registered_model_alias("topic", "challenger", "1")
    moved = json.loads(run_cli(home, "promote", "topic", "-c", config, "--json").stdout)
    assert moved["promoted"] is True and moved["difference_ci95"][0] > 0
    assert str(c.get_model_version_by_alias("topic", "champion").version) == "1"


def evaluate_on_first(cfg, n: int) -> float:
    """Macro-F1 of the champion on the first n test articles, through evaluate's own path."""
    from pipeline.core.labelled import label_indices
    from pipeline.core.metrics import compute_metrics
    from pipeline.tracking.registry import load_registered

    data = prepared_test_data(cfg)
    model, _ = load_registered(None, "topic", "cpu", "fp32", 1)
    probs = model.predict_proba(data.texts[:n], data.pairs[:n] if data.pairs else None)
    return compute_metrics(label_indices(data.labels[:n], model.labels), probs, model.labels)["macro_f1"]


def test_bench_measures_both_paths_side_by_side(trained):
    from pipeline.stages.bench import bench_predict

    cfg, _ = trained
    r = bench_predict(cfg, None, limit=8)
    summary = r.summary()
    assert r.n == 8 and [m.name.split(",")[0] for m in r.runs[:2]] == ["transformers pipeline"] * 2
    assert summary["speedup_vs_bs1"] == pytest.approx(
        summary["articles_per_s"] / summary["baseline_bs1_articles_per_s"]
    )
    # each side is scored on the articles it read: ours reads every window, as training scored it
    assert summary["macro_f1"]["ours"] == pytest.approx(evaluate_on_first(cfg, 8))
    # batch size does not change what the plain pipeline answers
    assert summary["macro_f1"]["baseline_bs1"] == pytest.approx(summary["macro_f1"]["baseline_bs16"])
    assert r.label_agreement_with_torch == 1.0 and r.transformer_read_share == 1.0


def test_bench_train_compares_step_rates_on_the_same_windows(trained, capsys):
    from pipeline.stages.bench import bench_train

    cfg, _ = trained
    r = bench_train(cfg, steps=2)
    assert r.steps == 2 and r.windows > 0
    assert r.speedup == pytest.approx(r.ours_steps_per_s / r.trainer_steps_per_s)
    assert r.fast_paths is True and r.trainer_precision in {"fp32", "bf16"}
    assert capsys.readouterr().out == "", "stdout is --json's: the Trainer must not print its logs there"


def test_registered_pyfunc_returns_every_class_probability(trained):
    import mlflow
    import pandas as pd

    assert trained[1].alias == "champion"
    model = mlflow.pyfunc.load_model("models:/topic@champion")
    out = model.predict(pd.DataFrame({"text": ["match goal team win", "shares profit market"]}))
    assert list(out.columns) == ["label", "score", "prob_business", "prob_sport", "prob_tech", "error"]
    assert out[["prob_business", "prob_sport", "prob_tech"]].sum(axis=1).round(4).tolist() == [1.0, 1.0]
    assert out["error"].isna().all()
    with_titles = model.predict(pd.DataFrame({"title": ["Cup final", None], "text": ["match goal", "shares profit"]}))
    assert len(with_titles) == 2, "the title column is optional and may hold gaps"
    assert with_titles["label"].tolist() == ["sport", "business"]
    bad = model.predict(pd.DataFrame({"text": ["match goal", "  ", None]}))
    assert bad["label"].tolist()[1:] == [None, None] and bad["error"].tolist()[1:] == ["empty text", "no text"]
    info = mlflow.models.get_model_info("models:/topic@champion")
    assert info.signature is not None and info.saved_input_example_info is not None

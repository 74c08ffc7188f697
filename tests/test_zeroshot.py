"""Zero-shot: phrasings, prototypes, the NLI engine, save/load, CLI run and registry, self-training, unseen targets."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import LABELS, ROOT, WORDS, make_config, run_cli, synthetic_rows, write_csv, write_test_config

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.core.labelled import EvalData
from pipeline.models.loading import load_model, save_model
from pipeline.models.zeroshot import EmbeddingBackend, NliBackend, build_zeroshot, label_phrasings, pseudo_labels
from pipeline.stages.evaluate import split_by_seen_targets


def zeroshot_config(home: Path, model: str | Path, source: Path, **changes: object) -> Path:
    """configs/zeroshot_topic.yaml over a synthetic table, one phrasing per label (its words), tiny settings."""
    raw = yaml.safe_load((ROOT / "configs" / "zeroshot_topic.yaml").read_text())
    raw["data"].update(source=str(source), split_column=None, labels=None, prepared_dir=str(home / "prepared"))
    raw["data"].update(extra_train=[], extra_tests=[])
    raw["model"].update(name=str(model), max_length=64, stride=16, max_windows=4)
    raw["train"].update(epochs=1, batch_size=8, output_dir=str(home / "model"), max_steps=None)
    raw["zeroshot"].update(
        encoder=str(model),
        max_length=64,
        stride=16,
        labels={label: [WORDS[label]] for label in LABELS},
        output_dir=str(home / "zeroshot"),
    )
    raw["zeroshot"]["self_training"].update(output_dir=str(home / "selftrained"))
    return write_test_config(raw, changes, home / "zeroshot.yaml")


@pytest.fixture()
def zs_config(home, tiny_model_dir):
    return zeroshot_config(home, tiny_model_dir, write_csv(home / "news.csv", synthetic_rows(20)))


def test_zeroshot_config_reads_the_topic_data_and_labels():
    """Same data section: zero-shot and fine-tuned runs share one prepared split and one data digest."""
    topic = load_config(ROOT / "configs" / "topic.yaml")
    zs = load_config(ROOT / "configs" / "zeroshot_topic.yaml")
    assert zs.data == topic.data and zs.mlflow.experiment == topic.mlflow.experiment
    assert zs.zeroshot is not None and list(zs.zeroshot.labels) == topic.data.labels
    assert all(len(p) >= 3 for p in zs.zeroshot.labels.values())


def test_label_phrasings_keep_the_configs_and_fill_defaults():
    zcfg = load_config(ROOT / "configs" / "zeroshot_topic.yaml").zeroshot
    assert zcfg is not None
    phrasings = label_phrasings(zcfg, ["sport", " science ", "sport"])
    assert list(phrasings) == ["sport", "science"]
    assert phrasings["sport"] == zcfg.labels["sport"]
    assert phrasings["science"] == [p.replace("{}", "science") for p in zcfg.default_phrasings]
    with pytest.raises(PipelineError, match="two different labels"):
        label_phrasings(zcfg, ["sport", ""])


def test_nli_engine_needs_a_model(zs_config):
    with pytest.raises(PipelineError, match="nli_model is not set"):
        load_config(zs_config, ["zeroshot.engine=nli"])


def test_embedding_prototypes_are_unit_vectors_and_a_phrasing_finds_its_label(zs_config):
    clf = build_zeroshot(load_config(zs_config))
    assert isinstance(clf.backend, EmbeddingBackend)
    assert np.allclose(np.linalg.norm(clf.backend.prototypes, axis=1), 1.0, atol=1e-5)
    probs = clf.predict_proba([WORDS[label] for label in LABELS])
    assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1.0)
    # a text equal to a label's only phrasing is that label's prototype: cosine 1, the top score
    assert [clf.labels[i] for i in probs.argmax(axis=1)] == LABELS


def test_a_title_pair_leads_the_text(zs_config):
    clf = build_zeroshot(load_config(zs_config))
    assert np.allclose(clf.predict_proba(["body"], ["title"]), clf.predict_proba(["title\n\nbody"]))


def test_embedding_zeroshot_save_load_round_trip(zs_config, tmp_path):
    clf = build_zeroshot(load_config(zs_config))
    folder = tmp_path / "saved"
    folder.mkdir()
    save_model(clf, folder)
    loaded = load_model(folder, "cpu", "fp32")
    texts = [" ".join(synthetic_rows(1, seed=s)[0]["text"] for s in range(3))]  # several windows
    assert isinstance(loaded.backend, EmbeddingBackend) and loaded.labels == clf.labels
    assert np.allclose(loaded.predict_proba(texts), clf.predict_proba(texts), atol=1e-5)
    assert loaded.card.text_columns == ["title", "text"] and loaded.card.kind == "zeroshot-embedding"


@pytest.fixture(scope="session")
def tiny_nli_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A tiny random BERT shaped like an NLI classifier (entailment / neutral / contradiction)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    labels = ["entailment", "neutral", "contradiction"]
    config = BertConfig.from_pretrained(tiny_model_dir)
    config.update(
        {"num_labels": 3, "id2label": dict(enumerate(labels)), "label2id": {x: i for i, x in enumerate(labels)}}
    )
    folder = tmp_path_factory.mktemp("tiny-nli")
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def test_nli_engine_scores_every_window_and_round_trips(zs_config, tiny_nli_dir, tmp_path):
    cfg = load_config(zs_config, ["zeroshot.engine=nli", f"zeroshot.nli_model={tiny_nli_dir}"])
    clf = build_zeroshot(cfg, ["business", "sport", "tech", "science"])
    assert isinstance(clf.backend, NliBackend)
    long_text = " ".join(["shares profit market company"] * 60)  # several 64-token windows
    probs = clf.predict_proba([long_text, "a goal in the cup final"])
    assert probs.shape == (2, 4) and np.allclose(probs.sum(axis=1), 1.0)
    folder = tmp_path / "nli"
    folder.mkdir()
    save_model(clf, folder)
    loaded = load_model(folder, "cpu", "fp32")
    assert isinstance(loaded.backend, NliBackend)
    assert np.allclose(loaded.predict_proba([long_text, "a goal in the cup final"]), probs, atol=1e-5)


class FixedScores:
    """A stand-in classifier with given probabilities: pseudo-label selection is tested on its own."""

    def __init__(self, labels: list[str], probs: np.ndarray) -> None:
        self.labels, self.probs = labels, probs

    def predict_proba(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        return self.probs[: len(texts)]


def test_pseudo_labels_keep_the_most_confident_share_of_each_label():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=200)
    clf = FixedScores(["tech", "business", "sport"], probs)
    kept, y = pseudo_labels(clf, 0.3, LABELS, ["x"] * 200, None)
    predicted = np.asarray([LABELS.index(clf.labels[i]) for i in probs.argmax(axis=1)])
    assert np.array_equal(y, predicted[kept]), "labels are named, not positions: they follow the task's order"
    confidence = probs.max(axis=1)
    for label in range(3):
        rows = np.flatnonzero(predicted == label)
        mine = kept[y == label]
        assert len(mine) == int(np.ceil(0.3 * len(rows)))
        dropped = np.setdiff1d(rows, mine)
        assert confidence[mine].min() >= confidence[dropped].max()
    with pytest.raises(PipelineError, match="must be the task's labels"):
        pseudo_labels(FixedScores(["a", "b", "c"], probs), 0.3, LABELS, ["x"], None)


def test_zeroshot_cli_logs_beside_finetuned_runs_registers_and_predicts(zs_config, home):
    import mlflow

    c = ["-c", str(zs_config)]
    zs = run_cli(home, "zeroshot", *c, "--register", "--json")
    assert zs.returncode == 0, zs.stderr
    obj = json.loads(zs.stdout)
    assert set(obj) == {"n", "accuracy", "macro_f1", "per_class", "run_id"} and set(obj["per_class"]) == set(LABELS)
    run = mlflow.get_run(obj["run_id"])
    assert run.data.tags["stage"] == "zeroshot" and "val_macro_f1" in run.data.metrics
    assert mlflow.get_experiment(run.info.experiment_id).name == "topic"
    assert "zeroshot/label_phrasings.json" in [
        a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "zeroshot")
    ]

    article = home / "a.txt"
    article.write_text("title Cup final\n\nThe team won the match and the coach praised every player.\n")
    # registered as the task's model, it answers predict before any training
    by_registry = run_cli(home, "predict", *c, "--no-stance", "--json", str(article))
    built = run_cli(home, "predict", *c, "--zero-shot", "--no-stance", "--json", str(article))
    assert by_registry.returncode == 0 and built.returncode == 0, by_registry.stderr + built.stderr
    # registered with its ONNX export (int8 where it keeps the labels): the torch-built label, near its scores
    onnx, torch = json.loads(by_registry.stdout)["topic"], json.loads(built.stdout)["topic"]
    assert onnx["label"] == torch["label"]
    assert all(abs(onnx["scores"][k] - torch["scores"][k]) < 0.01 for k in LABELS)
    assert run.data.tags["onnx"] in ("model.int8.onnx", "model.onnx")

    custom = run_cli(home, "zeroshot", *c, "--labels", "sport,tech", "--json")
    assert custom.returncode == 2 and "labels the model does not know: business" in custom.stderr


def test_self_training_learns_zero_shot_labels_and_registers_apart(zs_config, home):
    import mlflow

    from pipeline.stages.train import train

    result = train(load_config(zs_config, ["train.max_steps=2"]), show_progress=False, pseudo_labels=True)
    assert result.model_uri == "models:/topic_selftrained/1" and result.model_dir == home / "selftrained"
    run = mlflow.search_runs(experiment_names=["topic"], filter_string="tags.pseudo_labels = 'true'").iloc[0]
    assert run["metrics.pseudo_train_kept"] > 0 and run["metrics.pseudo_validation_kept"] > 0
    # the kept labels are the zero-shot model's, scored against gold: synthetic news is easy for it
    assert run["metrics.pseudo_train_gold_agreement"] > 0.5
    names = {m.name for m in mlflow.MlflowClient().search_registered_models()}
    assert names == {"topic_selftrained"}, "self-training must not compete with the gold-label champion"


def test_self_training_labels_only_the_tasks_own_articles(home, tiny_model_dir):
    import mlflow
    from datasets import load_from_disk

    extra = write_csv(home / "extra.csv", synthetic_rows(15, seed=4))
    extra_set = {
        "name": "extra",
        "source": str(extra),
        "where": None,
        "text_columns": ["text"],
        "pair_column": "title",
        "label_column": "label",
        "label_map": None,
    }
    config = zeroshot_config(
        home, tiny_model_dir, write_csv(home / "news.csv", synthetic_rows(20)), data__extra_train=[extra_set]
    )
    from pipeline.stages.train import train

    train(load_config(config, ["train.max_steps=2"]), show_progress=False, pseudo_labels=True)
    train_ids = load_from_disk(str(home / "prepared"))["train"]["id"]
    own = sum(not str(i).startswith("extra:") for i in train_ids)
    assert own < len(train_ids)
    run = mlflow.search_runs(experiment_names=["topic"], filter_string="tags.pseudo_labels = 'true'").iloc[0]
    # keep_fraction 0.5 of each predicted label, rounded up: at most half the own rows plus one per label
    assert 0 < run["metrics.pseudo_train_kept"] <= own * 0.5 + len(LABELS)


def test_unseen_targets_are_those_the_training_data_never_mentions(home, tiny_model_dir):
    rows = [
        {"id": str(i), "text": f"{w} praised plan {i}", "target": w, "label": ("business", "sport")[i % 2]}
        for i, w in enumerate(["Alice", "Carol", "Dan"] * 10)
    ]
    cfg = load_config(make_config(home, tiny_model_dir, write_csv(home / "t.csv", rows), data__pair_column="target"))
    from pipeline.stages.prepare import prepare

    prepare(cfg)
    data = EvalData(["x", "y", "z"], ["business"] * 3, "file", "set", ["alice", "Bob", "Carol "])
    parts = split_by_seen_targets(cfg, data)
    assert parts["seen"].pairs == ["alice", "Carol "] and parts["unseen"].pairs == ["Bob"]
    assert parts["unseen"].name == "set-unseen-targets"
    with pytest.raises(PipelineError, match="no target column"):
        split_by_seen_targets(cfg, EvalData(["x"], ["business"], "file", "set"))


def test_an_exported_embedding_model_runs_on_onnx_with_the_torch_labels(zs_config, tmp_path):
    from pipeline.models.onnx_backend import OnnxEmbeddingBackend
    from pipeline.stages.export import export_onnx

    folder = tmp_path / "zs"
    folder.mkdir()
    save_model(build_zeroshot(load_config(zs_config)), folder)
    texts = [" ".join(WORDS[label].split()[i : i + 4]) for label in LABELS for i in range(4)]
    report = export_onnx(folder, False, texts, None)
    assert report.agreement == 1.0 and report.max_prob_diff < 1e-4
    onnx = load_model(folder, "cpu")
    assert isinstance(onnx.backend, OnnxEmbeddingBackend)
    from pipeline.models.loading import load_torch

    torch_probs = load_torch(folder, "cpu", "fp32").predict_proba(texts)
    np.testing.assert_allclose(onnx.predict_proba(texts), torch_probs, atol=1e-4)

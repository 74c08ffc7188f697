"""Target stance: main-target detection, extra test sets, stance toward targets at predict."""

import json
import random

import numpy as np
import pytest
import yaml
from conftest import ROOT, make_config, run_cli, synthetic_rows, write_csv, write_test_config

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.stages.predict import predict
from pipeline.stages.prepare import load_prepared
from pipeline.stages.train import train
from pipeline.text.articles import Article
from pipeline.text.targets import main_targets

SAMPLE = ROOT / "seeds" / "000_6abd9dfd733c7055.txt"
POLARITY = {
    "positive": "praised hailed welcomed",
    "negative": "attacked blamed condemned",
    "neutral": "met said visited",
}


def test_main_targets_of_the_sample_article():
    from pipeline.text.articles import read_inputs

    [article] = read_inputs([str(SAMPLE)])
    found = main_targets(article.text)
    assert len(found) == 5
    assert {"Russia", "Turkey", "Ukraine"} <= set(found)


def test_main_targets_merges_full_and_short_names_and_drops_titles():
    text = (
        "Russian President Vladimir Putin met the press. Putin said little. Later Putin left. "
        "The BBC's reporter asked. The BBC said. Moscow-based analysts agree."
    )
    found = main_targets(text, limit=3)
    assert found[0] == "Vladimir Putin"
    assert "BBC" in found and "Russian" not in " ".join(found)
    assert main_targets("", limit=3) == []


def synthetic_target_rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        polarity = ("positive", "negative", "neutral")[i % 3]
        target = rng.choice(["Alice Smith", "Acme Corp", "Bob Jones"])
        words = " ".join(rng.choice(POLARITY[polarity].split()) for _ in range(4))
        split = "devtest_rw" if i % 5 == 0 else "devtest_mt" if i % 7 == 0 else "train"
        rows.append(
            {
                "split": split,
                "primary_gid": f"g{i}",
                "sentence": f"{target} {words} today {i}",
                "target": target,
                "polarity": polarity,
            }
        )
    return rows


def make_target_config(home, model, dev_fits_article_bias=False, distill=None):
    src = write_csv(home / "mtsc.csv", synthetic_target_rows(150, seed=3))
    docs = [
        {
            "split": s,
            "DOCUMENT": f"{r['sentence']}. Other news. {r['sentence']}" * (3 if dev_fits_article_bias else 1),
            "TARGET_ENTITY": r["target"],
            "TRUE_SENTIMENT": r["polarity"].title(),
        }
        for s, r in zip(["dev", "random_test"] * 20, synthetic_target_rows(40, seed=4), strict=True)
    ]
    persent = write_csv(home / "persent.csv", docs)
    raw = yaml.safe_load((ROOT / "configs" / "target_stance.yaml").read_text())
    raw["data"].update(source=str(src), prepared_dir=str(home / "prepared-target"))
    for extra in raw["data"]["extra_tests"]:
        extra["source"] = str(src if extra["name"].startswith("newsmtsc") else persent)
    if not dev_fits_article_bias:  # PerSenT dev as training data instead of a test set: the extra_train path
        dev = next(e for e in raw["data"]["extra_tests"] if e["name"] == "persent_dev")
        raw["data"]["extra_tests"].remove(dev)
        raw["data"]["extra_train"] = [dev]
        raw["train"]["article_bias_set"] = None
    raw["model"].update(name=str(model), max_length=32, stride=8, max_windows=4)
    raw["train"].update(epochs=1, batch_size=8, output_dir=str(home / "model-target"))
    raw["distill"] = distill  # the shipped config learns from the mpnet teacher: tests that distil give their own
    return write_test_config(raw, {}, home / "target_stance.yaml")


def test_target_stance_trains_scores_extra_sets_and_predicts(home, tiny_model_dir):
    cfg = load_config(make_target_config(home, tiny_model_dir))
    result = train(cfg, show_progress=False)
    assert set(result.extra_test_metrics) == {"newsmtsc_devtest_mt", "persent_random_test"}
    assert result.extra_test_metrics["persent_random_test"]["n"] == 20
    dataset, _ = load_prepared(cfg)
    from_dev = [i for i in dataset["train"]["id"] if i.startswith("persent_dev:")]
    assert len(from_dev) == 20  # every dev article is training data; validation is NewsMTSC's alone
    assert not any(i.startswith("persent_dev:") for s in ("validation", "test") for i in dataset[s]["id"])
    topic_cfg = make_config(home, tiny_model_dir, write_csv(home / "news.csv", synthetic_rows(8)))
    topic = load_config(topic_cfg)
    train(topic, show_progress=False)

    article = Article("a.txt", "Alice Smith praised Acme Corp. Alice Smith met Bob Jones. Acme Corp said no.")
    [auto] = predict([article], None, "topic", "topic", "cpu", "fp32")
    assert [s["target"] for s in auto["stance"]] == ["Acme Corp", "Alice Smith"]  # Bob Jones: one mention
    for s in auto["stance"]:
        assert s["label"] in {"favor", "against", "neutral"} and abs(sum(s["scores"].values()) - 1) < 1e-4
    [given] = predict([article], None, "topic", "topic", "cpu", "fp32", targets=["Bob Jones"])
    assert [s["target"] for s in given["stance"]] == ["Bob Jones"]
    [none] = predict([article], None, "topic", "topic", "cpu", "fp32", targets=[])
    assert "stance" not in none

    pr = run_cli(home, "predict", "-c", str(topic_cfg), "--json", "--target", "Acme Corp", "-", stdin=article.text)
    assert pr.returncode == 0, pr.stderr
    assert [s["target"] for s in json.loads(pr.stdout)["stance"]] == ["Acme Corp"]
    ev = run_cli(home, "evaluate", "-c", str(home / "target_stance.yaml"), "--on", "persent_random_test", "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["n"] == 20
    bad = run_cli(home, "evaluate", "-c", str(home / "target_stance.yaml"), "--on", "nope")
    assert bad.returncode == 2 and "no extra test set 'nope'" in bad.stderr


def test_article_offsets_are_fitted_on_the_article_set_and_kept_with_the_model(home, tiny_model_dir):
    from pipeline.core.labelled import extra_test_data, label_indices
    from pipeline.core.metrics import compute_metrics
    from pipeline.models.loading import load_torch

    cfg = load_config(make_target_config(home, tiny_model_dir, dev_fits_article_bias=True))
    result = train(cfg, show_progress=False)
    saved = load_torch(result.model_dir, "cpu", "fp32")
    assert saved.decision.article_bias is not None and len(saved.decision.article_bias) == 3
    assert saved.decision.article_reading == "mention_sentences"  # the shipped reading, kept in the card
    [dev] = extra_test_data(cfg, "persent_dev")
    assert (saved.windows_per_text(dev.texts, dev.pairs) > 1).all()  # every dev document is an article here
    y = label_indices(dev.labels, saved.labels)
    with_offsets = compute_metrics(y, saved.predict_proba(dev.texts, dev.pairs), saved.labels)["macro_f1"]
    assert (
        abs(result.extra_test_metrics["persent_dev"]["macro_f1"] - with_offsets) < 1e-9
    )  # train scored the saved rule
    saved.decision.article_bias = None
    without = compute_metrics(y, saved.predict_proba(dev.texts, dev.pairs), saved.labels)["macro_f1"]
    assert with_offsets >= without  # fitted there: the offsets never lower the fitting set's macro-F1
    # sentences are left as they were: NewsMTSC test scores the same with or without them
    sentences = ["Alice Smith praised hailed today", "Acme Corp attacked blamed today"]
    pairs = ["Alice Smith", "Acme Corp"]
    np.testing.assert_allclose(
        saved.predict_proba(sentences, pairs),
        load_torch(result.model_dir, "cpu", "fp32").predict_proba(sentences, pairs),
    )


def test_article_bias_set_must_be_an_extra_test_set(home, tiny_model_dir):
    path = make_target_config(home, tiny_model_dir, dev_fits_article_bias=True)
    with pytest.raises(PipelineError, match=r"article_bias_set 'nope' is not a data\.extra_tests set"):
        load_config(path, ["train.article_bias_set=nope"])


def test_mention_sentences_finds_full_and_last_name_forms():
    from pipeline.text.targets import mention_sentences

    text = "Vladimir Putin met reporters. The weather was cold. Mr. Putin declined. Putinism is a word."
    assert mention_sentences(text, "Vladimir Putin") == [
        ("Vladimir Putin met reporters.", "Vladimir Putin"),
        ("Mr. Putin declined.", "Putin"),
    ]
    assert mention_sentences(text, "Angela Merkel") == []
    assert mention_sentences(text, "") == []


def test_mean_log_probs_is_the_softmax_of_the_mean_log_probability():
    from pipeline.models.decision import mean_log_probs

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    out = mean_log_probs(probs, np.array([0, 0, 1]), 2)
    by_hand = np.sqrt(probs[0] * probs[1])  # geometric mean, renormalised
    np.testing.assert_allclose(out[0], by_hand / by_hand.sum())
    np.testing.assert_allclose(out[1], probs[2])


def test_an_article_is_read_by_its_mention_sentences_and_a_sentence_as_itself():
    from typing import ClassVar

    from pipeline.models.decision import Decision
    from pipeline.models.predictor import Predictor
    from pipeline.text.windows import Windows

    class Backend:  # two windows for any text over 40 characters; "praised" reads favor, "attacked" against
        seen: ClassVar[list[tuple[str, str]]] = []

        def windows(self, texts, pairs):
            owner = [i for i, t in enumerate(texts) for _ in range(2 if len(t) > 40 else 1)]
            return Windows([[1]] * len(owner), [[0]] * len(owner), owner)

        def window_logits(self, texts, pairs):
            self.seen.extend(zip(texts, pairs, strict=True))
            windows = self.windows(texts, pairs)
            rows = [[2.0 * ("attacked" in texts[i]), 2.0 * ("praised" in texts[i]), 0.0] for i in windows.owner]
            return np.asarray(rows), windows

    class Card:
        labels: ClassVar[list[str]] = ["against", "favor", "neutral"]

    texts = [
        "Alice Smith praised the plan. Bob Jones attacked it. Smith met him.",  # an article: two mentions
        "Bob Jones attacked it.",  # a sentence
        "Nobody here is named at all, and this runs long.",  # an article with no mention
    ]
    pairs = ["Alice Smith", "Bob Jones", "Carol King"]
    bias = [0.0, 0.0, 1.0]
    reading = Decision(Card.labels, article_reading="mention_sentences", article_bias=bias)
    model = Predictor(Card(), Backend(), reading)  # type: ignore[arg-type]
    out = model.predict_proba(texts, pairs)
    assert Backend.seen == [
        ("Alice Smith praised the plan.", "Alice Smith"),
        ("Smith met him.", "Smith"),
        ("Bob Jones attacked it.", "Bob Jones"),
        (texts[2], "Carol King"),
    ]
    favor, neutral = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0, 0.0]).sum()
    sentence_mean = np.exp([np.log(neutral), (np.log(favor) + np.log(neutral)) / 2, np.log(neutral)])
    article = sentence_mean / sentence_mean.sum() * np.exp(bias)
    np.testing.assert_allclose(out[0], article / article.sum())
    np.testing.assert_allclose(out[1], np.exp([2.0, 0.0, 0.0]) / np.exp([2.0, 0.0, 0.0]).sum())  # no offsets
    Backend.seen.clear()
    windows = Predictor(Card(), Backend(), reading.but(article_reading="windows"))  # type: ignore[arg-type]
    windows.predict_proba(texts, pairs)
    assert [t for t, _ in Backend.seen] == texts


def test_mention_reading_needs_a_pair_column(home, tiny_model_dir):
    path = make_config(home, tiny_model_dir, write_csv(home / "news.csv", synthetic_rows(8)))
    with pytest.raises(PipelineError, match=r"mention_sentences reads the sentences mentioning the pair"):
        load_config(path, ["data.pair_column=null", "model.article_reading=mention_sentences"])

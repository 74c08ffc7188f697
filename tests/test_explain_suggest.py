"""Explanations (sentence occlusion, TF-IDF terms, faithfulness), suggestions and the active-learning simulation."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from conftest import LABELS, WORDS, torch_predictor
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bad_inputs import assert_one_line_error, invoke, snapshot

from pipeline.core.errors import PipelineError
from pipeline.core.io import read_table
from pipeline.models.explain import explain, explain_many, faithfulness
from pipeline.models.selection import k_centre, pick, uncertainty
from pipeline.models.tfidf import TfidfModel
from pipeline.text.sentences import only, sentence_spans, without

ARTICLE = (
    "Mr. Smith said the market rose. Shares and profit grew, the bank said. "
    '"The economy is strong." The team lost the match on Sunday! Why? Investors cheered.'
)


def test_sentences_keep_abbreviations_quotes_and_offsets():
    spans = sentence_spans(ARTICLE)
    got = [ARTICLE[a:b] for a, b in spans]
    assert got == [
        "Mr. Smith said the market rose.",
        "Shares and profit grew, the bank said.",
        '"The economy is strong."',
        "The team lost the match on Sunday!",
        "Why?",
        "Investors cheered.",
    ]
    assert without(ARTICLE, spans, {0, 2}).startswith("Shares and profit")
    assert only(ARTICLE, spans, {3}) == "The team lost the match on Sunday!"
    assert sentence_spans('He said "yes." , adding more.') == [(0, 29)]  # a comma after the quote: one sentence


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab .!?\n\"'),")), max_size=80))
def test_sentence_spans_are_ordered_trimmed_and_cover_every_word(text):
    spans = sentence_spans(text)
    for (_, b), (c, _) in itertools.pairwise(spans):
        assert b <= c
    for a, b in spans:
        assert 0 <= a < b <= len(text) and text[a:b] == text[a:b].strip()
    assert without(text, spans, set()).split() == text.split()


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return torch_predictor(tiny_model_dir, LABELS)


def test_a_sentence_weight_is_the_log_probability_drop_without_it(tiny):
    e = explain(tiny, ARTICLE)
    spans = sentence_spans(ARTICLE)
    probs = tiny.predict_proba([ARTICLE, *(without(ARTICLE, spans, {i}) for i in range(len(spans)))])
    k = int(probs[0].argmax())
    assert e.label == LABELS[k] and e.score == pytest.approx(probs[0, k], abs=1e-6)
    expected = np.log(probs[0, k]) - np.log(probs[1:, k])
    assert [s.weight for s in e.sentences] == pytest.approx(expected, abs=1e-5)
    assert [(s.start, s.end) for s in e.sentences] == spans
    other = explain(tiny, ARTICLE, label="tech")
    assert other.label == "tech"
    with pytest.raises(PipelineError, match="unknown label"):
        explain(tiny, ARTICLE, label="weather")
    assert explain_many(tiny, [ARTICLE, "One sentence only."])[1].sentences[0].text == "One sentence only."


def test_tfidf_terms_are_the_centred_weight_times_the_value():
    model = TfidfModel(
        terms=["goal", "shares"],
        idf=np.ones(2),
        coef=np.asarray([[0.0, 2.0], [3.0, 0.0], [0.0, 0.0]]),
        intercept=np.zeros(3),
        ngram_max=1,
    )
    terms = dict(model.term_weights("goal shares", 1, 5))
    value = 1 / np.sqrt(2)  # two terms once each, L2-normalised
    assert terms["goal"] == pytest.approx((3.0 - 1.0) * value)
    assert terms["shares"] == pytest.approx((0.0 - 2.0 / 3) * value)
    assert model.term_weights("nothing known", 0, 5) == []


def test_faithfulness_has_every_key_and_skips_short_texts(tiny):
    texts = [ARTICLE, "Too short. Two.", ARTICLE.replace("Sunday", "Monday")]
    f = faithfulness(tiny, texts)
    assert f.n == 2
    assert set(f.comprehensiveness) == set(f.sufficiency) == {"top1", "top3", "random1", "random3"}
    # removing the sentences that raised the label most lowers it at least as much as removing one at random
    assert f.comprehensiveness["top1"] >= f.comprehensiveness["random1"] - 1e-9
    with pytest.raises(PipelineError, match="more than 3 sentences"):
        faithfulness(tiny, ["Short. Text."])


def test_uncertainty_and_k_centre():
    probs = np.asarray([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.34, 0.33, 0.33]])
    assert list(np.argsort(-uncertainty(probs, "margin"))) == [2, 1, 0]
    assert list(np.argsort(-uncertainty(probs, "entropy"))) == [2, 1, 0]
    clusters = np.asarray([[0, 0], [0, 0.01], [5, 5], [5, 5.01], [-5, 5], [-5, 5.01]], dtype=float)
    assert sorted(np.asarray(k_centre(clusters, 3)) // 2) == [0, 1, 2]  # one story from each cluster
    # with the first cluster labelled already, the two others come first
    assert sorted(np.asarray(k_centre(clusters, 2, clusters[:1])) // 2) == [1, 2]
    rng = np.random.default_rng(0)
    diverse = pick(np.tile(probs[2], (6, 1)), "diverse", 3, rng, lambda rows: clusters[rows])
    assert sorted(diverse // 2) == [0, 1, 2]
    with pytest.raises(PipelineError, match="unknown strategy"):
        pick(probs, "smart", 1, rng)


def test_a_label_studio_export_is_read_as_labelled_rows(tmp_path):
    export = [
        {
            "id": 1,
            "data": {"text": "a b"},
            "annotations": [{"result": [{"type": "choices", "value": {"choices": ["sport"]}}]}],
        },
        {"id": 2, "data": {"text": "c"}, "annotations": [{"was_cancelled": True, "result": []}]},
        {"id": 3, "data": {"text": "d"}, "annotations": []},
        {
            "id": 4,
            "data": {"text": "e"},
            "annotations": [{"result": [{"type": "choices", "value": {"choices": ["x", "y"]}}]}],
        },
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    df = read_table(path, ["text", "label"])
    assert df.to_dict("records") == [{"text": "a b", "label": "sport"}, {"text": "e", "label": "x y"}]
    path.write_text(json.dumps(export[1:3]))
    with pytest.raises(PipelineError, match="no labelled task"):
        read_table(path, ["text", "label"])


MULTI_SENTENCE = "title Markets\n\n" + " ".join(
    f"{' '.join(WORDS[label].split()[:5]).capitalize()} {i}."
    for i, label in enumerate(["business", "sport", "tech", "business"])
)


def test_explain_command_json_html_and_bad_input(trained, shared_home, tmp_path, capsys, monkeypatch):
    article = tmp_path / "a.txt"
    article.write_text(MULTI_SENTENCE)
    code, out, _ = invoke(capsys, monkeypatch, "explain", str(article), "--json", "--html", str(tmp_path / "a.html"))
    assert code == 0
    e = json.loads(out)
    assert set(e) == {"label", "score", "sentences", "terms"} and e["label"] in LABELS
    assert len(e["sentences"]) == 4 and set(e["sentences"][0]) == {"text", "start", "end", "weight"}
    page = (tmp_path / "a.html").read_text()
    assert page.startswith("<!doctype html>") and "<span style" in page
    before = snapshot(shared_home, tmp_path)
    for args, message in [
        (["explain", str(tmp_path / "missing.txt")], "file not found"),
        (["explain", str(article), "--label", "weather"], "unknown label 'weather'"),
        (["explain"], "give an ARTICLE"),
        (["explain", str(article), "--evaluate"], "give no ARTICLE"),
        (["explain", str(article), "--target", "X", "--claim", "Y"], "not both"),
        (["explain", str(article), "--html", str(tmp_path)], "is a folder"),
    ]:
        code, out, err = invoke(capsys, monkeypatch, *args)
        assert_one_line_error(code, err, message)
    assert snapshot(shared_home, tmp_path) == before


def test_suggest_writes_csv_and_label_studio_tasks(trained, shared_home, tmp_path, capsys, monkeypatch):
    from conftest import synthetic_rows, write_csv

    data = write_csv(tmp_path / "pool.csv", synthetic_rows(5, seed=7))
    out = tmp_path / "next.csv"
    code, _, err = invoke(capsys, monkeypatch, "suggest", str(data), "--n", "4", "-o", str(out))
    assert code == 0, err
    rows = read_table(out, ["rank", "row", "predicted", "score", "uncertainty", "text"])
    assert list(rows["rank"].astype(int)) == [1, 2, 3, 4]
    u = rows["uncertainty"].astype(float).to_numpy()
    assert (np.diff(u) <= 1e-9).all()  # most uncertain first
    ls = tmp_path / "tasks.json"
    code, _, err = invoke(
        capsys, monkeypatch, "suggest", str(data), "--n", "3", "--format", "label-studio", "-o", str(ls)
    )
    assert code == 0, err
    tasks = json.loads(ls.read_text())
    assert len(tasks) == 3 and tasks[0]["data"]["text"]
    [prediction] = tasks[0]["predictions"]
    assert prediction["result"][0]["value"]["choices"][0] in LABELS
    assert '<Choices name="label" toName="text"' in (tmp_path / "tasks.label_config.xml").read_text()
    before = snapshot(shared_home, tmp_path)
    for args, message in [
        (["suggest", str(data), "-o", str(tmp_path / "x.csv"), "--strategy", "smart"], "--strategy 'smart'"),
        (["suggest", str(data), "-o", str(tmp_path / "x.csv"), "--format", "xml"], "--format 'xml'"),
        (["suggest", str(data)], "--output FILE"),
        (["suggest", str(tmp_path / "none.csv"), "-o", str(tmp_path / "x.csv")], "file not found"),
        (["suggest", str(data), "--simulate"], "give no DATA"),
    ]:
        code, out, err = invoke(capsys, monkeypatch, *args)
        assert_one_line_error(code, err, message)
    assert snapshot(shared_home, tmp_path) == before


def test_simulation_logs_learning_curves(home, trained_here, capsys, monkeypatch):
    config = str(home / "config.yaml")
    args = ["--start", "6", "--step", "6", "--rounds", "2", "--seeds", "2", "--json"]
    code, out, err = invoke(capsys, monkeypatch, "suggest", "--simulate", "-c", config, *args)
    assert code == 0, err
    s = json.loads(out)
    assert s["labelled"] == [6, 12, 18] and s["seeds"] == [0, 1]
    for name in ("margin", "random"):
        assert len(s[name]["test_mean"]) == 3 and all(0 <= f <= 1 for f in s[name]["test_mean"])
    import mlflow

    run = mlflow.get_run(s["run_id"])
    assert run.data.tags["stage"] == "suggest-simulate"
    history = mlflow.MlflowClient().get_metric_history(s["run_id"], "test_macro_f1_random")
    assert [m.step for m in history] == [6, 12, 18]
    code, _, err = invoke(capsys, monkeypatch, "suggest", "--simulate", "-c", config, "--start", "100000")
    assert_one_line_error(code, err, "train articles")


def test_each_logged_mistake_says_why(tiny):
    from pipeline.tracking.log import mistakes_table, why_column

    texts = [ARTICLE, "Goal for the team. The match was won.", ARTICLE.replace("market", "league")]
    y = np.asarray([1, 0, 2])
    probs = np.asarray([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    table = mistakes_table(texts, None, y, probs, LABELS)
    assert list(table["row"]) == [0, 1]
    why = why_column(tiny, texts, None, table)
    assert len(why) == 2 and why[0].startswith("(") and " | " in why[0]
    assert why[1].count("(") == 2 and "Goal for the team." in why[1]


def test_a_stance_explanation_reads_the_pair_with_every_copy(tiny_model_dir):
    pair_model = torch_predictor(tiny_model_dir, ["against", "favor", "neutral"])
    e = explain(pair_model, ARTICLE, pair="Smith")
    spans = sentence_spans(ARTICLE)
    variants = [ARTICLE, *(without(ARTICLE, spans, {i}) for i in range(len(spans)))]
    probs = pair_model.predict_proba(variants, ["Smith"] * len(variants))
    k = int(probs[0].argmax())
    assert [s.weight for s in e.sentences] == pytest.approx(np.log(probs[0, k]) - np.log(probs[1:, k]), abs=1e-5)
    alone = pair_model.predict_proba(variants[:1], ["someone else"])
    assert not np.array_equal(alone[0], probs[0])  # the pair is read: another target, another answer


def test_explain_with_a_target_needs_a_stance_model(trained, shared_home, tmp_path, capsys, monkeypatch):
    article = tmp_path / "a.txt"
    article.write_text(MULTI_SENTENCE)
    code, _, err = invoke(capsys, monkeypatch, "explain", str(article), "--model", "models:/topic/1", "--target", "X")
    assert_one_line_error(code, err, "is not a stance model")
    code, _, err = invoke(capsys, monkeypatch, "explain", str(article), "--target", "X")
    assert_one_line_error(code, err, "target_stance")  # the topic config looks for the target-stance champion


def test_faithfulness_of_one_sentence_texts_is_one_line_and_no_run(trained, shared_home, capsys, monkeypatch):
    import mlflow

    before = len(mlflow.search_runs(search_all_experiments=True))
    config = str(shared_home / "config.yaml")
    code, _, err = invoke(capsys, monkeypatch, "explain", "--evaluate", "-c", config, "--n", "5", "--json")
    assert_one_line_error(code, err, "more than 3 sentences")
    assert len(mlflow.search_runs(search_all_experiments=True)) == before
    code, _, err = invoke(capsys, monkeypatch, "explain", "--evaluate", "-c", config, "--n", "0")
    assert_one_line_error(code, err, "--n must be at least 1")

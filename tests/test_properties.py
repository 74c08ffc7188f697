"""Properties, checked by hypothesis on generated inputs: the article parser, the window builder, label maps."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.errors import PipelineError
from pipeline.core.io import decode_text, normalise_text
from pipeline.core.labelled import parse_label_map
from pipeline.text.articles import LINE_KEYS, json_article, parse_article
from pipeline.text.windows import WindowSettings, encode_windows

EXAMPLES = 300
LABEL = (
    st.text(st.characters(blacklist_characters=",=", blacklist_categories=("Cs",)), min_size=1)
    .map(str.strip)
    .filter(bool)
)


@settings(max_examples=EXAMPLES)
@given(st.text())
def test_parsing_any_text_gives_an_article_or_a_one_line_error(raw):
    try:
        article = parse_article(raw, "x")
    except PipelineError as err:
        assert "\n" not in str(err)
        return
    assert article.text and article.text == normalise_text(article.text)  # normalised, and stable under it
    assert all(isinstance(v, str) for v in article.metadata.values())


HEADER_VALUE = (
    st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=80)
    .map(str.strip)
    .filter(lambda v: v and not v.startswith(":"))
)


@settings(max_examples=EXAMPLES)
@given(st.sampled_from(sorted(LINE_KEYS)), HEADER_VALUE, st.text(max_size=200))
def test_a_header_line_round_trips_into_metadata(key, value, body):
    body = "Body. " + body
    article = parse_article(f"{key} {value}\n\n{body}", "x")
    assert article.metadata == {key: value}
    assert article.text == normalise_text(body)


@settings(max_examples=EXAMPLES)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_fail_in_one_line(data):
    try:
        text = decode_text(data, "x")
    except PipelineError as err:
        assert "\n" not in str(err)
        return
    assert isinstance(text, str)


@settings(max_examples=EXAMPLES)
@given(st.text(max_size=200))
def test_any_jsonl_line_gives_an_article_or_a_one_line_error(line):
    try:
        json_article(line, "f:1")
    except PipelineError as err:
        assert str(err).startswith("f:1: ") and "\n" not in str(err)


@settings(max_examples=EXAMPLES)
@given(st.dictionaries(LABEL, LABEL, min_size=1, max_size=6))
def test_a_label_map_round_trips_through_its_text_form(mapping):
    text = ",".join(f"{k}={v}" for k, v in mapping.items())
    assert parse_label_map(text) == mapping


@settings(max_examples=EXAMPLES)
@given(st.text(max_size=40))
def test_a_label_map_is_parsed_or_refused_in_one_line(text):
    try:
        parse_label_map(text)
    except PipelineError as err:
        assert "\n" not in str(err)


@pytest.fixture(scope="module")
def tokenizer():
    from pipeline.models.runtime import load_tokenizer

    return load_tokenizer("minilm")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.text(max_size=400), min_size=1, max_size=4),
    st.integers(16, 96),
    st.integers(0, 40),
    st.integers(1, 4),
)
def test_windows_fit_the_settings_and_cover_each_text_from_its_start(tokenizer, texts, max_length, stride, max_windows):
    if stride >= max_length // 2:
        stride = max_length // 2 - 1
    settings_ = WindowSettings(max_length=max_length, stride=stride, max_windows=max_windows)
    windows = encode_windows(tokenizer, texts, None, settings_)
    assert sorted(set(windows.owner)) == list(range(len(texts)))  # every text has a window, even an empty one
    assert windows.owner == sorted(windows.owner)
    for ids in windows.input_ids:
        assert 2 <= len(ids) <= max_length
    for i, text in enumerate(texts):
        mine = [ids for ids, owner in zip(windows.input_ids, windows.owner, strict=True) if owner == i]
        assert len(mine) <= max_windows
        body = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert mine[0][1:-1] == body[: max_length - 2]  # the first window is the text's start

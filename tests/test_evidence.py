"""Evidence first: the body's sentences that share the claim's words are moved to the front."""

import pytest

from pipeline.models.runtime import load_tokenizer
from pipeline.text.evidence import SENTENCE_END, content_words, evidence_first
from pipeline.text.windows import WindowSettings, encode_windows

BODY = (
    "The weather was mild on Tuesday.\n"
    "Officials said nothing about the budget. "
    "The minister denied that he resigned over the scandal! "
    "Reporters waited outside. "
    "A spokesman confirmed the minister resigned."
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


READ_EVIDENCE_FIRST = WindowSettings(max_length=64, stride=16, max_windows=1, evidence_first=True)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def test_sentences_sharing_most_claim_words_come_first_and_ties_keep_article_order():
    out = sentences(evidence_first(BODY, "Minister resigns over scandal"))
    assert out[0] == "The minister denied that he resigned over the scandal!"  # minister, resign, scandal
    assert out[1] == "A spokesman confirmed the minister resigned."  # minister, resign
    rest = ["The weather was mild on Tuesday.", "Officials said nothing about the budget.", "Reporters waited outside."]
    assert out[2:] == rest


def test_reordering_is_a_permutation_of_the_sentences():
    out = evidence_first(BODY, "budget weather reporters")
    assert sorted(sentences(out)) == sorted(sentences(BODY))


def test_no_claim_words_or_one_sentence_leaves_the_text_as_it_is():
    assert evidence_first(BODY, "the of and") == BODY
    assert evidence_first(BODY, "") == BODY
    assert evidence_first("One sentence about the minister.", "minister") == "One sentence about the minister."


def test_function_words_and_inflections_do_not_count_apart():
    assert content_words("The ministers said it was resigning") == content_words("minister resign")


def test_windows_read_the_reordered_body(tokenizer):
    filler = " ".join(f"Filler sentence number {i} about nothing." for i in range(40))
    body = filler + " The minister resigned over the scandal."
    plain = encode_windows(
        tokenizer, [body], ["minister resigned"], WindowSettings(max_length=64, stride=16, max_windows=1)
    )
    first = encode_windows(tokenizer, [body], ["minister resigned"], READ_EVIDENCE_FIRST)
    scandal = tokenizer.convert_tokens_to_ids("scandal")
    assert scandal in first.input_ids[0] and scandal not in plain.input_ids[0]
    texts_only = encode_windows(tokenizer, [body], None, READ_EVIDENCE_FIRST)
    assert scandal not in texts_only.input_ids[0]  # no pair: nothing to order by

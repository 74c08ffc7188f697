"""Predict inputs: header lines become metadata, folders, jsonl, stdin; bad files fail cleanly."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.errors import PipelineError
from pipeline.text.articles import given_names, model_input, parse_article, read_inputs

SEED = Path(__file__).resolve().parents[1] / "seeds" / "000_6abd9dfd733c7055.txt"


def test_sample_article_header_is_metadata():
    [article] = read_inputs([str(SEED)])
    assert article.metadata == {"date": "2022-01-02"}
    assert article.text.startswith("Russian President Vladimir Putin")
    assert "2022-01-02" not in article.text


def test_prose_first_line_is_not_a_header():
    article = parse_article("Shares rose sharply on Monday.\nMore text.", "x")
    assert article.metadata == {}
    assert article.text.startswith("Shares rose")


def test_title_header_is_metadata_and_leads_the_text_of_a_title_model():
    article = parse_article("title Markets rally\nauthor: Jane Doe\n\nShares rose.", "x")
    assert article.metadata == {"title": "Markets rally", "author": "Jane Doe"}
    assert article.text == "Shares rose."
    assert model_input(article, ["title", "text"], None) == ("Markets rally\n\nShares rose.", None)
    assert model_input(article, ["text"], None) == ("Shares rose.", None)
    assert model_input(article, ["text"], "title") == ("Shares rose.", "Markets rally")
    assert model_input(parse_article("No header.", "y"), ["text"], "title") == ("No header.", "")


def test_folder_jsonl_and_stdin(tmp_path, monkeypatch):
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "b.txt").write_text("date 2020-01-01\nSecond article.")
    (folder / "a.txt").write_text("First article.")
    (folder / "ignored.md").write_text("not an article")
    jsonl = tmp_path / "batch.jsonl"
    jsonl.write_text(json.dumps({"text": "From jsonl.", "id": 7}) + "\n\n")
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"From stdin.")))
    articles = read_inputs([str(folder), str(jsonl), "-"])
    assert [a.text for a in articles] == ["First article.", "Second article.", "From jsonl.", "From stdin."]
    assert articles[2].metadata == {"id": 7}
    assert articles[3].source == "<stdin>"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "file not found"),
        ("empty.txt", b"", "file is empty"),
        ("blank.txt", b"date 2020-01-01\n\n  \n", "no article text"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary file"),
        ("latin1.txt", "café crème".encode("latin-1"), "not UTF-8"),
        ("bad.jsonl", b"{not json}\n", "not a JSON object"),
        ("notext.jsonl", b'{"body": "x"}\n', "no string field 'text'"),
    ],
)
def test_bad_inputs(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PipelineError, match=message):
        read_inputs([str(path)])


def test_empty_folder(tmp_path):
    with pytest.raises(PipelineError, match=r"no \.txt files"):
        read_inputs([str(tmp_path)])


def test_given_claims_and_targets_are_stripped_and_blank_ones_refused():
    assert given_names([" Turkey ", "NATO"], "--target") == ["Turkey", "NATO"]
    assert given_names(None, "--claim") == []
    with pytest.raises(PipelineError, match="--claim is empty"):
        given_names(["Turkey sold drones", "  "], "--claim")


@pytest.mark.parametrize("option", ["--claim", "--target"])
def test_blank_claim_or_target_is_a_one_line_error(option):
    # before: a blank --claim was dropped silently, and a blank --target fell back to the automatic targets
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "predict", str(SEED), option, " "],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {option} is empty: give the text to score the article's stance toward"
    ]

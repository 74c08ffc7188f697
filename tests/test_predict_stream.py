"""Predict over many inputs: the good ones are scored when some are bad, stdin JSONL, long and many articles."""

from __future__ import annotations

import json
from pathlib import Path

from test_bad_inputs import invoke

from pipeline.text.articles import MAX_ARTICLE_CHARS


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.strip().splitlines()]


def test_one_empty_file_among_good_ones_is_reported_and_the_rest_scored(trained, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "articles"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text("match goal team player coach season cup")
    (folder / "1b.txt").write_text("")
    code, out, err = invoke(capsys, monkeypatch, "predict", "--no-stance", "--json", str(folder))
    assert code == 0, err
    results = _json_lines(out)
    assert [Path(r["source"]).name for r in results] == ["0.txt", "1.txt", "1b.txt", "2.txt"]  # input order
    [bad] = [r for r in results if "error" in r]
    assert bad == {"source": str(folder / "1b.txt"), "error": f"file is empty: {folder / '1b.txt'}"}
    assert all(r["topic"]["label"] == "sport" for r in results if "error" not in r)
    assert err.splitlines() == [
        f"error: file is empty: {folder / '1b.txt'}",
        "note: 3 of 4 inputs scored, 1 could not be read (above)",
    ]


def test_a_malformed_jsonl_line_is_reported_with_its_line_number(trained, tmp_path, capsys, monkeypatch):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "shares profit market", "id": 1}\n{oops\n{"text": "match goal team", "id": 3}\n')
    code, out, err = invoke(capsys, monkeypatch, "predict", "--no-stance", "--json", str(path))
    assert code == 0, err
    results = _json_lines(out)
    assert [r.get("metadata", {}).get("id") for r in results] == [1, None, 3]
    assert results[1] == {"source": f"{path}:2", "error": f"{path}:2: not a JSON object"}


def test_all_inputs_bad_exits_2_with_a_summary(trained, tmp_path, capsys, monkeypatch):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("")
    code, out, err = invoke(
        capsys, monkeypatch, "predict", "--no-stance", str(tmp_path / "a.txt"), str(tmp_path / "b.txt")
    )
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == "error: none of the 2 inputs could be scored"


def test_jsonl_on_stdin_is_read_as_jsonl_and_says_so(trained, capsys, monkeypatch):
    lines = b"".join(
        json.dumps({"text": t, "n": i}).encode() + b"\n"
        for i, t in enumerate(["shares profit", "match goal", "software chip"])
    )
    code, out, err = invoke(capsys, monkeypatch, "predict", "--no-stance", "--json", "-", stdin=lines)
    assert code == 0, err
    results = _json_lines(out)
    assert [r["metadata"]["n"] for r in results] == [0, 1, 2] and [r["source"] for r in results] == [
        "<stdin>:1",
        "<stdin>:2",
        "<stdin>:3",
    ]
    assert "stdin read as JSONL" in err
    code, out, _ = invoke(capsys, monkeypatch, "predict", "--no-stance", "--json", "--stdin", "text", "-", stdin=lines)
    assert code == 0 and len(_json_lines(out)) == 1  # told to, the three lines are one article


def test_a_50_mb_one_line_article_is_read_up_to_the_cap_and_says_so(trained, tmp_path, capsys, monkeypatch):
    path = tmp_path / "huge.txt"
    with path.open("w") as f:
        for _ in range(50 * 1024):
            f.write("match goal team " * 64)  # 1 KiB a round, one line
    code, out, err = invoke(capsys, monkeypatch, "predict", "--no-stance", "--json", str(path))
    assert code == 0, err
    [result] = _json_lines(out)
    assert result["truncated_at_chars"] == MAX_ARTICLE_CHARS and result["topic"]["label"] == "sport"
    assert f"longer than {MAX_ARTICLE_CHARS:,} characters" in err


def test_5000_tiny_files_are_all_scored_in_order(trained, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(5000):
        (folder / f"{i:05d}.txt").write_text("shares profit" if i % 2 else "match goal")
    code, out, err = invoke(capsys, monkeypatch, "predict", "--no-stance", "--json", "--quiet", str(folder))
    assert code == 0, err
    results = _json_lines(out)
    assert len(results) == 5000 and [Path(r["source"]).name for r in results[:2]] == ["00000.txt", "00001.txt"]
    assert err == ""

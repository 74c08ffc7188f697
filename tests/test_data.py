"""Prepare: cleaning, deduplication, splits, the data card, re-use of unchanged output, bad input."""

import gzip
import json

import pytest
from conftest import LABELS, make_config, synthetic_rows, write_csv

from pipeline.core.config import load_config
from pipeline.core.errors import PipelineError
from pipeline.core.io import normalise_text
from pipeline.stages.prepare import content_digest, prepare


def test_normalise_text():
    assert normalise_text("  a\u00a0 b\r\n\r\n\r\n\nc \n") == "a b\n\nc"
    assert normalise_text("ﬁne") == "fine"  # NFKC


def test_prepare_splits_dedups_and_writes_a_card(home):
    rows = synthetic_rows(20)
    rows.append(dict(rows[0], id="dup"))  # an exact duplicate
    rows.append(dict(rows[1], id="empty", title="", text="  "))  # no text at all
    src = write_csv(home / "news.csv", rows)
    cfg = load_config(make_config(home, "minilm", src))
    result = prepare(cfg)
    card = result.card
    assert not result.reused
    assert card["dropped"] == {"empty_text": 1, "empty_label": 0, "crossing_groups": 0, "duplicate_text": 1}
    n = {s: card["splits"][s]["n"] for s in ("train", "validation", "test")}
    assert sum(n.values()) == 60
    assert n["validation"] >= 6 and n["test"] >= 6
    for split in n:  # stratified: every label in every split
        assert all(count > 0 for count in card["splits"][split]["labels"].values())
    assert card["labels"] == sorted(LABELS)
    assert card["splits"]["train"]["tokens"]["max"] > 0

    from datasets import load_from_disk

    ds = load_from_disk(str(result.path))
    texts = [t for s in ds for t in ds[s]["text"]]
    assert len(texts) == len(set(texts))
    assert ds["train"].features["label"].names == sorted(LABELS)


def test_prepare_reuses_unchanged_output_and_redoes_changed(home):
    src = write_csv(home / "news.csv", synthetic_rows(10))
    cfg = load_config(make_config(home, "minilm", src))
    first = prepare(cfg)
    stamp = (first.path / "dataset_dict.json").stat().st_mtime_ns
    again = prepare(cfg)
    assert again.reused and (again.path / "dataset_dict.json").stat().st_mtime_ns == stamp
    write_csv(src, synthetic_rows(10, seed=1))
    changed = prepare(cfg)
    assert not changed.reused and changed.card["content_digest"] != first.card["content_digest"]


def test_prepare_keeps_a_given_split_column_and_drops_train_copies_of_test_texts(home):
    rows = synthetic_rows(10)
    for i, row in enumerate(rows):
        row["split"] = ["train", "train", "validation", "test"][i % 4]
    leak = dict(rows[3], id="leak", split="train")  # a test article repeated in train
    src = write_csv(home / "news.csv", [*rows, leak])
    cfg = load_config(make_config(home, "minilm", src, data__split_column="split"))
    card = prepare(cfg).card
    assert card["splits"]["test"]["n"] == sum(r["split"] == "test" for r in rows)
    assert card["splits"]["train"]["n"] == sum(r["split"] == "train" for r in rows)
    assert card["dropped"]["duplicate_text"] == 1


def test_content_digest_ignores_row_order():
    import pandas as pd

    df = pd.DataFrame({"split": ["train", "test"], "label": ["a", "b"], "text": ["x", "y"]})
    assert content_digest(df) == content_digest(df.iloc[::-1])
    assert content_digest(df) != content_digest(df.assign(label=["b", "b"]))


def test_prepare_reads_jsonl_gz(home):
    src = home / "news.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        for row in synthetic_rows(8):
            f.write(json.dumps(row) + "\n")
    card = prepare(load_config(make_config(home, "minilm", src))).card
    assert sum(card["splits"][s]["n"] for s in card["splits"]) == 24


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"title,text,label\n\xff\xfe\xfa,bad,x\n", "not UTF-8"),
        (b"title,body,label\na,b,c\n", "no column 'text'"),
        (b"id,title,text,label\n", "no rows"),
    ],
)
def test_bad_sources_fail_with_one_clear_error(home, content, message):
    src = home / "bad.csv"
    src.write_bytes(content)
    cfg = load_config(make_config(home, "minilm", src))
    with pytest.raises(PipelineError, match=message):
        prepare(cfg)
    assert not (home / "prepared").exists()  # nothing half-written


def test_labels_outside_the_config_are_named(home):
    src = write_csv(home / "news.csv", synthetic_rows(5))
    cfg = load_config(make_config(home, "minilm", src, data__labels=["business", "sport"]))
    with pytest.raises(PipelineError, match=r"\['tech'\]"):
        prepare(cfg)


def test_pairs_are_kept_and_deduplicated_as_pairs(home):
    rows = synthetic_rows(10)
    same_text_other_claim = dict(rows[0], id="other-claim", title="a different claim")
    exact_copy = dict(rows[1], id="copy")
    src = write_csv(home / "pairs.csv", [*rows, same_text_other_claim, exact_copy])
    cfg = load_config(make_config(home, "minilm", src, data__text_columns=["text"], data__pair_column="title"))
    result = prepare(cfg)
    assert result.card["dropped"]["duplicate_text"] == 1
    from datasets import load_from_disk

    ds = load_from_disk(str(result.path))
    assert "pair" in ds["train"].column_names
    pairs = [p for s in ds for p in ds[s]["pair"]]
    assert "a different claim" in pairs and len(pairs) == 31


def test_where_label_map_and_validation_taken_out_of_train(home):
    rows = synthetic_rows(12)
    for i, row in enumerate(rows):
        row["split"] = ("train", "train", "train", "heldout", "other")[i % 5]
    src = write_csv(home / "news.csv", rows)
    cfg = load_config(
        make_config(
            home,
            "minilm",
            src,
            data__where={"split": ["train", "heldout"]},
            data__split_column="split",
            data__split_names={"train": "train", "test": "heldout"},
            data__label_map={"sport": "games"},
        )
    )
    card = prepare(cfg).card
    n = {s: card["splits"][s]["n"] for s in ("train", "validation", "test")}
    assert n["test"] == sum(r["split"] == "heldout" for r in rows)  # "other" rows are not read
    assert n["train"] + n["validation"] == sum(r["split"] == "train" for r in rows)
    assert n["validation"] > 0
    assert "games" in card["labels"] and "sport" not in card["labels"]


def test_where_on_a_missing_column_is_named(home):
    src = write_csv(home / "news.csv", synthetic_rows(3))
    cfg = load_config(make_config(home, "minilm", src, data__where={"section": ["a"]}))
    with pytest.raises(PipelineError, match="no column 'section' to select rows by"):
        prepare(cfg)


def test_extra_train_is_capped_by_rows_and_words_and_mapped(home):
    src = write_csv(home / "news.csv", synthetic_rows(10))
    extra_rows = synthetic_rows(20, seed=1)
    for row in extra_rows:
        row["section"] = {"sport": "sports"}.get(row["label"], row["label"])
    extra = write_csv(home / "extra.csv", extra_rows)
    cfg = load_config(
        make_config(
            home,
            "minilm",
            src,
            data__extra_train=[
                {
                    "name": "extra",
                    "source": str(extra),
                    "where": {"section": ["sports", "tech"]},
                    "text_columns": ["text"],
                    "pair_column": "title",
                    "label_column": "section",
                    "label_map": {"sports": "sport"},
                    "max_rows": 10,
                    "max_words": 5,
                }
            ],
        )
    )
    from datasets import load_from_disk

    ds = load_from_disk(str(prepare(cfg).path))
    names = ds["train"].features["label"].names
    added = [r for split in ds for r in ds[split] if str(r["id"]).startswith("extra:")]
    assert len(added) == 10 and all(str(i).startswith("extra:") for i in ds["train"]["id"][-10:])
    assert not any(str(i).startswith("extra:") for s in ("validation", "test") for i in ds[s]["id"])
    assert {names[r["label"]] for r in added} == {"sport", "tech"}  # stratified, mapped, filtered
    assert all(len(r["text"].split()) <= 5 for r in added)

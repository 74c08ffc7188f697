"""`pipeline batch --engine local`: a table of articles in, a Parquet folder out, same labels as predict."""

import json

import pandas as pd
import pytest
from conftest import run_cli

from pipeline.core.errors import PipelineError
from pipeline.stages.batch import Columns, batch_local, scorers

ARTICLES = [
    ("a1", "Cup final", "match goal team player coach season cup"),
    ("a2", "Markets", "shares profit market company bank economy"),
    ("a3", None, "software computer internet phone users digital"),
    ("a4", "Blank", "   "),
    ("a5", "Nothing", None),
]


def values(column: pd.Series) -> list:
    """The column with every missing value as None (pandas reads Parquet nulls of strings as NaN)."""
    return [None if pd.isna(v) else v for v in column]


def table(home, name="articles.parquet"):
    frame = pd.DataFrame(ARTICLES, columns=["id", "title", "text"]).assign(section=["s1", "s2", "s3", "s4", "s5"])
    path = home / name
    frame.to_parquet(path, index=False)
    return path


def test_batch_labels_every_row_as_predict_does_and_marks_bad_rows(trained, shared_home, tmp_path):
    home = shared_home
    out = tmp_path / "labels"
    done = run_cli(
        home, "batch", str(table(tmp_path)), "-o", str(out), "-c", str(home / "config.yaml"), "--keep", "section"
    )
    assert done.returncode == 0, done.stderr
    result = pd.read_parquet(out).sort_values("id")
    assert result["id"].tolist() == ["a1", "a2", "a3", "a4", "a5"]
    assert result["section"].tolist() == ["s1", "s2", "s3", "s4", "s5"]
    assert result.columns.tolist()[:4] == ["id", "section", "topic_label", "topic_score"]
    assert {"topic_prob_business", "topic_prob_sport", "topic_prob_tech", "error"} <= set(result.columns)
    assert values(result["error"]) == [None, None, None, "empty text", "no text"]
    assert values(result["topic_label"])[3:] == [None, None]
    # pipeline predict on the same articles (title header lines) gives the same labels and scores
    jsonl = tmp_path / "same.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"text": t, "title": h} if h else {"text": t}) + "\n" for _, h, t in ARTICLES[:3])
    )
    predicted = run_cli(home, "predict", str(jsonl), "-c", str(home / "config.yaml"), "--json", "--no-stance")
    assert predicted.returncode == 0, predicted.stderr
    topics = [json.loads(line)["topic"] for line in predicted.stdout.splitlines()]
    assert result["topic_label"].tolist()[:3] == [t["label"] for t in topics] == ["sport", "business", "tech"]
    assert result["topic_score"].tolist()[:3] == pytest.approx([t["score"] for t in topics], abs=1e-5)


def test_csv_and_jsonl_inputs_and_many_chunks(trained, tmp_path):
    cfg, _ = trained
    frame = pd.DataFrame(ARTICLES[:3] * 7, columns=["id", "title", "text"]).assign(
        id=lambda f: [f"r{i}" for i in range(len(f))]
    )
    frame.to_csv(tmp_path / "a.csv.gz", index=False)
    frame.to_json(tmp_path / "b.jsonl", orient="records", lines=True)
    jobs = scorers(cfg.task, None, cfg.mlflow.registered_model, [], None, [], None)
    r = batch_local(
        [str(tmp_path / "a.csv.gz"), str(tmp_path / "*.jsonl")],
        str(tmp_path / "out"),
        Columns(),
        jobs,
        cfg.runtime,
        4,
        False,
    )
    assert r.rows == 42 and r.errors == 0
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert len(parts) == 12  # 21 rows in chunks of 4, per file
    result = pd.read_parquet(tmp_path / "out")
    assert result["topic_label"].tolist() == ["sport", "business", "tech"] * 14


def test_an_existing_output_is_refused_or_replaced_whole(trained, shared_home, tmp_path):
    home = shared_home
    config = str(home / "config.yaml")
    out = tmp_path / "labels"
    source = str(table(tmp_path))
    assert run_cli(home, "batch", source, "-o", str(out), "-c", config).returncode == 0
    before = sorted(p.name for p in out.iterdir())
    again = run_cli(home, "batch", source, "-o", str(out), "-c", config)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "--overwrite" in again.stderr
    # a run that fails half-way (its second input is not Parquet) leaves the old output as it was
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet")
    failed = run_cli(home, "batch", source, str(broken), "-o", str(out), "-c", config, "--overwrite")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temporary folder is left"
    replaced = run_cli(home, "batch", source, "-o", str(out), "-c", config, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert len(pd.read_parquet(out)) == len(ARTICLES)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text-column", "body"], "no column 'body'"),
        (["--id-column", "uid"], "no column 'uid'"),
        (["--engine", "dask"], "choose local or spark"),
        (["--target", " "], "--target is empty"),
    ],
)
def test_bad_batch_arguments_are_one_line_errors(trained, shared_home, tmp_path, args, message):
    done = run_cli(
        shared_home,
        "batch",
        str(table(tmp_path)),
        "-o",
        str(tmp_path / "o"),
        "-c",
        str(shared_home / "config.yaml"),
        *args,
    )
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "o").exists()


def test_every_target_and_claim_gets_its_own_columns():
    jobs = scorers("topic", None, "topic", ["European Union", "Boris Johnson"], None, ["Taxes rise"], "models:/s/1")
    assert [(j.prefix, j.model_ref, j.pair) for j in jobs] == [
        ("topic", "models:/topic@champion", None),
        ("stance_european_union", "models:/target_stance@champion", "European Union"),
        ("stance_boris_johnson", "models:/target_stance@champion", "Boris Johnson"),
        ("claim1", "models:/s/1", "Taxes rise"),
    ]
    with pytest.raises(PipelineError, match="stance_eu_"):
        scorers("topic", None, "topic", ["EU", "eu"], None, [], None)

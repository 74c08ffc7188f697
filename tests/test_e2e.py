"""End to end on a slice of the real BBC data with the real MiniLM: prepare -> train -> evaluate -> predict."""

import json

import pandas as pd
import pytest
from conftest import ROOT, SHARED_DATA, make_config
from test_train_tiny import run_cli

pytestmark = pytest.mark.e2e
SEED = ROOT / "seeds" / "000_6abd9dfd733c7055.txt"


@pytest.fixture()
def bbc_slice(home):
    source = SHARED_DATA / "bbc_news.csv.gz"
    if not source.is_file():
        pytest.skip(f"{source} is not present")
    df = pd.read_csv(source)
    sizes = {"train": 8, "validation": 3, "test": 3}
    parts = [df[df["split"] == s].groupby("label").head(n) for s, n in sizes.items()]
    path = home / "bbc_slice.csv"
    pd.concat(parts).to_csv(path, index=False)
    return path


def test_cli_end_to_end_with_minilm(home, bbc_slice):
    config = make_config(
        home,
        "minilm",
        bbc_slice,
        data__split_column="split",
        data__labels=["business", "entertainment", "politics", "sport", "tech"],
        model__max_length=128,
        model__stride=32,
        train__max_steps=4,
        train__batch_size=8,
    )
    c = ["-c", str(config)]
    prep = run_cli(home, "prepare", *c)
    assert prep.returncode == 0, prep.stderr
    assert "written" in prep.stdout and "train" in prep.stdout
    again = run_cli(home, "prepare", *c)
    assert "unchanged, reused" in again.stdout

    tr = run_cli(home, "train", *c)
    assert tr.returncode == 0, tr.stderr
    assert "alias champion" in tr.stdout

    base = run_cli(home, "baseline", *c)
    assert base.returncode == 0, base.stderr

    ev = run_cli(home, "evaluate", *c, "--json")
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    assert metrics["n"] == 15 and 0.0 <= metrics["macro_f1"] <= 1.0

    pr = run_cli(home, "predict", *c, "--json", str(SEED))
    assert pr.returncode == 0, pr.stderr
    out = json.loads(pr.stdout)
    assert out["metadata"] == {"date": "2022-01-02"}
    assert out["topic"]["label"] in out["topic"]["scores"]

    table = run_cli(home, "predict", *c, str(SEED))
    assert table.returncode == 0 and "runner-up" in table.stdout

    import mlflow

    runs = mlflow.search_runs(experiment_names=["topic"])
    assert set(runs["tags.stage"]) == {"train", "baseline", "evaluate"}

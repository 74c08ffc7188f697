"""End to end on a slice of the real BBC data with the real MiniLM: prepare -> train -> evaluate -> predict."""

import json
import re
import shutil

import pandas as pd
import pytest
from conftest import ROOT, SHARED_DATA, isolate, make_config, run_cli

# one worker runs them all (`--dist loadgroup`), so the MiniLM topic model is trained once
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("minilm")]
SEED = ROOT / "seeds" / "000_6abd9dfd733c7055.txt"


def write_bbc_slice(home):
    source = SHARED_DATA / "bbc_news.csv.gz"
    if not source.is_file():
        pytest.skip(f"{source} is not present")
    df = pd.read_csv(source)
    sizes = {"train": 8, "validation": 3, "test": 3}
    parts = [df[df["split"] == s].groupby("label").head(n) for s, n in sizes.items()]
    path = home / "bbc_slice.csv"
    pd.concat(parts).to_csv(path, index=False)
    return path


@pytest.fixture()
def bbc_slice(home):
    return write_bbc_slice(home)


@pytest.fixture(scope="module")
def bbc_trained(tmp_path_factory):
    """The topic task prepared twice and trained once with MiniLM through the CLI, in a home of its own
    that the tests of this file share (the stance test predicts with this topic champion)."""
    home = tmp_path_factory.mktemp("e2e-home")
    shutil.copytree(ROOT / "configs", home / "configs")
    config = make_config(
        home,
        "minilm",
        write_bbc_slice(home),
        data__split_column="split",
        data__labels=["business", "entertainment", "politics", "sport", "tech"],
        model__max_length=128,
        model__stride=32,
        model__tfidf_blend=True,  # as shipped in configs/topic.yaml
        train__max_steps=4,
        train__batch_size=8,
    )
    c = ["-c", str(config)]
    runs = {"prepare": run_cli(home, "prepare", *c), "again": run_cli(home, "prepare", *c)}
    runs["train"] = run_cli(home, "train", *c)
    return home, config, runs


def test_cli_end_to_end_with_minilm(bbc_trained, monkeypatch):
    home, config, runs = bbc_trained
    isolate(monkeypatch, home)
    c = ["-c", str(config)]
    prep, again, tr = runs["prepare"], runs["again"], runs["train"]
    assert prep.returncode == 0, prep.stderr
    assert "written" in prep.stdout and "train" in prep.stdout
    assert "unchanged, reused" in again.stdout
    assert tr.returncode == 0, tr.stderr
    assert "alias champion" in tr.stdout
    trained_f1 = float(re.search(r"test: macro-F1 ([0-9.]+)", tr.stdout).group(1))

    base = run_cli(home, "baseline", *c)
    assert base.returncode == 0, base.stderr

    ev = run_cli(home, "evaluate", *c, "--json")
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    # the registered champion, read back from the registry, scores what training scored
    assert metrics["n"] == 15 and round(metrics["macro_f1"], 4) == trained_f1

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


@pytest.fixture()
def fnc_slice(bbc_trained):
    """A few real FNC-1 stories (every pair of 12 train and 4 test bodies), as the real files are shaped."""
    home = bbc_trained[0]
    paths = {}
    for part, n_bodies in (("train", 12), ("competition_test", 4)):
        stances, bodies = SHARED_DATA / f"fnc1_{part}_stances.csv.gz", SHARED_DATA / f"fnc1_{part}_bodies.csv.gz"
        if not stances.is_file():
            pytest.skip(f"{stances} is not present")
        s, b = pd.read_csv(stances), pd.read_csv(bodies)
        keep = b["Body ID"].head(n_bodies)
        s[s["Body ID"].isin(keep)].to_csv(home / f"{part}_stances.csv", index=False)
        b[b["Body ID"].isin(keep)].to_csv(home / f"{part}_bodies.csv", index=False)
        paths[part] = (home / f"{part}_stances.csv", home / f"{part}_bodies.csv")
    return paths


def test_claim_stance_end_to_end_with_minilm(bbc_trained, fnc_slice):
    import yaml

    home, topic, _ = bbc_trained
    raw = yaml.safe_load((ROOT / "configs" / "stance.yaml").read_text())
    (tr_s, tr_b), (te_s, te_b) = fnc_slice["train"], fnc_slice["competition_test"]
    raw["data"].update(
        source=str(tr_s),
        join={"source": str(tr_b), "key": "Body ID"},
        test={"source": str(te_s), "join": {"source": str(te_b), "key": "Body ID"}},
        split_fractions={"validation": 0.3, "test": 0.0},
        prepared_dir=str(home / "prepared-stance"),
    )
    raw["model"].update(max_length=128, stride=32)
    raw["train"].update(max_steps=3, batch_size=8, output_dir=str(home / "model-stance"))
    raw["runtime"].update(threads=1)
    config = home / "stance.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))

    c = ["-c", str(config)]
    assert run_cli(home, "prepare", *c).returncode == 0
    tr = run_cli(home, "train", *c)
    assert tr.returncode == 0, tr.stderr
    assert "alias champion" in tr.stdout
    trained_fnc = float(re.search(r"FNC-1 score ([0-9.]+)", tr.stdout).group(1))
    ev = run_cli(home, "evaluate", *c, "--json")
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    assert metrics["n"] == len(pd.read_csv(te_s)) and round(metrics["fnc_score"], 2) == trained_fnc

    claim = "Turkey supplies Ukraine with armed drones"
    pr = run_cli(home, "predict", "-c", str(topic), "--json", "--claim", claim, str(SEED))
    assert pr.returncode == 0, pr.stderr
    [scored] = json.loads(pr.stdout)["claims"]
    assert scored["claim"] == claim and scored["label"] in {"agree", "disagree", "discuss", "unrelated"}


def test_zeroshot_with_minilm_reads_bbc_topics_and_the_sample_as_politics(home, bbc_slice):
    """The shipped phrasings, no BBC label used: most of a BBC slice right, the sample article politics."""
    import yaml

    raw = yaml.safe_load((ROOT / "configs" / "zeroshot_topic.yaml").read_text())
    raw["data"].update(source=str(bbc_slice), prepared_dir=str(home / "prepared"), extra_train=[], extra_tests=[])
    raw["zeroshot"].update(output_dir=str(home / "zeroshot"))
    raw["runtime"].update(threads=1)
    config = home / "zeroshot.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))

    zs = run_cli(home, "zeroshot", "-c", str(config), "--json")
    assert zs.returncode == 0, zs.stderr
    metrics = json.loads(zs.stdout)
    assert metrics["n"] == 15 and metrics["accuracy"] >= 0.8, metrics

    pr = run_cli(home, "predict", "-c", str(config), "--zero-shot", "--no-stance", "--json", str(SEED))
    assert pr.returncode == 0, pr.stderr
    assert json.loads(pr.stdout)["topic"]["label"] == "politics"

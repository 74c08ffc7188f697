"""Every command the README and the config headers show runs, as a dry run: the command line parses
with the real CLI and its config, profile and overrides load. Placeholders (FILE, CONFIG, …) are
given a real value; a `make` target must exist."""

from __future__ import annotations

import re
import shlex

import pytest
import typer
import yaml
from conftest import ROOT

from pipeline.cli import app
from pipeline.core.config import default_config_path, load_config

SEED = "seeds/000_6abd9dfd733c7055.txt"
PLACEHOLDERS = {
    "FILE": SEED,
    "PATH…": SEED,
    "FILES…": SEED,
    "FOLDER": "models/topic",
    "OUT": "labels/",
    "TASK": "topic",
    "CONFIG": "configs/reuters.yaml",
    "ARTICLE": SEED,
}


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) of every `pipeline …` and `make …` command in the README (inline and in code
    blocks) and in the comment lines of the shipped configs."""
    found: list[tuple[str, str]] = []
    readme = (ROOT / "README.md").read_text()
    in_block = False
    for line in readme.splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            command = line.split("  #")[0].strip().removesuffix("&").strip()
            if re.match(r"^(\.venv/bin/)?pipeline |^make ", command):
                found.append(("README.md", command))
        else:
            found += [("README.md", c) for c in re.findall(r"`((?:pipeline|make) [^`]+)`", line)]
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        for line in config.read_text().splitlines():
            if line.lstrip().startswith("#"):
                found += [(config.name, c) for c in re.findall(r"`((?:pipeline|make) [^`]+)`", line)]
    return found


def _arguments(command: str) -> list[str]:
    command = re.sub(r"\[([^\]]+)\]", r"\1", command)  # [--int8]: the option is tried too
    return [PLACEHOLDERS.get(word, word) for word in shlex.split(command.removeprefix(".venv/bin/"))]


COMMANDS = documented_commands()
MADE_BY_INIT = {f"configs/{m}.yaml" for _, c in COMMANDS for m in re.findall(r"init .*--task (\w+)", c)}


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 30 and any(c.startswith("make train") for _, c in COMMANDS)


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[f"{w}: {c}" for w, c in COMMANDS])
def test_a_documented_command_runs_as_a_dry_run(where, command, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = _arguments(command)
    if args[0] == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
        assert set(args[1:]) <= targets, f"{where}: no make target {args[1:]}"
        return
    group = typer.main.get_command(app)
    parent = group.make_context("pipeline", [args[1]], resilient_parsing=True)
    sub = group.get_command(parent, args[1])
    assert sub is not None, f"{where}: no command {args[1]!r}"
    if len(args) == 2:
        return  # the command named in prose or a table: that it exists is what is shown
    if where.endswith(".yaml") and "-c" not in args:  # a config's own comment speaks of that config
        args[2:2] = ["-c", f"configs/{where}"]
    if "--profile" in args and args[args.index("--profile") + 1] == "NAME":  # one of that config's, if any
        config_file = args[args.index("-c") + 1] if "-c" in args else "configs/topic.yaml"
        profiles = list(yaml.safe_load((ROOT / config_file).read_text()).get("profiles") or {})
        at = args.index("--profile")
        args[at : at + 2] = ["--profile", profiles[0]] if profiles else []
    args = ["mine" if a == "NAME" else a for a in args]
    params = sub.make_context(args[1], args[2:], parent=parent).params  # options and types as the CLI checks them
    config = params.get("config")
    if config is not None and str(config) in MADE_BY_INIT:
        return  # written by the `pipeline init` example before it
    if "config" in params:
        default = default_config_path("zeroshot_topic" if args[1] == "zeroshot" else "topic")
        load_config(config or default, params.get("set_") or [], params.get("profile"))

"""The house rules that a reader relies on: a short README whose links resolve, short functions, a docstring
on every module, and configs that say what a key does rather than what it once measured."""

import ast
import re

import pytest
import yaml
from conftest import ROOT

from pipeline.core.config import load_config

LONGEST_FUNCTION = 80
README_BYTES = 12_000


def test_readme_is_short_and_its_relative_links_resolve():
    readme = ROOT / "README.md"
    assert readme.stat().st_size <= README_BYTES
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme.read_text(encoding="utf-8"))
    relative = [link for link in links if not link.startswith(("http://", "https://", "mailto:"))]
    assert relative, "the README links into docs/"
    assert [link for link in relative if not (ROOT / link).exists()] == []


def test_every_docs_page_is_linked_from_the_readme_or_another_page():
    text = "".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
    for page in (ROOT / "docs").glob("*.md"):
        assert f"{page.name})" in text or f"{page.name}#" in text, f"docs/{page.name} is linked from nowhere"


def functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("path", sorted((ROOT / "pipeline").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_have_a_docstring_and_short_functions(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{path.name} says nowhere what it is"
    long_ones = {f"{node.name} ({n} lines)" for node, n in functions(tree) if n > LONGEST_FUNCTION}
    assert not long_ones


def test_the_length_check_sees_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(LONGEST_FUNCTION))
    [(_, n)] = list(functions(ast.parse(f"def f():\n{body}\n")))
    assert n == LONGEST_FUNCTION + 1


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_and_profile_loads_and_its_comments_carry_no_measurements(path):
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    load_config(path)
    for profile in raw.get("profiles") or {}:
        load_config(path, profile=profile)
    comments = [line.split("#", 1)[1] for line in path.read_text(encoding="utf-8").splitlines() if "#" in line]
    # a figure of a run (validation 0.594, 25 min, 1.2x) belongs in docs/experiments.md
    measured = [c for c in comments if re.search(r"\b0\.\d{3}\b|\d+(\.\d+)? min\b|\d\.\dx\b|->", c)]
    assert measured == []

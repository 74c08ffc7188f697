"""Stage 0, init: a user's labelled table -> a complete, commented config for a new task.

Checks now what would fail later (a missing column, one label, empty label cells, a wrong
separator), sizes the token windows from measured lengths, and fills config_template.yaml.
It writes the config only: prepare reads and splits the data itself.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.core.config import load_config, project_root
from pipeline.core.errors import PipelineError
from pipeline.core.io import join_text_columns, read_table

if TYPE_CHECKING:
    import pandas as pd

TASK_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# shipped tasks and the registered models they make: a new task must never replace their champions
SHIPPED = ("topic", "stance", "target_stance", "zeroshot_topic", "topic_zeroshot", "topic_selftrained")
SEPARATORS = (",", ";", "|", " ", "\t")
WINDOW_SIZES = (128, 256, 384, 512)
LONG_TEXT_WINDOWS = 4  # 512-token windows per article when the 90th percentile does not fit one
SAMPLE_ROWS = 2000
FEW_EXAMPLES = 5
SEED = 20261127
BINARY = {"1": True, "1.0": True, "true": True, "0": False, "0.0": False, "false": False}
SPLIT_VALUES = ("train", "validation", "test")
PLACEHOLDER = re.compile(r"\$(\w+) *")
COMMENT_COLUMN = 34  # where configs/topic.yaml's comments start


@dataclass
class Windowing:
    """Window settings chosen from token lengths (special tokens and the pair included)."""

    max_length: int
    stride: int
    max_windows: int
    median: float
    p90: float
    max: int
    share_over_window: float


@dataclass
class InitResult:
    path: Path
    rows: int
    label_counts: dict[str, int]  # articles per label
    warnings: list[str]
    windows: Windowing
    commands: list[str]  # train, predict, evaluate


def init_config(
    data: Path,
    task: str,
    text_columns: list[str],
    label_column: str | None,
    pair_column: str | None = None,
    multi_label: bool = False,
    label_separator: str | None = None,
    label_columns: list[str] | None = None,
    output: Path | None = None,
    force: bool = False,
) -> InitResult:
    """Read `data`, check it, measure it and write the config of task `task`; nothing is written on error."""
    out = _output_path(task, output, force)
    if not text_columns:
        raise PipelineError("give the text column(s): --text-column C or C1,C2")
    multi_label, label_separator = _label_mode(label_column, label_columns, multi_label, label_separator)
    needed = [*text_columns, *([pair_column] if pair_column else []), *([label_column] if label_column else [])]
    df = read_table(data, list(dict.fromkeys([*needed, *(label_columns or [])])))
    warnings: list[str] = []
    if label_columns:
        label_sets = _binary_labels(df, label_columns)
    else:
        if label_column is None:  # _label_mode gives exactly one of the two
            raise PipelineError("give --label-column or --label-columns")
        label_sets = _cell_labels(df, label_column, label_separator, warnings)
    where = f"column {label_column!r}" if label_column else "--label-columns"
    counts = _count_labels(label_sets, label_columns or [], where, warnings)
    texts = join_text_columns(df, text_columns)
    if empty := sum(t == "" for t in texts):
        warnings.append(f"{empty} of {len(df)} rows have no text in {', '.join(text_columns)}: prepare drops them")
    split_column, split_names = _splits(df, warnings)
    windows = _measure(df, texts, pair_column)
    shown, source = _shown(out), _source(data)
    commands = [f"pipeline train -c {shown}", f"pipeline predict -c {shown} FILE", f"pipeline evaluate -c {shown}"]
    values = {
        "task": task,
        "source": source,
        "text_columns": text_columns,
        "pair_column": pair_column,
        "label_column": label_column,
        "multi_label": multi_label,
        "label_separator": label_separator,
        "label_columns": label_columns,
        "split_column": split_column,
        "split_names": split_names,
        "id_column": _id_column(df),
        "prepared_dir": f"data/prepared/{task}",
        "max_length": windows.max_length,
        "stride": windows.stride,
        "max_windows": windows.max_windows,
        "tfidf_first": not multi_label,  # the TF-IDF shortcut is single-label only
        "epochs": 10 if multi_label else 3,
        "patience": 2 if multi_label else 1,
        "output_dir": f"models/{task}",
        "solver": "liblinear" if multi_label else "saga",  # one-vs-rest binary problems
        "class_weight": "balanced" if multi_label else "none",  # rare labels: their positives weigh more
        "experiment": task,
        "registered_model": task,
    }
    header = _header(task, source, len(df), counts, windows, commands)
    _write_checked(out, _render(header, values))
    return InitResult(out, len(df), counts, warnings, windows, commands)


def _output_path(task: str, output: Path | None, force: bool) -> Path:
    if not TASK_NAME.match(task):
        raise PipelineError(f"task name {task!r}: use lower-case letters, digits and _, starting with a letter")
    if task in SHIPPED:
        raise PipelineError(f"task name {task!r} is a shipped task: choose another name (its model would replace it)")
    out = (output.expanduser() if output else project_root() / "configs" / f"{task}.yaml").resolve()
    if out.is_dir():
        raise PipelineError(f"--output {out} is a folder: give a file name such as {task}.yaml")
    if out.exists() and not force:
        raise PipelineError(f"{out} exists: give --force to replace it, or --output another file")
    return out


def _label_mode(
    label_column: str | None, label_columns: list[str] | None, multi_label: bool, separator: str | None
) -> tuple[bool, str | None]:
    """(multi_label, separator) of the labels as given; 0/1 columns are multi-label, without a separator."""
    if (label_column is None) == (not label_columns):
        raise PipelineError("give either --label-column or --label-columns (0/1 columns, one a label)")
    if label_columns:
        if len(label_columns) < 2:
            raise PipelineError("--label-columns needs two or more 0/1 columns")
        if separator is not None:
            raise PipelineError("--label-separator is for --label-column, not --label-columns")
        return True, None
    if not multi_label:
        if separator is not None:
            raise PipelineError("--label-separator needs --multi-label")
        return False, None
    return True, separator or " "


def _cell_labels(df: pd.DataFrame, column: str, separator: str | None, warnings: list[str]) -> list[list[str]]:
    """Each row's labels from `column` (split on `separator` for multi-label); every cell must hold one."""
    cells = [str(v) for v in df[column].astype("string").fillna("").str.strip()]
    empty = [i for i, c in enumerate(cells) if c == ""]
    if empty:
        raise PipelineError(
            f"column {column!r} is empty in {len(empty)} row(s), the first data row {empty[0] + 1} "
            "(the header not counted): fill in the labels or drop those rows"
        )
    if separator is None:
        return [[c] for c in cells]
    if not any(separator in c for c in cells):
        seen = {s: sum(s in c for c in cells) for s in SEPARATORS if s != separator}
        likely = max(seen, key=lambda s: seen[s])
        if seen[likely]:
            raise PipelineError(
                f"no cell of {column!r} holds the separator {separator!r}; "
                f"cells look separated by {likely!r}: give --label-separator {likely!r}"
            )
        warnings.append(f"no cell of {column!r} holds more than one label: is it multi-label?")
    return [list(dict.fromkeys(p.strip() for p in c.split(separator) if p.strip())) for c in cells]


def _binary_labels(df: pd.DataFrame, columns: list[str]) -> list[list[str]]:
    """Each row's labels: the 0/1 (or true/false) columns set in it."""
    flags = {}
    for column in columns:
        values = df[column].astype("string").fillna("").str.strip().str.lower()
        bad = ~values.isin(list(BINARY))
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise PipelineError(
                f"column {column!r} holds {values.iloc[row]!r} in data row {row + 1}: "
                "--label-columns must hold only 0/1 or true/false"
            )
        flags[column] = values.map(BINARY).tolist()
    return [[c for c in columns if flags[c][i]] for i in range(len(df))]


def _count_labels(label_sets: list[list[str]], known: list[str], where: str, warnings: list[str]) -> dict[str, int]:
    """Articles per label (`known` ones too, which a 0/1 column may never set)."""
    counts = dict.fromkeys(known, 0)
    for labels in label_sets:
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
    if sum(n > 0 for n in counts.values()) < 2:
        raise PipelineError(f"{where} holds one label only ({', '.join(counts) or 'none'}): a classifier needs two")
    if few := [f"{label} ({n})" for label, n in sorted(counts.items()) if n < FEW_EXAMPLES]:
        warnings.append(f"labels with fewer than {FEW_EXAMPLES} examples, too few to learn and score: {', '.join(few)}")
    return dict(sorted(counts.items()))


def _splits(df: pd.DataFrame, warnings: list[str]) -> tuple[str | None, dict[str, str]]:
    """The file's `split` column where it names train and test (and perhaps validation); else none."""
    every = {s: s for s in SPLIT_VALUES}
    if "split" not in df.columns:
        return None, every
    present = set(df["split"].astype("string").fillna("").str.strip())
    if present <= set(SPLIT_VALUES) and {"train", "test"} <= present:
        return "split", {s: s for s in SPLIT_VALUES if s in present}
    warnings.append(f"column 'split' holds {sorted(present)}, not train/validation/test: a stratified split is made")
    return None, every


def _id_column(df: pd.DataFrame) -> str | None:
    if "id" not in df.columns:
        return None
    ids = df["id"].astype("string").fillna("").str.strip()
    return "id" if ids.is_unique and not (ids == "").any() else None


def _measure(df: pd.DataFrame, texts: list[str], pair_column: str | None) -> Windowing:
    """Token lengths of a seeded sample of the rows with text, read as the model reads them."""
    import numpy as np

    from pipeline.models.runtime import load_tokenizer

    rows = [i for i, t in enumerate(texts) if t]
    rng = np.random.default_rng(SEED)
    sample = sorted(rng.choice(rows, SAMPLE_ROWS, replace=False).tolist()) if len(rows) > SAMPLE_ROWS else rows
    if not sample:
        raise PipelineError("no row has text: check --text-column")
    tokenizer = load_tokenizer("minilm")
    sampled = [texts[i] for i in sample]
    args: tuple[Any, ...] = (sampled,)
    if pair_column:
        args = (join_text_columns(df.iloc[sample], [pair_column]), sampled)
    lengths = np.asarray([len(ids) for ids in tokenizer(*args, add_special_tokens=True)["input_ids"]])
    p90 = float(np.percentile(lengths, 90))
    max_length = next((size for size in WINDOW_SIZES if p90 <= size), WINDOW_SIZES[-1])
    return Windowing(
        max_length=max_length,
        stride=max_length // 4,  # under half a window, as the config requires
        max_windows=1 if p90 <= WINDOW_SIZES[-1] else LONG_TEXT_WINDOWS,
        median=float(np.median(lengths)),
        p90=round(p90, 1),
        max=int(lengths.max()),
        share_over_window=round(float((lengths > max_length).mean()), 3),
    )


def _source(data: Path) -> str:
    """The data path as the config reads it: relative to the project root when it lies under it."""
    path = data.expanduser().resolve()
    try:
        return path.relative_to(project_root().resolve()).as_posix()
    except ValueError:
        return str(path)


def _shown(path: Path) -> str:
    try:
        shown = str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = str(path)
    return shlex.quote(shown)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _header(task: str, source: str, rows: int, counts: dict[str, int], w: Windowing, commands: list[str]) -> str:
    shown = [f"{label} {n}" for label, n in list(counts.items())[:20]]
    more = f", and {len(counts) - 20} more" if len(counts) > 20 else ""
    lines = [
        f"Task {task}: written by `pipeline init` from {source} on {datetime.date.today().isoformat()}.",
        f"{rows} rows; articles per label: {', '.join(shown)}{more}.",
        f"Tokens per article (a sample, special tokens and pair included): median {w.median:.0f}, "
        f"90th percentile {w.p90:.0f}, longest {w.max}; {w.share_over_window:.0%} over one "
        f"{w.max_length}-token window.",
        f"Next: `{commands[0]}`, then `{commands[1]}` (scores: `{commands[2]}`).",
    ]
    return "\n".join(f"# {_one_line(line)}" for line in lines)


def _yaml_value(value: Any) -> str:
    """One value as a YAML flow scalar or list, quoted where it has to be."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 20, sort_keys=False)
    text = text.strip()
    text = text.removesuffix("\n...").strip()
    return text if "\n" not in text else json.dumps(value, ensure_ascii=False)


def _render(header: str, values: dict[str, Any]) -> str:
    """The template with each `$name` replaced by its value, the comment after it kept in its column."""
    lines = []
    for line in Path(__file__).with_name("config_template.yaml").read_text(encoding="utf-8").splitlines():
        if m := PLACEHOLDER.search(line):
            value = header if m[1] == "header" else _yaml_value(values[m[1]])
            rest = line[m.end() :]
            gap = " " * max(2, COMMENT_COLUMN - m.start() - len(value)) if rest else ""
            line = line[: m.start()] + value + gap + rest
        lines.append(line)
    return "\n".join(lines) + "\n"


def _write_checked(path: Path, text: str) -> None:
    """Write `text` beside `path`, check that it loads as a config, then move it in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        load_config(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

"""Progress of a long stage on stderr: a bar on a terminal, a line every ~10 s otherwise, nothing when quiet.

A stage opens `reporting(...)` around its loop and calls `advance(n)`; the predictor calls
`advance_texts(n)` as it scores chunks, which counts only where the stage asked for it
(`counts_texts=True`: evaluate and zero-shot score one list of texts in a single call). Nothing
shows before `SHOW_AFTER_S`, so a short command stays silent; stdout is left to results (`--json`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

SHOW_AFTER_S = 2.0
LINE_EVERY_S = 10.0
QUIET_ENV = "PIPELINE_QUIET"  # 1: no progress anywhere (the CLI's --quiet sets it)


class Reporter:
    """The progress of one stage: counts, and when and how to show them."""

    def __init__(self, description: str, total: int | None, unit: str, counts_texts: bool, stream: TextIO) -> None:
        self.description, self.total, self.unit, self.counts_texts = description, total, unit, counts_texts
        self.stream = stream
        self.done = 0
        self.started = self.last_line = time.monotonic()
        self.lines = 0
        self.tty = stream.isatty()
        self.bar: Any = None
        self.task: Any = None

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.started < SHOW_AFTER_S:
            return
        if self.tty:
            self._update_bar()
        elif now - self.last_line >= LINE_EVERY_S:
            self.last_line = now
            self._line()

    def _update_bar(self) -> None:
        if self.bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn(self.description),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=self.total)
        self.bar.update(self.task, completed=self.done)

    def _line(self) -> None:
        elapsed = time.monotonic() - self.started
        of = f"/{self.total:,}" if self.total else ""
        rate = self.done / elapsed if elapsed > 0 else 0.0
        print(
            f"{self.description}: {self.done:,}{of} {self.unit}, {rate:.1f}/s, {elapsed:.0f} s",
            file=self.stream,
            flush=True,
        )
        self.lines += 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        elif self.lines:  # a log reader sees where it ended
            self._line()


_active: ContextVar[Reporter | None] = ContextVar("pipeline_progress", default=None)


def quiet() -> bool:
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


@contextmanager
def reporting(
    description: str, total: int | None = None, unit: str = "articles", counts_texts: bool = False
) -> Iterator[Reporter | None]:
    """Show the progress of the enclosed loop; inside another stage's reporting, the outer one counts."""
    if quiet() or _active.get() is not None:
        yield None
        return
    reporter = Reporter(description, total, unit, counts_texts, sys.stderr)
    token = _active.set(reporter)
    try:
        yield reporter
    finally:
        _active.reset(token)
        reporter.close()


def advance(n: int = 1) -> None:
    reporter = _active.get()
    if reporter is not None:
        reporter.advance(n)


def advance_texts(n: int) -> None:
    """The predictor scored `n` more texts: counted where the stage reports texts, not its own items."""
    reporter = _active.get()
    if reporter is not None and reporter.counts_texts:
        reporter.advance(n)


@contextmanager
def aside() -> Iterator[None]:
    """Work inside a stage that its count leaves out (an export's check after the scoring)."""
    token = _active.set(None)
    try:
        yield
    finally:
        _active.reset(token)

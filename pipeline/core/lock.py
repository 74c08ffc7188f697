"""A lock file that lets one process at a time do a job (one training of a task): `hold_lock`.

The file (`models/topic.lock`) holds its holder's pid, host and start time as JSON, for the message
another process gets and for the note when it takes over a lock that a killed process left behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pipeline.core.errors import PipelineError


@dataclass
class Holder:
    """Who holds (or held) a lock, as its file says."""

    pid: int | None = None
    host: str | None = None
    since: str | None = None

    def describe(self) -> str:
        if self.pid is None:
            return "it is just starting"
        where = "" if self.host in (None, socket.gethostname()) else f" on {self.host}"
        return f"pid {self.pid}{where}, since {self.since}"


@contextmanager
def hold_lock(path: Path, what: str, advice: str) -> Iterator[None]:
    """Hold the lock file `path` for the block; removed at its end, also when it raises. A second
    process fails at once with "another WHAT is running (pid N, since T); wait for it to end, ADVICE"."""
    fd = _acquire(path, what, advice)
    try:
        yield
    finally:
        _release(path, fd)


def _acquire(path: Path, what: str, advice: str) -> int:
    # flock rather than creating the file with O_EXCL: the kernel lets go of a flock when its process
    # dies, even by kill -9, so a lock left behind is told from a held one without trusting a pid
    # (pids are reused) and without two processes racing to take over the same stale file
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd, wait=True)
            os.close(fd)
            raise PipelineError(
                f"another {what} is running ({holder.describe()}); wait for it to end, {advice}"
            ) from None
        except OSError as err:
            os.close(fd)
            raise PipelineError(
                f"cannot lock {path} ({err.strerror}): its file system does not support locks"
            ) from None
        if _is_at(fd, path):
            break
        # the holder removed the file as it let go, after this process opened it: open the new one
        os.close(fd)
    else:
        raise PipelineError(f"cannot lock {path}: it is removed and made again faster than it can be locked")
    left = _read_holder(fd, wait=False)
    if left.pid is not None:
        print(
            f"note: {path} was left by a {what} that ended without removing it ({left.describe()}); taken over",
            file=sys.stderr,
        )
    mine = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now().astimezone().isoformat("T", "seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(mine) + "\n").encode(), 0)
    os.fsync(fd)
    return fd


def _release(path: Path, fd: int) -> None:
    try:
        # removed while still locked, so that no process locks this file just before it goes
        if _is_at(fd, path):
            path.unlink()
    finally:
        os.close(fd)


def _is_at(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _read_holder(fd: int, wait: bool) -> Holder:
    """The holder the file names; with `wait`, up to a second for a holder that has locked it but not
    yet written itself into it."""
    for _ in range(20 if wait else 1):
        raw = os.pread(fd, 4096, 0)
        if raw.strip():
            try:
                held = json.loads(raw)
                return Holder(int(held["pid"]), str(held.get("host")), str(held.get("since")))
            except (ValueError, KeyError, TypeError):
                return Holder()
        if wait:
            time.sleep(0.05)
    return Holder()

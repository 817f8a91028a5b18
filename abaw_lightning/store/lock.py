"""One writer per stage run: an OS file lock held for the life of the process that trains it.

The operating system releases the lock when the process ends, however it ends (kill -9 included),
so a lock left by a dead process never blocks. A second process that needs the same run (the same
command in two terminals, two sweep jobs sharing a teacher, a requeued SLURM task beside its old
one) waits for it, says whom it waits for, and then reuses the finished run or resumes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

LOCK = ".lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads((path.read_text().splitlines() or ["{}"])[0])
    except (OSError, ValueError, AttributeError):
        return "another process"
    return f"process {info.get('pid')} on {info.get('host')} (since {info.get('since')})"


@contextmanager
def run_lock(folder: Path, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the writer lock of a run folder; if another live process holds it, report it through
    ``on_wait`` and wait until it is released. A folder its holder removed meanwhile (a run that
    failed before it started, see `discard_unstarted`) is made again and locked afresh."""
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK
        with open(path, "a+") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait(_holder(path))
                    on_wait = None
                fcntl.flock(file, fcntl.LOCK_EX)
            if not _same_file(file, path):
                continue
            file.seek(0)
            file.truncate()
            since = time.strftime("%Y-%m-%d %H:%M:%S")
            file.write(
                json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since})
            )
            file.write("\n" + " ".join(sys.argv) + "\n")
            file.flush()
            try:
                yield
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)
            return


def _same_file(file: IO, path: Path) -> bool:
    """Whether the open lock file is still the one at ``path`` (not removed or replaced)."""
    try:
        return os.fstat(file.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def lock_holder(folder: Path) -> str | None:
    """Who holds a run folder's writer lock now (a process training it), or None."""
    path = folder / LOCK
    try:
        file = open(path)  # noqa: SIM115 - closed below, after the probe
    except OSError:
        return None
    with file:
        try:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(path)
        fcntl.flock(file, fcntl.LOCK_UN)
        return None


@contextmanager
def lock_if_free(folder: Path) -> Iterator[bool]:
    """Hold a run folder's writer lock if no process holds it (True), without waiting."""
    try:
        file = open(folder / LOCK, "a+")  # noqa: SIM115 - closed below
    except OSError:
        yield False
        return
    with file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def discard_unstarted(folder: Path, keep: Callable[[], bool]) -> None:
    """Remove, while holding its lock, a run folder whose run never started (``keep()`` false:
    nothing but the lock and ids in it), so a failed job leaves nothing that reads as a run."""
    if keep() or not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.is_file():
            entry.unlink()
    with contextlib.suppress(OSError):  # something else in it: leave it
        folder.rmdir()

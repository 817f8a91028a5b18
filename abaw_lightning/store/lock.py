"""One writer per stage run: an OS file lock held for the life of the process that trains it.

The operating system releases the lock when the process ends, however it ends (kill -9 included),
so a lock left by a dead process never blocks. A second process that needs the same run (the same
command in two terminals, two sweep jobs sharing a teacher, a requeued SLURM task beside its old
one) waits for it, says whom it waits for, and then reuses the finished run or resumes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
    ``on_wait`` and wait until it is released."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    with open(path, "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(_holder(path))
            fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        file.truncate()
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}))
        file.write("\n" + " ".join(sys.argv) + "\n")
        file.flush()
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)

"""A function over many files in a process pool, with a progress bar (cropping, frame checks)."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import cv2
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_CHUNK = 256
"""Items per task sent to a worker, at most (fewer when there are few items per worker)."""
REFRESH_SECONDS = 0.1
"""Time between progress-bar redraws."""


def _quiet_opencv() -> None:
    """Pool worker setup: one OpenCV thread per process, no decoder warnings (failures are
    counted; the warnings would only garble the progress bar)."""
    cv2.setNumThreads(1)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def map_with_progress(
    function: Callable[[Item], Result], items: Sequence[Item], workers: int, label: str
) -> list[Result]:
    """`[function(item) for item in items]`, by `workers` spawned processes (in this one when
    workers <= 1), with a progress bar. `function` must be importable (a module-level function)."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    # refreshed from this loop, not by rich's thread (whose shutdown costs ~0.1 s per bar)
    with Progress(*columns, auto_refresh=False) as progress:
        task = progress.add_task(label, total=len(items))

        def collect(results: Iterable[Result]) -> list[Result]:
            collected, shown = [], time.monotonic()
            for result in results:
                collected.append(result)
                if time.monotonic() - shown >= REFRESH_SECONDS:
                    progress.update(task, completed=len(collected), refresh=True)
                    shown = time.monotonic()
            progress.update(task, completed=len(collected), refresh=True)
            return collected

        if workers <= 1 or len(items) < 2:
            previous = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
            try:
                return collect(map(function, items))
            finally:
                cv2.utils.logging.setLogLevel(previous)
        context = multiprocessing.get_context("spawn")
        processes = min(workers, len(items))
        with context.Pool(processes, initializer=_quiet_opencv) as pool:
            chunk = max(1, min(MAX_CHUNK, len(items) // (4 * processes)))
            return collect(pool.imap(function, items, chunksize=chunk))

"""`abaw synth`: the four datasets in their real on-disk formats, with drawn faces that carry a
learnable signal, and `synth.json` recording every planted quirk and the expected counts."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from abaw_lightning.data.synth import afew_va, affectnet, affwild2, expw
from abaw_lightning.data.synth.output import write_text
from abaw_lightning.data.synth.scales import SCALES
from abaw_lightning.errors import UserError

DATASETS = ("affwild2", "expw", "afew_va", "affectnet")


RECORD = "synth.json"


def _clear(out: Path) -> None:
    """Make `out` ready: new, empty, or a previous synth output (whose datasets are replaced)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder for --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / RECORD).is_file():
            raise UserError(
                f"{out} is not empty and holds no {RECORD}; give a new or empty folder for --out"
            )
        for name in (*DATASETS, RECORD):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / RECORD).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class Step:
    """One long step of `generate`: its jobs, each with what it adds to the step's bar."""

    label: str
    unit: str
    jobs: list[tuple[int, Callable[[], dict]]]


def _call(indexed: tuple[int, Callable[[], dict]]) -> tuple[int, dict]:
    index, job = indexed
    return index, job()


def _run_steps(steps: list[Step], workers: int) -> list[list[dict]]:
    """Run the jobs of every step in a process pool, with one progress bar per step counting its
    frames or images (left on screen; printed once done when the output is not a terminal);
    return each step's results in job order."""
    columns = (
        TextColumn("synth {task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
    )
    jobs = [(number, weight, job) for number, step in enumerate(steps) for weight, job in step.jobs]
    calls = [(index, job) for index, (_, _, job) in enumerate(jobs)]
    results: list[dict | None] = [None] * len(jobs)
    with Progress(*columns) as progress, contextlib.ExitStack() as stack:
        bars = [  # each clock starts with its step's first result
            progress.add_task(
                step.label, total=sum(w for w, _ in step.jobs), unit=step.unit, start=False
            )
            for step in steps
        ]
        if workers <= 1:
            done = map(_call, calls)
        else:
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers))
            done = pool.imap_unordered(_call, calls)
        for index, result in done:
            number, weight, _ = jobs[index]
            results[index] = result
            progress.start_task(bars[number])
            progress.advance(bars[number], weight)
    return [
        [result for (number, _, _), result in zip(jobs, results, strict=True) if number == step]
        for step in range(len(steps))
    ]


def generate(
    out: Path | str, seed: int = 0, scale: str = "small", workers: int | None = None
) -> dict:
    """Write `out/{affwild2,expw,afew_va,affectnet}` and `out/synth.json`; return the record."""
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; use one of {', '.join(sorted(SCALES))}")
    out = Path(out)
    _clear(out)
    sizes = SCALES[scale]
    rng = np.random.default_rng([seed, 0])
    roots = {name: out / name for name in DATASETS}
    videos = affwild2.plan_videos(rng, sizes)
    tests = affwild2.plan_tests(rng, sizes, {v.stem for v in videos})
    images = expw.plan_images(sizes)
    clips = afew_va.plan_clips(rng, sizes)
    rows = affectnet.plan_rows(rng, sizes)
    steps = [
        Step(
            "affwild2 videos",
            "frames",
            [
                (
                    p.frames + p.extra_jpgs,
                    partial(affwild2.render_video, roots["affwild2"], seed, p),
                )
                for p in videos
            ],
        ),
        Step(
            "affwild2 test videos",
            "frames",
            [
                (p.video_frames, partial(affwild2.render_test_video, roots["affwild2"], seed, p))
                for p in tests
            ],
        ),
        Step(
            "afew_va clips",
            "frames",
            [(p.frames, partial(afew_va.render_clip, roots["afew_va"], seed, p)) for p in clips],
        ),
        Step(
            "expw images",
            "images",
            [(1, partial(expw.render_image, roots["expw"], seed, p)) for p in images],
        ),
        Step(
            "affectnet images",
            "images",
            [(1, partial(affectnet.render_row, roots["affectnet"], seed, p)) for p in rows],
        ),
    ]
    video_results, _, _, image_results, row_results = _run_steps(
        steps, workers or os.cpu_count() or 1
    )
    summary = {
        "seed": seed,
        "scale": scale,
        "notes": {
            "frames": "Aff-Wild2 frames are 1-based jpg numbers; data line i of an annotation "
            "file is frame i and file line i + 1 (the header is line 1)",
            "class_counts": "in Aff-Wild2 order: Neutral, Anger, Disgust, Fear, Happiness, "
            "Sadness, Surprise",
            "kept": "labelled (not -1 / -5 / -2) and with a readable image",
            "lines": "1-based file line numbers",
        },
        "affwild2": affwild2.record(roots["affwild2"], videos, video_results, tests),
        "expw": expw.record(roots["expw"], image_results),
        "afew_va": afew_va.record(clips),
        "affectnet": affectnet.record(roots["affectnet"], rows, row_results),
    }
    write_text(out / RECORD, json.dumps(summary, indent=2) + "\n")
    return summary

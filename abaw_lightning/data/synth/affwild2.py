"""Aff-Wild2 writer: annotation files, 112x112 aligned crops and a small test set with videos."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from abaw_lightning.data.synth.faces import EXPRESSIONS, Affect, random_identity
from abaw_lightning.data.synth.output import job_rng, lines_text, write_image, write_text
from abaw_lightning.data.synth.scales import GROUPS, SPLITS, Scale
from abaw_lightning.data.synth.scenes import (
    CROP,
    STRONG,
    background,
    draw_frame,
    finish,
    render_crop,
)
from abaw_lightning.data.synth.trajectories import expression_segments, slow_waves, va_trajectory

SPLIT_DIRS = {"train": "Train_Set", "validation": "Validation_Set"}
EXPR_HEADER = ",".join(EXPRESSIONS)
VA_HEADER = "valence,arousal"
RESOLUTIONS = ("640x360", "1280x720", "480x360", "960x540")
TEST_SCENE = (256, 192)
RARE_FIRST = (3, 2, 1, 6, 5, 4, 0)
"""Class of the first segment of the k-th video of an EXPR split: every split covers every class."""


@dataclass(frozen=True)
class VideoPlan:
    """One annotated stem and the quirks planted in it. Frames are 1-based jpg numbers."""

    index: int
    stem: str
    group: str
    frames: int
    first_class: int = 0
    extra_jpgs: int = 0
    missing_jpgs: tuple[int, ...] = ()
    expr_unannotated: tuple[int, ...] = ()
    va_unannotated: tuple[tuple[int, str], ...] = ()
    expr_newline: bool = True
    va_newline: bool = True
    va_blank_line: bool = False

    @property
    def expr_split(self) -> str | None:
        return SPLITS[self.group][0]

    @property
    def va_split(self) -> str | None:
        return SPLITS[self.group][1]


@dataclass(frozen=True)
class TestPlan:
    """One test stem: jpgs 1..`jpgs` minus `missing_jpgs`; the video has `video_frames` frames."""

    index: int
    stem: str
    jpgs: int
    video_frames: int
    missing_jpgs: tuple[int, ...] = field(default=())


def plan_videos(rng: np.random.Generator, scale: Scale) -> list[VideoPlan]:
    """Stems, lengths, roles and planted quirks, in a fixed order (group by group)."""
    groups = [g for g, count in zip(GROUPS, scale.groups, strict=True) for _ in range(count)]
    lengths = rng.integers(scale.frames[0], scale.frames[1] + 1, len(groups))
    lengths[2] = lengths[1]
    numbers = np.sort(rng.choice(np.arange(1, 400), len(groups), replace=False))
    stems = [f"{n}-30-{RESOLUTIONS[n % len(RESOLUTIONS)]}" for n in numbers]
    stems[1], stems[2] = stems[0] + "_left", stems[0] + "_right"
    first = {g: groups.index(g) for g in GROUPS}
    last = {g: len(groups) - 1 - groups[::-1].index(g) for g in GROUPS}
    expr_rank: dict[str, int] = {}
    plans = []
    for i, (group, stem, n) in enumerate(zip(groups, stems, lengths, strict=True)):
        n = int(n)
        split = SPLITS[group][0] or "none"
        expr_rank[split] = expr_rank.get(split, -1) + 1
        quirks: dict = {
            "expr_newline": i % 3 != 1,
            "va_newline": i % 3 != 2,
            "first_class": RARE_FIRST[expr_rank[split] % 7],
        }
        if i == first["both_train"]:
            quirks["missing_jpgs"] = (n // 2 - 1, n // 2, n // 2 + 1)
            quirks["va_blank_line"] = True
        if i == first["both_validation"]:
            quirks["missing_jpgs"] = (n,)
        if i == 1:
            quirks["extra_jpgs"] = 3
        if i == last["va_train"]:
            quirks["extra_jpgs"] = 2
        if i in (first["expr_train"], first["expr_validation"]):
            start, length = n // 3, max(3, n // 15)
            quirks["expr_unannotated"] = tuple(range(start, start + length))
        if i in (first["va_train"], first["va_validation"]):
            texts = ("-5,-5", "-5.0,-5.0", "-5.000,-5.000", "0.312,-5")
            quirks["va_unannotated"] = tuple((n // 2 + k, t) for k, t in enumerate(texts))
        plans.append(VideoPlan(index=i, stem=stem, group=group, frames=n, **quirks))
    return plans


def plan_tests(rng: np.random.Generator, scale: Scale, taken: set[str]) -> list[TestPlan]:
    """Test stems (no annotations): a gap of missing crops in one, face-less frames at the end of
    another's video."""
    plans = []
    numbers = [n for n in rng.permutation(np.arange(400, 800)) if f"{n}-25-640x480" not in taken]
    for i in range(scale.test_videos):
        jpgs = int(rng.integers(scale.frames[0], scale.frames[1] + 1))
        missing = (jpgs // 3, jpgs // 3 + 1) if i == 0 else ()
        video_frames = jpgs + (5 if i == 1 else 0)
        plans.append(TestPlan(i, f"{numbers[i]}-25-640x480", jpgs, video_frames, missing))
    return plans


def _labels(rng: np.random.Generator, total: int, first: int) -> tuple[np.ndarray, np.ndarray]:
    expr = expression_segments(rng, total, first=first)
    return expr, va_trajectory(rng, expr)


def render_video(root: Path, seed: int, plan: VideoPlan) -> dict:
    """Write the crops and the annotation files of one stem; return its frame labels."""
    rng = job_rng(seed, "affwild2", plan.index)
    total = plan.frames + plan.extra_jpgs
    identity = random_identity(rng)
    expr, va = _labels(rng, total, plan.first_class)
    backdrop = background(rng, CROP, CROP)
    folder = root / "cropped_aligned" / plan.stem
    for i in range(total):
        image = render_crop(rng, identity, Affect(int(expr[i]), *va[i]), backdrop)
        if i + 1 not in plan.missing_jpgs:
            write_image(folder / f"{i + 1:05d}.jpg", image)
    expr_lines = [str(int(c)) for c in expr[: plan.frames]]
    va_lines = [f"{v:.3f},{a:.3f}" for v, a in va[: plan.frames]]
    for frame in plan.expr_unannotated:
        expr_lines[frame - 1] = "-1"
    for frame, text in plan.va_unannotated:
        va_lines[frame - 1] = text
    annotations = root / "annotations"
    if plan.expr_split:
        write_text(
            annotations / "EXPR_Set" / SPLIT_DIRS[plan.expr_split] / f"{plan.stem}.txt",
            lines_text([EXPR_HEADER, *expr_lines], plan.expr_newline),
        )
    if plan.va_split:
        write_text(
            annotations / "VA_Set" / SPLIT_DIRS[plan.va_split] / f"{plan.stem}.txt",
            lines_text([VA_HEADER, *va_lines], plan.va_newline, plan.va_blank_line),
        )
    expr_out = [int(c) for c in expr[: plan.frames]]
    for frame in plan.expr_unannotated:
        expr_out[frame - 1] = -1
    va_out = [[float(v), float(a)] for v, a in va[: plan.frames]]
    for frame, _ in plan.va_unannotated:
        va_out[frame - 1] = None
    return {"stem": plan.stem, "expr": expr_out, "va": va_out}


def render_test_video(root: Path, seed: int, plan: TestPlan) -> dict:
    """Write the full-scene mp4 of a test stem and its aligned crops (cut from the same frames)."""
    rng = job_rng(seed, "affwild2_test", plan.index)
    width, height = TEST_SCENE
    identity = random_identity(rng)
    expr, va = _labels(rng, plan.video_frames, plan.index % 7)
    backdrop = background(rng, height, width)
    xs = np.round((width - CROP) / 2 + slow_waves(rng, plan.video_frames, (width - CROP) / 2 - 4))
    ys = np.round((height - CROP) / 2 + slow_waves(rng, plan.video_frames, (height - CROP) / 2 - 4))
    video_path = root / "videos" / "batch1" / f"{plan.stem}.mp4"
    video_path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
    try:
        for i in range(plan.video_frames):
            canvas = backdrop.copy()
            x, y = int(xs[i]), int(ys[i])
            if i < plan.jpgs:
                affect = Affect(int(expr[i]), *va[i])
                draw_frame(canvas, rng, identity, affect, (x, y, float(CROP)), STRONG)
            frame = finish(canvas, rng, STRONG)
            writer.write(frame)
            if i < plan.jpgs and i + 1 not in plan.missing_jpgs:
                crop = frame[y : y + CROP, x : x + CROP]
                write_image(root / "cropped_aligned" / plan.stem / f"{i + 1:05d}.jpg", crop)
    finally:
        writer.release()
    return {"stem": plan.stem}


def _count(plans: list[VideoPlan], results: list[dict], task: str, split: str) -> dict:
    """Videos, lines, labelled lines and kept frames (labelled and with a jpg) of a task split."""
    videos = lines = labelled = kept = 0
    classes = [0] * len(EXPRESSIONS)
    for plan, result in zip(plans, results, strict=True):
        if (plan.expr_split if task == "expr" else plan.va_split) != split:
            continue
        videos += 1
        lines += plan.frames
        for frame, label in enumerate(result[task], start=1):
            if label is None or label == -1:
                continue
            labelled += 1
            if frame not in plan.missing_jpgs:
                kept += 1
                if task == "expr":
                    classes[label] += 1
    counts = {"videos": videos, "lines": lines, "labelled": labelled, "kept": kept}
    if task == "expr":
        counts["class_counts"] = classes
    return counts


def _shared(plans: list[VideoPlan], results: list[dict], task: str, other_split: str) -> int:
    """Kept train frames of `task` whose same frame has the other task's label in `other_split`."""
    other = "va" if task == "expr" else "expr"
    total = 0
    for plan, result in zip(plans, results, strict=True):
        splits = {"expr": plan.expr_split, "va": plan.va_split}
        if splits[task] != "train" or splits[other] != other_split:
            continue
        for frame in range(1, plan.frames + 1):
            own, theirs = result[task][frame - 1], result[other][frame - 1]
            if frame in plan.missing_jpgs or own in (None, -1) or theirs in (None, -1):
                continue
            total += 1
    return total


def record(root: Path, plans: list[VideoPlan], results: list[dict], tests: list[TestPlan]) -> dict:
    """Write the test lists and describe what was written (quirks with locations, counts)."""
    expr_list = [t.stem for t in tests[: max(1, len(tests) - 1)]]
    va_list = [t.stem for t in tests[1:]]
    write_text(root / "test_set_Expr_Challenge.txt", lines_text(expr_list))
    write_text(root / "test_set_VA_Challenge.txt", lines_text(va_list))

    def files(task: str, keep) -> list[str]:
        folder = {"expr": "EXPR_Set", "va": "VA_Set"}[task]
        return [
            f"annotations/{folder}/{SPLIT_DIRS[split]}/{p.stem}.txt"
            for p in plans
            if (split := p.expr_split if task == "expr" else p.va_split) and keep(p)
        ]

    by_group = {g: [p.stem for p in plans if p.group == g] for g in GROUPS}
    quirks = {
        "left_right": {"plain": plans[0].stem, "suffixed": [plans[1].stem, plans[2].stem]},
        "expr_unannotated": [
            {
                "stem": p.stem,
                "frames": list(p.expr_unannotated),
                "lines": [f + 1 for f in p.expr_unannotated],
            }
            for p in plans
            if p.expr_unannotated
        ],
        "va_unannotated": [
            {
                "stem": p.stem,
                "frames": [f for f, _ in p.va_unannotated],
                "lines": [f + 1 for f, _ in p.va_unannotated],
                "texts": [t for _, t in p.va_unannotated],
            }
            for p in plans
            if p.va_unannotated
        ],
        "missing_jpgs": [
            {"stem": p.stem, "frames": list(p.missing_jpgs)} for p in plans if p.missing_jpgs
        ],
        "extra_jpgs": [
            {"stem": p.stem, "frames": list(range(p.frames + 1, p.frames + p.extra_jpgs + 1))}
            for p in plans
            if p.extra_jpgs
        ],
        "no_trailing_newline": files("expr", lambda p: not p.expr_newline)
        + files("va", lambda p: not p.va_newline),
        "blank_trailing_line": files("va", lambda p: p.va_blank_line),
        "groups": by_group,
    }
    expected = {
        task: {split: _count(plans, results, task, split) for split in ("train", "validation")}
        for task in ("expr", "va")
    }
    expected["videos_with_both"] = sum(1 for p in plans if p.expr_split and p.va_split)
    expected["expr_train_with_shared_va"] = _shared(plans, results, "expr", "train")
    expected["va_train_with_shared_expr"] = _shared(plans, results, "va", "train")
    expected["expr_train_with_validation_va"] = _shared(plans, results, "expr", "validation")
    expected["va_train_with_validation_expr"] = _shared(plans, results, "va", "validation")
    test = {
        "expr_list": expr_list,
        "va_list": va_list,
        "videos": {
            t.stem: {
                "jpgs": t.jpgs - len(t.missing_jpgs),
                "missing_jpgs": list(t.missing_jpgs),
                "video_frames": t.video_frames,
                "frame_count": max(t.jpgs, t.video_frames),
            }
            for t in tests
        },
    }
    return {
        "videos": {
            p.stem: {"frames": p.frames, "expr_split": p.expr_split, "va_split": p.va_split}
            for p in plans
        },
        "quirks": quirks,
        "expected": expected,
        "test": test,
    }

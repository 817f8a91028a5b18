"""AFEW-VA writer: `NN/<clip>/00000.png ...` scene frames, `<clip>.json` with VA and landmarks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abaw_lightning.data.synth.faces import Affect, random_identity
from abaw_lightning.data.synth.output import job_rng, write_corrupt_image, write_image, write_text
from abaw_lightning.data.synth.scales import Scale
from abaw_lightning.data.synth.scenes import MILD, background, draw_frame, finish
from abaw_lightning.data.synth.trajectories import expression_segments, slow_waves, va_trajectory

SCENE = (240, 180)
ACTORS = ("Ada Stone", "Ben Rowe", "Cleo Marsh", "Dev Patel", "Eli Grant", "Fay Moreau")


@dataclass(frozen=True)
class ClipPlan:
    """One clip; `missing_in_json`: png without json entry; `corrupt`: undecodable png."""

    index: int
    clip: str
    frames: int
    missing_in_json: tuple[int, ...] = ()
    corrupt: tuple[int, ...] = ()

    @property
    def folder(self) -> str:
        """The release groups clips 001-050 in `01`, 051-100 in `02`, ..."""
        return f"{(int(self.clip) - 1) // 50 + 1:02d}"


def plan_clips(rng: np.random.Generator, scale: Scale) -> list[ClipPlan]:
    """Clip numbers spread over 001-600; clip 0 misses a json frame, clip 1 has a corrupt png."""
    numbers = np.sort(rng.choice(np.arange(1, 601), scale.afew_clips, replace=False))
    n = scale.afew_frames
    return [
        ClipPlan(
            index=i,
            clip=f"{number:03d}",
            frames=n,
            missing_in_json=(n // 2,) if i == 0 else (),
            corrupt=(n // 3,) if i == 1 else (),
        )
        for i, number in enumerate(numbers)
    ]


def render_clip(root: Path, seed: int, plan: ClipPlan) -> dict:
    """Write the frames and the json of one clip; return its per-frame labels."""
    rng = job_rng(seed, "afew_va", plan.index)
    width, height = SCENE
    identity = random_identity(rng)
    expr = expression_segments(rng, plan.frames, 8, 20)
    va = np.round(va_trajectory(rng, expr) * 10).astype(int) + 0
    backdrop = background(rng, height, width)
    size = float(rng.uniform(95, 120))
    xs = (width - size) / 2 + slow_waves(rng, plan.frames, (width - size) / 2 - 6, (20, 60))
    ys = (height - size) / 2 + slow_waves(rng, plan.frames, (height - size) / 2 - 4, (20, 60))
    angles = slow_waves(rng, plan.frames, 14.0, (20, 60))
    folder = root / plan.folder / plan.clip
    frames = {}
    for i in range(plan.frames):
        canvas = backdrop.copy()
        affect = Affect(int(expr[i]), va[i, 0] / 10, va[i, 1] / 10)
        box = (float(xs[i]), float(ys[i]), size)
        landmarks = draw_frame(canvas, rng, identity, affect, box, MILD, float(angles[i]))
        image = finish(canvas, rng, MILD)
        path = folder / f"{i:05d}.png"
        if i in plan.corrupt:
            write_corrupt_image(path, image)
        else:
            write_image(path, image)
        if i not in plan.missing_in_json:
            frames[f"{i:05d}"] = {
                "valence": int(va[i, 0]),
                "arousal": int(va[i, 1]),
                "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in landmarks],
            }
    content = {"actor": ACTORS[plan.index % len(ACTORS)], "video_id": plan.clip, "frames": frames}
    write_text(folder / f"{plan.clip}.json", json.dumps(content, indent=4) + "\n")
    return {"clip": plan.clip, "va": va.tolist()}


def record(plans: list[ClipPlan]) -> dict:
    """Quirk locations and the expected number of usable frames (in the json, png readable)."""
    return {
        "clips": {p.clip: {"folder": p.folder, "frames": p.frames} for p in plans},
        "quirks": {
            "missing_in_json": [
                {"clip": p.clip, "frames": [f"{f:05d}" for f in p.missing_in_json]}
                for p in plans
                if p.missing_in_json
            ],
            "corrupt_png": [f"{p.folder}/{p.clip}/{f:05d}.png" for p in plans for f in p.corrupt],
        },
        "expected": {
            "clips": len(plans),
            "json_frames": sum(p.frames - len(p.missing_in_json) for p in plans),
            "kept_frames": sum(p.frames - len(p.missing_in_json) - len(p.corrupt) for p in plans),
        },
    }

"""A prepared folder of realistic size for throughput runs, written in seconds on many cores.

The README's "Prepared dataset layout" without a manifest (hand-made tables, which training
accepts): Aff-Wild2 frames of 112x112 (one file per frame, hard links into a pool of distinct
JPEGs, so the feature cache sees every frame and the page cache holds the pool), square crops of
ExpW, AFEW-VA and AffectNet at their stored sizes (134-268 px, JPEG quality 95 as prepare writes
them), the three training parts with sampler weights and the four Aff-Wild2 tables. Every train
and validation frame carries both labels, so the GRU's three window parts are the same length.
Labels are random: throughput does not depend on them.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

CROP_SIZES = {"expw": (134, 180), "afew_va": (134, 268), "affectnet": (240, 268)}
"""Stored side range per cropped source: ExpW faces are small (most at prepare's 134 floor),
AffectNet faces large (most at its 268 cap), AFEW-VA in between. An assumption, not a census."""


@dataclass(frozen=True)
class Sizes:
    """How much to write: Aff-Wild2 videos and frames, distinct JPEGs, rows of each part."""

    train_videos: int = 24
    val_videos: int = 10
    frames_per_video: int = 600
    affwild2_side: int = 112
    distinct_frames: int = 3000
    distinct_crops: int = 800
    part_rows: int = 30000
    bench_tables: tuple[int, ...] = (512, 6000)
    """Frames of the extra tables `bench/frames_<n>` (the first n Aff-Wild2 frames): extraction
    runs of two lengths, whose difference is the steady-state rate."""


def _image(job: tuple[int, int, int, int]) -> bytes:
    """A smooth random face-sized image with some texture, JPEG-encoded (deterministic)."""
    seed, side, quality, coarse = job
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (coarse, coarse, 3), dtype=np.uint8)
    image = cv2.resize(low, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    image += rng.normal(0, 6, image.shape).astype(np.int16)
    encoded = cv2.imencode(
        ".jpg", np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )[1]
    return encoded.tobytes()


def _write_pool(folder: Path, jobs: list[tuple[int, int, int, int]], pool) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, data in enumerate(pool.map(_image, jobs, chunksize=64)):
        path = folder / f"{index:06d}.jpg"
        path.write_bytes(data)
        names.append(path.name)
    return names


def _labels(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    return {
        "expr": rng.integers(0, 7, rows).astype(np.int8),
        "valence": rng.uniform(-1, 1, rows).astype(np.float32),
        "arousal": rng.uniform(-1, 1, rows).astype(np.float32),
    }


def _frames(root: Path, pool: list[str], videos: list[str], frames: int, rng) -> pd.DataFrame:
    """One hard link per (video, frame) into the pool; the table sorted by (video, frame)."""
    images, video_column, frame_column = [], [], []
    for video in videos:
        (root / "affwild2_images" / video).mkdir(parents=True)
        for frame in range(1, frames + 1):
            image = f"affwild2_images/{video}/{frame:05d}.jpg"
            os.link(root / "pool" / pool[rng.integers(len(pool))], root / image)
            images.append(image)
            video_column.append(video)
            frame_column.append(frame)
    table = {"image": images, "source": "affwild2", "video": video_column, "frame": frame_column}
    return pd.DataFrame({**table, **_labels(rng, len(images))})


def _stills(source: str, names: list[str], rows: int, rng) -> pd.DataFrame:
    picks = rng.integers(len(names), size=rows)
    images = [f"crops/{source}/{names[i]}" for i in picks]
    table = {"image": images, "source": source, "video": "", "frame": -1}
    return pd.DataFrame({**table, **_labels(rng, rows)})


def _part(frames: pd.DataFrame, stills: pd.DataFrame | None, rows: int, rng) -> pd.DataFrame:
    """`rows` rows: Aff-Wild2 frames and stills mixed as in the real parts, with weights."""
    if stills is None:
        part = frames.sample(rows, replace=True, random_state=rng.integers(1 << 31))
    else:
        share = int(rows * 0.88)  # ~88% of the real expr and va parts are Aff-Wild2 frames
        part = pd.concat(
            [frames.sample(share, replace=True, random_state=rng.integers(1 << 31)), stills],
            ignore_index=True,
        ).head(rows)
    part = part.reset_index(drop=True)
    part["weight"] = rng.uniform(0.1, 1.0, len(part))
    return part


def write_prepared(root: Path, sizes: Sizes, workers: int | None = None, seed: int = 0) -> dict:
    """Write the prepared folder `root` (must not exist) and describe what it holds."""
    root = Path(root)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    crops = {}
    with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        side = sizes.affwild2_side
        jobs = [(seed * 7919 + i, side, 90, 20) for i in range(sizes.distinct_frames)]
        frame_pool = _write_pool(root / "pool", jobs, pool)
        for index, (source, (low, high)) in enumerate(CROP_SIZES.items()):
            sides = rng.integers(low, high + 1, sizes.distinct_crops)
            base = (index + 1) * 1_000_003
            jobs = [(base + i, int(s), 95, 16) for i, s in enumerate(sides)]
            crops[source] = _write_pool(root / "crops" / source, jobs, pool)
    videos = [f"{i:03d}" for i in range(sizes.train_videos + sizes.val_videos)]
    train = _frames(root, frame_pool, videos[: sizes.train_videos], sizes.frames_per_video, rng)
    val = _frames(root, frame_pool, videos[sizes.train_videos :], sizes.frames_per_video, rng)
    rows = sizes.part_rows
    stills = {source: _stills(source, names, rows, rng) for source, names in crops.items()}
    tables = {
        "parts/expr": _part(train, stills["expw"].head(rows - int(rows * 0.88)), rows, rng),
        "parts/va": _part(train, stills["afew_va"].head(rows - int(rows * 0.88)), rows, rng),
        "parts/expr_va": stills["affectnet"].assign(weight=rng.uniform(0.1, 1.0, rows)),
        "affwild2/train_expr": train,
        "affwild2/train_va": train,
        "affwild2/val_expr": val,
        "affwild2/val_va": val,
    }
    every_frame = pd.concat([train, val], ignore_index=True)
    for frames in sizes.bench_tables:
        tables[f"bench/frames_{frames}"] = every_frame.head(frames)
    for name, table in tables.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(root / f"{name}.parquet", index=False)
    kilobytes = {
        "affwild2": _mean_kb(root / "pool"),
        **{source: _mean_kb(root / "crops" / source) for source in crops},
    }
    return {
        "sizes": asdict(sizes),
        "crop_sides": {source: list(bounds) for source, bounds in CROP_SIZES.items()},
        "mean_jpeg_kb": kilobytes,
        "rows": {name: len(table) for name, table in tables.items()},
    }


def _mean_kb(folder: Path) -> float:
    files = list(folder.iterdir())
    return round(sum(f.stat().st_size for f in files) / len(files) / 1e3, 2)

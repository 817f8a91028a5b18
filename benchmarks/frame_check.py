"""Cost of `abaw prepare`'s Aff-Wild2 frame check (every kept frame: markers + a 1/8-scale decode).

Writes `--frames` 112x112 JPEGs like Aff-Wild2's cropped_aligned (the synthetic generator's
crops), then times the check through the same pool and progress bar as prepare, at each
`--workers`, interleaved (A B A B ...), `--repeats` times; prints the median and the spread per
frame and the time this gives for the ~2.6 million frames of the real data. Files are in the page
cache after the first pass: this is the CPU cost, the disk's read time comes on top.

    .venv/bin/python benchmarks/frame_check.py --frames 20000 --workers 1 2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from abaw_lightning.data.ingest.image_files import frame_problem
from abaw_lightning.data.ingest.pool import map_with_progress
from abaw_lightning.data.synth.faces import Affect, random_identity
from abaw_lightning.data.synth.scenes import CROP, background, render_crop

REAL_FRAMES = 2_600_000


def write_frames(folder: Path, count: int, distinct: int = 200) -> list[str]:
    """`count` files, copies of `distinct` rendered 112x112 face crops (JPEG quality 92)."""
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(distinct):
        backdrop = background(rng, CROP, CROP)
        image = render_crop(rng, random_identity(rng), Affect(0, 0.0, 0.0), backdrop)
        encoded.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes())
    paths = []
    for index in range(count):
        path = folder / f"{index // 1000:03d}" / f"{index % 1000 + 1:05d}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encoded[index % distinct])
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = write_frames(Path(folder), args.frames)
        size = sum(Path(p).stat().st_size for p in paths[:200]) / 200
        map_with_progress(frame_problem, paths, 1, "warm-up (page cache)")
        times: dict[int, list[float]] = {w: [] for w in args.workers}
        for _ in range(args.repeats):
            for workers in args.workers:
                start = time.perf_counter()
                problems = map_with_progress(frame_problem, paths, workers, f"{workers} workers")
                times[workers].append(time.perf_counter() - start)
                assert not any(problems)
    result = {"frames": args.frames, "mean_file_bytes": round(size), "workers": {}}
    for workers, seconds in times.items():
        per_frame = [s / args.frames * 1e6 for s in seconds]
        median = statistics.median(per_frame)
        result["workers"][workers] = {
            "us_per_frame_median": round(median, 1),
            "us_per_frame_min_max": [round(min(per_frame), 1), round(max(per_frame), 1)],
            "real_data_minutes": round(median * REAL_FRAMES / 1e6 / 60, 1),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

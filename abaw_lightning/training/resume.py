"""Which checkpoint an interrupted run resumes from: the most advanced one that loads.

``last.ckpt`` normally; a SLURM requeue checkpoint (``hpc_ckpt_<n>.ckpt``, written by Lightning on
the requeue signal) when it is further on; ``best.ckpt`` when the others do not load. A checkpoint
that does not load (a disk that filled up under an older version, a planted file) is named in one
warning line and passed over; with none left the run starts again from scratch, and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from abaw_lightning.store.runs import RunDir


def resume_candidates(run: RunDir) -> list[Path]:
    """The checkpoints a run could resume from, in order of preference on equal progress."""
    hpc = sorted(run.root.glob("hpc_ckpt_*.ckpt"))
    candidates = [run.last, *hpc, run.checkpoints / "best.ckpt"]
    return [path for path in candidates if path.is_file()]


def checkpoint_step(path: Path) -> int:
    """The global step of a checkpoint, read without running code (and without reading the
    tensors: memory-mapped), so a cut-off or foreign file raises instead."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError("not a Lightning checkpoint (no state_dict)")
    return int(checkpoint["global_step"])


def resume_checkpoint(run: RunDir, warn: Callable[[str], None]) -> Path | None:
    """The checkpoint to resume ``run`` from, or None to start it from scratch."""
    readable = []
    candidates = resume_candidates(run)
    for order, path in enumerate(candidates):
        try:
            readable.append((checkpoint_step(path), -order, path))
        except Exception as error:  # any unreadable file: named, then passed over
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            warn(f"{path} does not load ({type(error).__name__}: {first_line[:160]}): not used")
    if readable:
        return max(readable)[2]
    if candidates:
        warn(f"no checkpoint of {run.root} loads: the run starts again from scratch")
    return None

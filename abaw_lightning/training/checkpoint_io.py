"""Checkpoints that no fault can corrupt: written beside their target and renamed into place.

Lightning's own writer goes through a temporary file elsewhere (fsspec's transaction); when the
runs folder is on another file system than that file, the final move is a truncating copy, so a
kill or a full disk during it leaves a 0-byte or cut-off ``last.ckpt``. Here the temporary file is
in the same folder, flushed and fsynced before an atomic rename: the previous checkpoint stays
whole until the new one is complete, and a failed write leaves no temporary file behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from abaw_lightning.errors import UserError
from abaw_lightning.files import sync_dir

TEMPORARY = ".tmp"


def temporary_path(path: Path) -> Path:
    """The temporary file a checkpoint is written to before it is renamed to ``path``."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY}")


def remove_temporary_files(folder: Path) -> list[Path]:
    """Delete checkpoint temporaries left by writers that died (call it holding the run lock)."""
    removed = []
    for path in Path(folder).glob(f".*.ckpt.*{TEMPORARY}"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves through a temporary file in the target's folder (fsync, then rename) and loads with
    ``weights_only=True`` whatever the caller asks (a checkpoint never runs code when read)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_path(path)
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException as error:
            temporary.unlink(missing_ok=True)
            if isinstance(error, OSError):
                kept = f"; {path.name} there is still the previous one" if path.is_file() else ""
                raise UserError(
                    f"cannot write the checkpoint {path} ({error.strerror or error}){kept}: "
                    "free space (or fix the folder's permissions) and run the same command "
                    "again to resume."
                ) from error
            raise
        sync_dir(path.parent)

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)

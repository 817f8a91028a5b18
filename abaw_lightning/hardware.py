"""Trainer settings checked against the machine before anything runs: one line saying what to
pass instead of Lightning's traceback deep inside the first Trainer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from abaw_lightning.errors import UserError

INSTEAD = "pass trainer=cpu, or trainer=default, which uses a GPU when there is one"
SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")
"""Strategies whose training processes are children of the run: the others re-launch the whole
``abaw-train`` command in every process, where the copies wait on the run's lock forever."""
GPUS = {"cuda": "CUDA GPU", "mps": "MPS (Apple) GPU"}


def _mps_available() -> bool:
    return torch.backends.mps.is_available()


def resolved_accelerator(accelerator: str) -> str | None:
    """The device type Lightning will use for ``accelerator`` ("auto", "gpu", "cuda", "mps",
    "cpu", ...): "auto" and "gpu" resolve to the GPU there is (CUDA first, then MPS); None for
    "gpu" on a machine without one."""
    name = str(accelerator).lower()
    if name in ("auto", "gpu"):
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu" if name == "auto" else None
    return name


def _gpu_count(accelerator: str) -> int:
    if accelerator == "cuda":
        return torch.cuda.device_count()
    return 1 if accelerator == "mps" and _mps_available() else 0


def _requested_devices(devices: Any) -> int | None:
    """How many devices ``devices`` asks for (a count, "N", or a list of indices); None for
    "auto" and -1 (all there are)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([index for index in devices.split(",") if index.strip()])
    try:
        count = int(devices)
    except (TypeError, ValueError):
        return None
    return None if count == -1 else count


def check_trainer_settings(trainer_kwargs: Mapping[str, Any]) -> None:
    """Refuse, with one UserError line saying what to pass instead, the `trainer` settings this
    machine cannot run: a GPU accelerator without a GPU, more GPUs than it has, and a precision
    the device does not support (fp16 autocast on the CPU, bf16 on a GPU without it)."""
    requested = trainer_kwargs.get("accelerator", "auto")
    if not isinstance(requested, str):  # an Accelerator instance: Lightning checks it
        return
    accelerator = resolved_accelerator(requested)
    if accelerator is None or (accelerator in GPUS and not _gpu_count(accelerator)):
        found = GPUS.get(accelerator, "CUDA or MPS GPU")
        raise UserError(
            f"trainer.accelerator={requested} but torch finds no {found} on this "
            f"machine: {INSTEAD} (or trainer.accelerator=cpu to keep the other trainer settings)."
        )
    wanted = _requested_devices(trainer_kwargs.get("devices", "auto"))
    available = _gpu_count(accelerator) if accelerator in GPUS else None
    if wanted is not None and available is not None and wanted > available:
        raise UserError(
            f"trainer.devices={trainer_kwargs['devices']} asks for {wanted} GPUs but this "
            f"machine has {available}: pass trainer.devices={available} (or trainer.devices=-1 "
            "for all of them)."
        )
    _check_processes(trainer_kwargs, accelerator, wanted, available)
    precision = str(trainer_kwargs.get("precision", "32-true"))
    if accelerator == "cpu" and precision in ("16", "16-mixed"):
        raise UserError(
            f"trainer.precision={precision} (float16 autocast) needs a GPU; on the CPU pass "
            "trainer.precision=bf16-mixed or trainer.precision=32-true."
        )
    if accelerator == "cuda" and "bf16" in precision and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"trainer.precision={precision}: this GPU ({torch.cuda.get_device_name()}) has no "
            "bfloat16; pass trainer.precision=16-mixed (or 32-true)."
        )


def _check_processes(
    trainer_kwargs: Mapping[str, Any], accelerator: str, wanted: int | None, available: int | None
) -> None:
    """Several training processes need a spawning strategy: Lightning's default for them (plain
    ``ddp``) starts copies of the command that block on the run lock the first one holds."""
    if wanted is None:  # "auto" / -1: every GPU there is (Lightning takes one CPU device)
        wanted = available if accelerator in GPUS else 1
    processes = (wanted or 1) * int(trainer_kwargs.get("num_nodes") or 1)
    strategy = trainer_kwargs.get("strategy", "auto")
    if processes > 1 and isinstance(strategy, str) and strategy not in SPAWNING:
        raise UserError(
            f"trainer.devices={trainer_kwargs.get('devices')} runs {processes} training processes "
            f"but trainer.strategy={strategy} would re-launch this command in each of them (they "
            "would wait on this run's lock forever): pass trainer=ddp (ddp_spawn), or "
            "trainer.devices=1."
        )

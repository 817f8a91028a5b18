"""Shared test helpers: the tiny CPU config, composing the real configs, running `abaw-train` in
process, and callbacks that crash or record a fit (added through `+callbacks.<name>._target_`)."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from abaw_lightning.configs import CONFIG_DIR

TINY = [
    "data.image_size=32",
    "data.batch_size=6",
    "data.val_batch_size=32",
    "data.num_workers=0",
    "data.pin_memory=false",
    "model.arch=resnet10",
    "model.weights=none",
    "trainer=cpu",
    "trainer.log_every_n_steps=1",
    "stages.cnn_teacher.max_epochs=2",
    "stages.cnn_student.max_epochs=2",
]
"""A few seconds per CNN stage on a 2-core CPU."""

GRU_TINY = [
    "data.windows.batch_size=1",
    "+trainer.limit_train_batches=4",
    "data.windows.val_batch_size=4",
    "features.offsets=1",
    "features.batch_size=32",
    "stages.gru_teacher.max_epochs=2",
    "stages.gru_student.max_epochs=2",
    "stages.cnn_teacher.max_epochs=1",
    "stages.cnn_student.max_epochs=1",
]
"""On top of TINY, for the GRU stages (with a prepared folder of 32-frame videos)."""


def tiny_config(
    prepared: Path, runs: Path, *overrides: str, experiment: str = "demo"
) -> DictConfig:
    """The real `abaw-train` config of ``experiment``, shrunk by TINY, then ``overrides``."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"experiment={experiment}",
                f"data.root={prepared}",
                f"runs_dir={runs}",
                *TINY,
                *overrides,
            ],
        )


def train_in_process(monkeypatch, *arguments: str) -> None:
    """`abaw-train ARGUMENTS` (one run or `-m`) in this process, through Hydra's entry point."""
    from abaw_lightning.train import main

    monkeypatch.setattr(sys, "argv", ["abaw-train", *arguments])
    main()


def view_run(runs: Path, view: str, seed: int, stage: str) -> Path:
    """The run folder that a view names for one stage."""
    record = json.loads((runs / view / f"seed_{seed}" / "view.json").read_text())
    return (runs / view / f"seed_{seed}" / record["stages"][stage]["run"]).resolve()


def store_runs(runs: Path, kind: str, complete: bool = True) -> list[Path]:
    """Run folders of one kind in the store (the complete ones by default)."""
    folders = sorted((runs / "store" / kind).glob("*/identity.json"))
    return [p.parent for p in folders if not complete or (p.parent / "metrics.json").is_file()]


class CrashAtEpoch(pl.Callback):
    """Raises at the start of ``epoch``: an interrupted stage with its last.ckpt."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")


class FitRecorder(pl.Callback):
    """Records where each fit starts (epoch, global step) and in which run folder."""

    starts: ClassVar[list[tuple[int, int]]] = []
    folders: ClassVar[list[str]] = []

    def on_train_start(self, trainer, pl_module):
        FitRecorder.starts.append((trainer.current_epoch, trainer.global_step))
        FitRecorder.folders.append(str(trainer.default_root_dir))

    @classmethod
    def clear(cls) -> None:
        cls.starts.clear()
        cls.folders.clear()


TEST_CALLBACKS = "key_ignores=[callbacks.record,callbacks.crash,callbacks.inspect,callbacks.poison]"
"""The tests' callbacks observe or interrupt a run; they do not change its result or key."""
RECORD = ["+callbacks.record._target_=support.FitRecorder", TEST_CALLBACKS]


def crash_at(epoch: int) -> list[str]:
    return [
        "+callbacks.crash._target_=support.CrashAtEpoch",
        f"+callbacks.crash.epoch={epoch}",
        TEST_CALLBACKS,
    ]


class SimulatedKill(BaseException):
    """Stands for a kill -9 at a chosen moment: nothing of the process runs after it (it is no
    Exception, so no handler of the project's catches it)."""


class KillAt(pl.Callback):
    """Dies at one moment of a fit: ``phase`` ``batch`` (after a training step), ``validation``
    (before an epoch's validation: the end-of-epoch window), ``in_validation`` (after the first
    validation batch) or ``in_save`` (half-way through writing a checkpoint), at ``step``."""

    def __init__(self, step: int, phase: str) -> None:
        self.step, self.phase = step, phase

    def _due(self, trainer, phase: str) -> bool:
        return self.phase == phase and trainer.global_step == self.step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._due(trainer, "batch"):
            raise SimulatedKill(f"killed after step {self.step}")
        if self._due(trainer, "in_save"):
            from abaw_lightning.training import checkpoint_io

            real = checkpoint_io.torch.save

            def dying_save(obj, file):
                checkpoint_io.torch.save = real
                buffer = io.BytesIO()
                real(obj, buffer)
                file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                raise SimulatedKill(f"killed while writing a checkpoint at step {self.step}")

            checkpoint_io.torch.save = dying_save

    def on_validation_start(self, trainer, pl_module):
        if self._due(trainer, "validation"):
            raise SimulatedKill(f"killed before the validation at step {self.step}")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        if self._due(trainer, "in_validation"):
            raise SimulatedKill(f"killed during the validation at step {self.step}")


class CtrlC(pl.Callback):
    """Presses Ctrl-C ``times`` times after training step ``step``, each press once the previous
    one was handled (signals sent at once would merge into one)."""

    def __init__(self, step: int, times: int) -> None:
        self.step, self.times = step, times

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.step:
            return
        os.kill(os.getpid(), signal.SIGINT)
        while not trainer._signal_connector.received_sigterm:
            time.sleep(0.001)  # the first press asks for a stop at the step's end
        for _ in range(self.times - 1):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # a second press interrupts here, at once


def kill_at(step: int, phase: str) -> list[str]:
    return [
        "+callbacks.kill._target_=support.KillAt",
        f"+callbacks.kill.step={step}",
        f"+callbacks.kill.phase={phase}",
        "key_ignores=[callbacks.kill,callbacks.record]",
    ]

"""The package's shape: which package may import which, every part of a run swappable from the
command line through its config group's `_target_`, and a wheel that works outside the checkout."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
from prepared_data import write_prepared
from support import tiny_config

from abaw_lightning import pipeline
from abaw_lightning.data.loading.datamodules import CnnDataModule
from abaw_lightning.models import MultitaskCNN

PACKAGE = Path(__file__).resolve().parent.parent / "abaw_lightning"
LIGHTNING = ("pytorch_lightning", "lightning_fabric", "lightning")
RULES = {
    # importer (prefix) -> forbidden imported prefixes
    "abaw_lightning.data": (
        "abaw_lightning.stages",
        "abaw_lightning.pipeline",
        "abaw_lightning.store",
        "abaw_lightning.training",
        "abaw_lightning.inference",
        "abaw_lightning.report",
    ),
    "abaw_lightning.inference": (
        "abaw_lightning.stages",
        "abaw_lightning.pipeline",
        "abaw_lightning.training",
        "abaw_lightning.store",
    ),
    "abaw_lightning.models": (
        "abaw_lightning.data",
        "abaw_lightning.stages",
        "abaw_lightning.pipeline",
        "abaw_lightning.training",
        *LIGHTNING,
    ),
    "abaw_lightning.losses": ("abaw_lightning.data", *LIGHTNING),
    "abaw_lightning.metrics": ("abaw_lightning.data", *LIGHTNING),
    "abaw_lightning.store": (
        "abaw_lightning.stages",
        "abaw_lightning.pipeline",
        "abaw_lightning.training",
        *LIGHTNING,
    ),
    "abaw_lightning.stages": ("abaw_lightning.pipeline", "abaw_lightning.store"),
    "abaw_lightning.training": ("abaw_lightning.pipeline", "abaw_lightning.stages"),
    "abaw_lightning.report": (
        "abaw_lightning.stages",
        "abaw_lightning.pipeline",
        "abaw_lightning.training",
        *LIGHTNING,
    ),
}
"""Packages import only downward: math knows no Lightning or files, models know no data, data
knows no stages, inference and export know models but not stages."""


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(package: Path) -> list[str]:
    """Every import of a module of ``package`` that breaks `RULES`."""
    found = []
    for path in sorted(package.rglob("*.py")):
        importer = module_name(path, package)
        for prefix, forbidden in RULES.items():
            if not under(importer, prefix):
                continue
            for imported in sorted(imports(path)):
                if any(under(imported, bad) for bad in forbidden):
                    found.append(f"{importer} imports {imported}")
    return found


def test_packages_import_only_downward():
    assert violations(PACKAGE) == []


def test_the_rules_can_fail(tmp_path):
    probe = tmp_path / "abaw_lightning" / "data" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from abaw_lightning.stages import CnnTeacher\n")
    found = violations(tmp_path / "abaw_lightning")
    assert found == [
        "abaw_lightning.data.probe imports abaw_lightning.stages",
        "abaw_lightning.data.probe imports abaw_lightning.stages.CnnTeacher",
    ]


class RecordingDataModule(CnnDataModule):
    built = 0

    def __init__(self, **settings):
        super().__init__(**settings)
        RecordingDataModule.built += 1


class RecordingModel(MultitaskCNN):
    built = 0

    def __init__(self, **settings):
        super().__init__(**settings)
        RecordingModel.built += 1


class RecordingTrainer(pl.Trainer):
    built = 0

    def __init__(self, **settings):
        super().__init__(**settings)
        RecordingTrainer.built += 1


class RecordingCallback(pl.Callback):
    fits = 0

    def on_fit_start(self, trainer, pl_module):
        RecordingCallback.fits += 1


def test_data_model_trainer_and_callbacks_are_swapped_from_the_command_line(tmp_path):
    prepared = write_prepared(tmp_path / "prepared", rows=24)
    cfg = tiny_config(
        prepared,
        tmp_path / "runs",
        "logger=none",
        "stage=cnn_teacher",
        "stages.cnn_teacher.max_epochs=1",
        "stages.cnn_teacher.datamodule._target_=test_layout.RecordingDataModule",
        "model._target_=test_layout.RecordingModel",
        "trainer._target_=test_layout.RecordingTrainer",
        "+callbacks.extra._target_=test_layout.RecordingCallback",
    )
    pipeline.run_pipeline(cfg)
    assert (RecordingDataModule.built, RecordingModel.built, RecordingTrainer.built) == (1, 1, 1)
    assert RecordingCallback.fits == 1


@pytest.mark.slow
def test_the_wheel_works_outside_the_checkout(tmp_path):
    root = PACKAGE.parent
    wheels = tmp_path / "wheels"
    build = ["wheel", "-q", "--no-deps", "--no-build-isolation", str(root), "-w", str(wheels)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    (wheel,) = wheels.glob("abaw_lightning-*.whl")
    site = tmp_path / "site"
    install = ["install", "-q", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(
        [sys.executable, "-m", "pip", *install],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site), "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(
        [str(site / "bin" / "abaw-train"), "--cfg", "job", "experiment=paper"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "experiment_name: paper" in done.stdout and "cnn_teacher_2task:" in done.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import abaw_lightning.configs as c; print(c.CONFIG_DIR)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip() == str(site / "abaw_lightning" / "conf")
    assert subprocess.run([str(site / "bin" / "abaw"), "--help"], env=env).returncode == 0

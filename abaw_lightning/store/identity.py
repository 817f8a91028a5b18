"""What identifies a stage run: a key hashed from everything that decides its result, nothing else.

A stage's identity is its resolved settings (``stages.<name>``: module, datamodule, epochs,
patience, features, ...), the result-changing trainer and callback settings, the identity of the
prepared data (its content, not its path), the seed, and the keys of the runs it builds on. The
settings that do not change the result are listed once, in `NON_RESULT_KEYS`; two configs that
differ only there share a run.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from abaw_lightning.errors import UserError
from abaw_lightning.files import sha256_file

KEY_LENGTH = 12
"""Hex digits of sha256 in a run key (48 bits: collisions are out of reach for any store)."""

NON_RESULT_KEYS: dict[str, str] = {
    "stage.datamodule.root": "the data is identified by its content (data_id), not its path",
    "stage.datamodule.num_workers": "loader processes",
    "stage.datamodule.pin_memory": "host-to-device copies",
    "stage.datamodule.persistent_workers": "loader processes",
    "stage.datamodule.prefetch_factor": "loader queue depth",
    "stage.datamodule.val_batch_size": "validation pools every frame whatever the batch size",
    "stage.datamodule.features": "the feature cache of the source run, set by the pipeline",
    "stage.module.channels_last": "memory layout",
    "stage.module.compile_backbone": "torch.compile",
    "stage.features.batch_size": "images per feature-extraction batch",
    "trainer.accelerator": "the device type (a run may resume on another machine)",
    "trainer.devices": "the device count: the effective batch (devices x batch size) is in the key",
    "trainer.num_nodes": "as devices",
    "trainer.strategy": "as devices",
    "trainer.use_distributed_sampler": "who shards the data under DDP",
    "trainer.plugins": "how checkpoints are written",
    "trainer.benchmark": "cuDNN algorithm choice",
    "trainer.deterministic": "deterministic algorithm choice",
    "trainer.log_every_n_steps": "logging",
    "trainer.num_sanity_val_steps": "a sanity check before training",
    "trainer.enable_progress_bar": "console",
    "trainer.enable_model_summary": "console",
    "trainer.profiler": "profiling",
    "trainer.default_root_dir": "the run's folder",
    "callbacks.*.dirpath": "the run's folder",
    "callbacks.early_stopping.patience": "the stage's patience, already in the stage settings",
    "callbacks.last_checkpoint": "how often last.ckpt is written",
    "callbacks.history": "bookkeeping",
    "callbacks.lr_monitor": "logging",
    "callbacks.quiet": "console filters",
    "callbacks.rng": "restores the random state of a resumed run",
    "callbacks.interrupt": "saves a checkpoint when the run is stopped",
    "callbacks.epoch_line": "console",
    "callbacks.resume_loggers": "logging",
}
"""Config paths (``stage.`` = the stage's node, ``trainer.``, ``callbacks.``; ``*`` matches one
level) that never change a stage's result, with the reason. Everything else is in the key; a
config adds paths of its own in ``key_ignores`` (say, a monitoring callback it adds)."""


def _drop(node: Any, pattern: list[str]) -> None:
    """Delete the keys matching the dotted ``pattern`` from a (DictConfig) tree, in place."""
    if not isinstance(node, Mapping) or not pattern:
        return
    head, rest = pattern[0], pattern[1:]
    for key in [key for key in node if fnmatch.fnmatchcase(str(key), head)]:
        if rest:
            _drop(node[key], rest)
        else:
            del node[key]


def world_size(trainer: Mapping[str, Any]) -> int:
    """Processes that share a step (DDP): the effective batch is this times the batch size."""
    strategy = str(trainer.get("strategy") or "auto")
    if "ddp" not in strategy:
        return 1
    devices = trainer.get("devices", 1)
    if isinstance(devices, list | tuple):
        count = len(devices)
    elif devices in (-1, "-1", "auto"):
        import torch

        count = max(1, torch.cuda.device_count()) if trainer.get("accelerator") != "cpu" else 1
    else:
        count = int(devices)
    return count * int(trainer.get("num_nodes") or 1)


def stage_settings(cfg: DictConfig, name: str) -> dict[str, Any]:
    """The result-deciding settings of stage ``name``: resolved, without the `NON_RESULT_KEYS`
    (dropped before resolving, so per-run ``${run.*}`` values never matter) and with the
    per-process batch size replaced by the effective batch size."""
    processes = world_size(OmegaConf.to_container(cfg.trainer, resolve=True))
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    tree = {"stage": copy.stages[name], "trainer": copy.trainer, "callbacks": copy.get("callbacks")}
    for pattern in [*NON_RESULT_KEYS, *(cfg.get("key_ignores") or [])]:
        _drop(tree, pattern.split("."))
    settings = {
        part: OmegaConf.to_container(node, resolve=True) if node is not None else None
        for part, node in tree.items()
    }
    settings["stage"].pop("builds_on", None)
    datamodule = settings["stage"].get("datamodule")
    if isinstance(datamodule, dict) and isinstance(datamodule.get("batch_size"), int):
        datamodule["batch_size"] *= processes
    return settings


def digest(payload: Any, length: int = KEY_LENGTH) -> str:
    """A short, stable sha256 of JSON-able ``payload`` (sorted keys)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@cache
def _tables_identity(root: str, stamp: tuple) -> str:
    folder = Path(root)
    tables = sorted(folder.glob("parts/*.parquet")) + sorted(folder.glob("affwild2/*.parquet"))
    return digest({str(path.relative_to(folder)): sha256_file(path) for path in tables})


def data_identity(root: str | Path) -> str:
    """The identity of a prepared folder's content, independent of where it lies.

    `abaw prepare` records it in ``manifest.json`` as ``data_id``; a folder without one (an older
    prepare, or a hand-made folder) is identified by the sha256 of its tables.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise UserError(
            f"prepared data folder {folder} does not exist: run `abaw prepare ... --out {folder}` "
            "first (or set data.root to it)."
        )
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            data_id = json.loads(manifest.read_text()).get("data_id")
        except (OSError, ValueError, AttributeError):
            data_id = None
        if isinstance(data_id, str) and data_id:
            return data_id
    tables = sorted(folder.glob("parts/*.parquet")) + sorted(folder.glob("affwild2/*.parquet"))
    if not tables:
        raise UserError(_not_prepared(folder))
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in tables)
    return _tables_identity(str(folder.resolve()), stamp)


def _not_prepared(folder: Path) -> str:
    """What to do with a data.root that holds no prepared tables, by what it holds instead."""
    inside = [path.parent for path in sorted(folder.glob("*/manifest.json"))]
    if inside:  # abaw demo's --out, or a folder of prepared folders
        return (
            f"{folder} is no prepared folder, but holds {', '.join(map(str, inside))}: set "
            f"data.root={inside[0]}"
        )
    sources = [
        name for name in ("affwild2", "expw", "afew_va", "affectnet") if (folder / name).is_dir()
    ]
    if sources:
        flags = " ".join(f"--{name.replace('_', '-')} {folder / name}" for name in sources)
        return (
            f"{folder} holds the datasets as downloaded or synthesised ({', '.join(sources)}), not "
            f"a prepared folder: run `abaw prepare {flags} --out {folder}_prepared`, then set "
            f"data.root={folder}_prepared"
        )
    return (
        f"{folder} holds no prepared tables (no manifest.json, parts/*.parquet or "
        f"affwild2/*.parquet): set data.root to the --out of `abaw prepare`"
    )


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def stage_kind(target: str) -> str:
    """The store folder of a stage's runs, from its LightningModule: CnnTeacher -> cnn_teacher."""
    return _CAMEL.sub("_", target.rsplit(".", 1)[-1]).lower()

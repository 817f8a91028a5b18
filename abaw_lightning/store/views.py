"""Naming experiments' views: ``<experiment>`` for the experiment as configured, and
``<experiment>+lam=0.3`` for a job whose command line changes a result-deciding setting, so that the
jobs of a sweep never share a view (their runs are told apart by key in any case)."""

from __future__ import annotations

import fnmatch
import re

from abaw_lightning.store.identity import NON_RESULT_KEYS, digest

JOB_KEYS = (
    "experiment",
    "experiment_name",
    "seed",
    "stage",
    "pipeline",
    "dry_run",
    "runs_dir",
    "run",
    "hydra*",
    "logger*",
    "data.root",
    "data.num_workers",
    "data.pin_memory",
    "data.persistent_workers",
    "data.prefetch_factor",
    "data.val_batch_size",
    "data.windows.val_batch_size",
    "features.batch_size",
    "channels_last",
    "compile",
    "checkpoint_every_n_steps",
)
"""Overrides that say which job runs, where, and how fast, not what it computes."""
MAX_NAME = 100
UNSAFE = re.compile(r'[/\\:*?<>|"\s]')
"""Characters that some file systems refuse in a folder name."""


def _not_naming(key: str) -> bool:
    """An override key that must not name a view: job addressing or a non-result setting."""
    patterns = list(JOB_KEYS)
    for path in NON_RESULT_KEYS:
        part, rest = path.split(".", 1)
        patterns.append(f"stages.*.{rest}" if part == "stage" else path)
    return any(
        fnmatch.fnmatchcase(key, pattern) or fnmatch.fnmatchcase(key, f"{pattern}.*")
        for pattern in patterns
    )


def _split(override: str) -> tuple[str, str] | None:
    key, sep, value = override.lstrip("+~").partition("=")
    return (key.strip(), value.strip().strip("'\"")) if sep else None


STAGE_SETTINGS = ("max_epochs", "patience", "lr", "betas")
"""Settings every stage has: named with their stage (``gru_student.max_epochs=2``)."""


def _short_key(key: str) -> str:
    """``lam`` for ``stages.cnn_student.module.distillation.lam``; ``cnn_teacher.lr`` for a
    setting every stage has."""
    parts = key.split(".")
    if len(parts) > 2 and parts[0] == "stages" and parts[-1] in STAGE_SETTINGS:
        return f"{parts[1]}.{parts[-1]}"
    return parts[-1]


def _naming_pairs(overrides: list[str]) -> list[tuple[str, str]]:
    """(key, value) of the overrides that change what a job computes, in command-line order."""
    return [pair for pair in map(_split, overrides) if pair and not _not_naming(pair[0])]


def variant_labels(overrides: list[str]) -> list[str]:
    """``lam=0.3`` for ``stages.cnn_student.module.distillation.lam=0.3``, and so on, for the
    overrides that change what a job computes (the full key where two would read the same)."""
    pairs = _naming_pairs(overrides)
    short = [_short_key(key) for key, _ in pairs]
    labels = []
    for (key, value), name in zip(pairs, short, strict=True):
        shown = key if short.count(name) > 1 else name
        labels.append(f"{shown}={UNSAFE.sub('_', value)}")
    return labels


def view_name(experiment: str, overrides: list[str], swept: frozenset[str] = frozenset()) -> str:
    """The view folder of a job: the experiment, plus its result-changing overrides; where that
    is longer than `MAX_NAME`, the labels that fit, those of the ``swept`` keys first (what tells
    a sweep's jobs apart), then a digest of them all (``+1a2b3c4d``), which keeps the names of two
    jobs apart however long their command lines."""
    labels = variant_labels(overrides)
    name = "+".join([experiment, *labels])
    if len(name) <= MAX_NAME:
        return name
    suffix = f"+{digest(labels, length=8)}"
    keys = [key for key, _ in _naming_pairs(overrides)]
    order = sorted(range(len(labels)), key=lambda i: keys[i] not in swept)
    shown = experiment
    for label in (labels[i] for i in order):
        if len(shown) + 1 + len(label) + len(suffix) > MAX_NAME:
            break
        shown += f"+{label}"
    return shown + suffix

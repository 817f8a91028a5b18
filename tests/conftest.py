"""Test-wide environment (offline W&B, no albumentations update check) and the shared tiny
prepared folders. The folders are shared by every test of a session: a test that changes one
works on a copy (`shutil.copytree`), or restores what it changed."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
if "PYTEST_XDIST_WORKER" in os.environ:  # `-n auto`: one torch thread per worker process, and
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # in the processes the tests start

    import torch

    torch.set_num_threads(1)

from prepared_data import write_prepared


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """36 frames per table (6 steps of 6 per epoch): the CNN stages' tests."""
    return write_prepared(tmp_path_factory.mktemp("prepared"), rows=36)


@pytest.fixture(scope="session")
def prepared_small(tmp_path_factory) -> Path:
    """24 frames per table: tests that only need a stage to run."""
    return write_prepared(tmp_path_factory.mktemp("prepared_small"), rows=24)


@pytest.fixture(scope="session")
def prepared_videos(tmp_path_factory) -> Path:
    """Three 32-frame videos per task (one GRU training window per video)."""
    return write_prepared(tmp_path_factory.mktemp("prepared_videos"), rows=96, videos=3)

"""Test-wide environment: offline W&B, no albumentations update check, deterministic torch."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

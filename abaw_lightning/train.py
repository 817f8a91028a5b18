"""Hydra entry point `abaw-train`: run an experiment's stages for one seed (or a multirun)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from abaw_lightning.configs import CONFIG_DIR
from abaw_lightning.errors import UserError, print_user_error
from abaw_lightning.quiet import quiet_libraries


class SweepJobError(CompactHydraException):
    """A multirun job's user error: Hydra runs the other jobs, then prints this without a
    traceback (what it does for its own compact errors) and exits non-zero."""


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    from abaw_lightning.pipeline import run_pipeline

    try:
        run_pipeline(cfg)
    except UserError as error:
        print_user_error(error)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise SweepJobError(f"error: {error}") from None
        sys.exit(2)


if __name__ == "__main__":
    main()

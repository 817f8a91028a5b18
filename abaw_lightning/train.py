"""Hydra entry point `abaw-train`: run an experiment's stages for one seed (or a multirun)."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape

from abaw_lightning.configs import CONFIG_DIR
from abaw_lightning.errors import UserError


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    from abaw_lightning.pipeline import run_pipeline

    try:
        run_pipeline(cfg)
    except UserError as error:
        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]error:[/] {escape(str(error))}", highlight=False
        )
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep still runs the other jobs, then reports this failure
        sys.exit(2)


if __name__ == "__main__":
    main()

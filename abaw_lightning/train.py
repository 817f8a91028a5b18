"""Hydra entry point `abaw-train`: run an experiment's stages for one seed (or a multirun)."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.console import Console

from abaw_lightning.errors import UserError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    from abaw_lightning.pipeline import run_pipeline

    try:
        run_pipeline(cfg)
    except UserError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep still runs the other jobs, then reports this failure
        sys.exit(2)


if __name__ == "__main__":
    main()

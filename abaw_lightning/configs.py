"""Where the Hydra configs are, composing them outside `abaw-train`, and expanding a sweep's
command line into its jobs (as Hydra's basic sweeper does), for plans and in-process runs."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig

from abaw_lightning.errors import UserError

_PACKAGE = Path(__file__).resolve().parent
CONFIG_DIR = str(_PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf")
"""``conf/`` at the top of a source checkout; inside the package in an installed wheel."""


def sweep_jobs(arguments: list[str]) -> list[list[str]]:
    """The override list of every job of ``abaw-train -m ARGUMENTS`` (``a=1,2``, ``range(10)``,
    ``glob(paper_*)`` ...), in Hydra's order. Needs an initialised Hydra (for ``glob``)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    try:
        overrides = parser.parse_overrides(arguments)
    except Exception as error:  # Hydra's parser errors carry the position of the mistake
        raise UserError(f"cannot read the overrides {arguments}: {error}") from error
    return BasicSweeper.split_arguments(overrides, None)[0]


def compose_job(job: list[str]) -> DictConfig:
    """The `train` config of one job (inside an initialised Hydra); mistakes are user errors."""
    try:
        return compose("train", overrides=job)
    except HydraException as error:
        raise UserError(f"cannot compose the config of {' '.join(job)}: {error}") from error


def compose_jobs(arguments: list[str]) -> list[tuple[list[str], DictConfig]]:
    """The composed `train` config of every job of a sweep's command line."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return [(job, compose_job(job)) for job in sweep_jobs(arguments)]

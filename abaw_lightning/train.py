"""Hydra entry point `abaw-train`: run an experiment's stages for one seed (or a multirun)."""

from __future__ import annotations

import sys

import hydra
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from abaw_lightning.configs import CONFIG_DIR, compose_job, sweep_jobs
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


MULTIRUN = ("-m", "--multirun")


def run() -> None:
    """`abaw-train`: the command line's overrides composed first, so that a mistyped setting or
    option is one `error:` line with the likely fix (Hydra's own report is several lines of
    advice that fails again), then Hydra's application. Other Hydra flags go to Hydra as given."""
    arguments = sys.argv[1:]
    if all(not a.startswith("-") or a in MULTIRUN for a in arguments):
        try:
            with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
                jobs = sweep_jobs([a for a in arguments if a not in MULTIRUN])
                compose_job(jobs[0])  # the other jobs of a sweep: checked by its plan
        except UserError as error:
            print_user_error(error)
            sys.exit(2)
    main()


if __name__ == "__main__":
    run()

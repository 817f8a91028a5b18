"""`abaw plan OVERRIDES...`: what `abaw-train -m OVERRIDES...` would train, resume and reuse,
per job and for the whole sweep, with an estimate from the finished runs; trains nothing."""

from __future__ import annotations

import argparse

from rich.console import Console

from abaw_lightning.configs import compose_jobs, swept_keys
from abaw_lightning.store.plan import make_plan, print_plan, print_sweep_plan
from abaw_lightning.store.views import view_name

console = Console(soft_wrap=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides",
        nargs="+",
        help="abaw-train's overrides, sweeps included: experiment=paper 'seed=range(10)'",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also each job's plan")


def run(args: argparse.Namespace) -> int:
    jobs = compose_jobs(args.overrides)
    plans = [make_plan(cfg) for _, cfg in jobs]
    if args.verbose:
        swept = swept_keys(args.overrides)
        for (job, cfg), plan in zip(jobs, plans, strict=True):
            print_plan(plan, console, view_name(cfg.experiment_name, job, swept))
    print_sweep_plan(plans, console)
    return 0

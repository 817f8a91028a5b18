"""`abaw plan OVERRIDES...`: what `abaw-train -m OVERRIDES...` would train, resume and reuse,
per job and for the whole sweep, with an estimate from the finished runs; trains nothing."""

from __future__ import annotations

import argparse

from rich.console import Console

from abaw_lightning.configs import compose_jobs
from abaw_lightning.store.plan import make_plan, print_plan, print_sweep_plan

console = Console(soft_wrap=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides",
        nargs="+",
        help="abaw-train's overrides, sweeps included: experiment=paper 'seed=range(10)'",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also each job's plan")


def run(args: argparse.Namespace) -> int:
    plans = [make_plan(cfg) for _, cfg in compose_jobs(args.overrides)]
    if args.verbose:
        for plan in plans:
            print_plan(plan, console)
    print_sweep_plan(plans, console)
    return 0

"""`abaw synth`: the command line of the synthetic datasets' generator."""

from __future__ import annotations

import argparse
from pathlib import Path

from abaw_lightning.data.synth.generate import generate
from abaw_lightning.data.synth.scales import SCALES, describe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `abaw synth`."""
    parser.add_argument("--out", required=True, type=Path, help="folder to write (empty or new)")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> identical files")
    parser.add_argument(
        "--scale",
        default="small",
        choices=list(SCALES),
        help="; ".join(describe(name) for name in SCALES),
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")


def run(args: argparse.Namespace) -> int:
    """Generate, then say where the four datasets are and how to prepare them."""
    summary = generate(args.out, seed=args.seed, scale=args.scale, workers=args.workers)
    out = args.out
    print(
        f"wrote {summary['affwild2']['expected']['expr']['train']['videos']} + "
        f"{summary['affwild2']['expected']['va']['train']['videos']} Aff-Wild2 train videos "
        f"(EXPR + VA), {summary['expw']['expected']['lines']} ExpW faces, "
        f"{summary['afew_va']['expected']['clips']} AFEW-VA clips, "
        f"{sum(summary['affectnet']['expected']['rows'].values())} AffectNet rows to {out}\n"
        f"next: abaw prepare --affwild2 {out}/affwild2 --expw {out}/expw "
        f"--afew-va {out}/afew_va --affectnet {out}/affectnet --out <prepared>"
    )
    return 0

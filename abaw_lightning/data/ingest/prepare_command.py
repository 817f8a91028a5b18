"""`abaw prepare`: the command line of `prepare` (the four datasets -> a prepared folder)."""

from __future__ import annotations

import argparse
from pathlib import Path

from abaw_lightning.data.ingest.prepare import DEFAULT_WORKERS, EXPR_VA_SOURCES, prepare


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `abaw prepare`."""
    parser.add_argument("--affwild2", required=True, type=Path, help="Aff-Wild2 root")
    parser.add_argument("--expw", type=Path, help="ExpW root (image/origin, label/label.lst)")
    parser.add_argument("--afew-va", type=Path, help="AFEW-VA root (01..12/<clip>/ or <clip>/)")
    parser.add_argument("--affectnet", type=Path, help="AffectNet manually annotated release")
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="prepared folder to build or rebuild (new, empty, or made by abaw prepare)",
    )
    parser.add_argument(
        "--expr-va-source",
        choices=EXPR_VA_SOURCES,
        default="affectnet",
        help="source of the expr_va part (default: affectnet)",
    )
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="cropping processes")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="rebuild a prepared --out even without some of the datasets it was prepared from",
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of `abaw prepare`."""
    prepare(
        args.affwild2,
        args.out,
        expw=args.expw,
        afew_va=args.afew_va,
        affectnet=args.affectnet,
        expr_va_source=args.expr_va_source,
        workers=args.workers,
        replace=args.replace,
    )
    return 0

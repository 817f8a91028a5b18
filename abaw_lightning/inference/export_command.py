"""`abaw export`: the command line of `export_models` (ONNX / TorchScript, verified)."""

from __future__ import annotations

import argparse
from pathlib import Path

from abaw_lightning.inference.export import CHECK_BATCH, FORMATS, export_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="CNN-stage checkpoint (best.ckpt)")
    parser.add_argument("--gru-ckpt", help="GRU-stage checkpoint, written to <out>_gru<suffix>")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="(default onnx)")
    parser.add_argument("--out", required=True, type=Path, help="file to write (.onnx / .pt)")


def run(args: argparse.Namespace) -> int:
    results = export_models(args.ckpt, args.out, args.format, args.gru_ckpt)
    for path, difference in results.items():
        print(
            f"wrote {path} ({args.format}): max |exported - PyTorch| = {difference:.3g} "
            f"on a random batch of {CHECK_BATCH}"
        )
    return 0

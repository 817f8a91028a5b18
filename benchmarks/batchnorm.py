"""Cost of per-part BatchNorm (METHOD.md §3) per CNN training step, in one run.

Three ways to run a step of the CNN teacher (forward over 3 parts, Eq. 7 loss, backward, Adam):
``one_pass``: one forward over the concatenated parts with per-part statistics (PartBatchNorm,
what `CnnStage.training_outputs` does); ``three_passes``: one forward per part (the released
code's way); ``joint``: one forward with shared statistics (``model.batchnorm=joint``, not exact).
Repetitions are interleaved (one_pass, three_passes, joint, one_pass, ...); each figure is the
median step time with its spread (min-max); ratios are of those medians, and also per repetition
(neighbouring steps), all from the same run. Before
timing, the two exact ways are checked against each other on one step's outputs.

    python benchmarks/batchnorm.py --out benchmarks/results_batchnorm_cpu.json
    python benchmarks/batchnorm.py --batch 64 --reps 20 --precision bf16-mixed   # GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from abaw_lightning.schema import PARTS
from abaw_lightning.stages import CnnTeacher

console = Console()
OPTIMIZER = {"lr": 1e-4, "betas": [0.5, 0.999]}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet50", help="resnet18 | resnet34 | resnet50")
    parser.add_argument("--size", type=int, default=112, help="input crop side")
    parser.add_argument("--batch", type=int, default=16, help="images per part and step")
    parser.add_argument("--reps", type=int, default=7, help="timed steps per way (>= 5)")
    parser.add_argument("--precision", default="32-true", help="32-true | bf16-mixed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results_batchnorm.json"))
    return parser.parse_args()


def part_batches(args, device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.size, args.size)
    return {
        part: {
            "image": torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
            .to(device)
            .contiguous(memory_format=torch.channels_last),
            "expr": torch.randint(0, 7, (args.batch,), generator=generator).to(device),
            "va": (torch.rand(args.batch, 2, generator=generator) * 2 - 1).to(device),
        }
        for part in PARTS
    }


def one_pass(module: CnnTeacher, batches) -> dict:
    return module.training_outputs(batches)[0]


def three_passes(module: CnnTeacher, batches) -> dict:
    """One training forward per part (the BatchNorms see one part each, no part sizes)."""
    return {part: module(batch["image"]) for part, batch in batches.items()}


WAYS: dict[str, tuple[str, Callable]] = {
    "one_pass": ("per_part", one_pass),
    "three_passes": ("per_part", three_passes),
    "joint": ("joint", one_pass),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    args = arguments()
    if args.reps < 5:
        raise SystemExit("--reps must be at least 5")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = args.precision == "bf16-mixed"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    batches = part_batches(args, device)
    torch.manual_seed(0)
    base = CnnTeacher({"arch": args.arch, "dropout": 0.0}, OPTIMIZER).to(device).train()
    runs = {}
    for name, (batchnorm, forward) in WAYS.items():
        module = CnnTeacher({"arch": args.arch, "batchnorm": batchnorm}, OPTIMIZER)
        module.model.load_state_dict(base.model.state_dict())
        runs[name] = (module.to(device).train(), module.configure_optimizers(), forward)

    with torch.no_grad(), autocast:  # exactness of the two per-part ways, from the same state
        first = one_pass(copy.deepcopy(base), batches)
        second = three_passes(copy.deepcopy(base), batches)
    difference = max(
        (first[part][key].float() - second[part][key].float()).abs().max().item()
        for part in batches
        for key in first[part]
    )

    def step(name: str) -> float:
        module, optimizer, forward = runs[name]
        synchronize(device)
        start = time.perf_counter()
        with autocast:
            outputs = forward(module, batches)
            loss = module.loss(outputs, batches)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)
        return time.perf_counter() - start

    for name in runs:  # warm-up
        step(name)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.reps):
        for name in runs:
            times[name].append(step(name))

    medians = {name: statistics.median(values) for name, values in times.items()}
    pairs = (("one_pass", "three_passes"), ("one_pass", "joint"), ("three_passes", "joint"))
    ratios = {f"{a} / {b}": medians[a] / medians[b] for a, b in pairs}
    paired = {  # per repetition (neighbouring steps): robust to a machine whose load drifts
        f"{a} / {b}": sorted(x / y for x, y in zip(times[a], times[b], strict=True))
        for a, b in pairs
    }
    images = len(PARTS) * args.batch
    table = Table(title=f"per-part BatchNorm, {args.arch} {args.size}px, {images} images/step")
    for column in ("way", "median s/step", "min-max s", "images/s"):
        table.add_column(column, justify="right")
    for name, values in times.items():
        spread = f"{min(values):.3f}-{max(values):.3f}"
        table.add_row(name, f"{medians[name]:.3f}", spread, f"{images / medians[name]:.1f}")
    console.print(table)
    for key, value in ratios.items():
        spread = f"{paired[key][0]:.3f}-{paired[key][-1]:.3f}"
        median = statistics.median(paired[key])
        console.print(f"{key}: {value:.3f} (per repetition: median {median:.3f}, {spread})")
    console.print(f"max |one_pass - three_passes| over the outputs: {difference:.2e}")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu x{os.cpu_count()}"
    results = {
        "device": name,
        "threads": torch.get_num_threads(),
        "arch": args.arch,
        "size": args.size,
        "batch_per_part": args.batch,
        "precision": args.precision,
        "reps": args.reps,
        "step_seconds": times,
        "median_step_seconds": medians,
        "ratios": ratios,
        "paired_ratios": paired,
        "max_abs_difference_one_pass_vs_three_passes": difference,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"[green]✓[/] {args.out}")


if __name__ == "__main__":
    main()

"""Throughput of the training paths, measured in one process and one run (ratios are the result).

(a) model-only ceiling: CNN student step (teacher forward + student train step) on device tensors;
(b) input pipeline alone, per worker count, beside a PIL + torchvision-transforms baseline;
(c) end-to-end CNN student training through the real DataModule, LightningModule and Trainer;
(d) GRU stage with the feature cache vs online recomputation of the frozen CNN;
(e) feature extraction into the cache.

    python benchmarks/throughput.py --out benchmarks/results_cpu.json            # CPU, small
    python benchmarks/throughput.py --arch resnet50 --workers 4 8 16 --steps 60  # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytorch_lightning as pl
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from abaw_lightning.data.ingest.prepare import prepare
from abaw_lightning.data.loading.datamodules import CnnDataModule, GruDataModule
from abaw_lightning.data.loading.datasets import load_table
from abaw_lightning.data.loading.feature_cache import default_views
from abaw_lightning.data.synth import generate
from abaw_lightning.models import MultitaskCNN
from abaw_lightning.models.checkpoints import load_cnn
from abaw_lightning.schema import PARTS
from abaw_lightning.stages import CnnStudent, GruTeacher
from abaw_lightning.stages.features import ensure_features

console = Console()
OPTIMIZER = {"lr": 1e-4, "betas": [0.5, 0.999]}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prepared", type=Path, help="prepared folder (default: synth + prepare)")
    parser.add_argument("--scale", default="small", help="synthetic scale without --prepared")
    parser.add_argument("--arch", default="resnet18", help="resnet18 | resnet34 | resnet50")
    parser.add_argument("--size", type=int, default=112, help="input crop side")
    parser.add_argument("--batch", type=int, default=64, help="images per part and step")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per figure")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts")
    parser.add_argument("--precision", default=None, help="32-true | bf16-mixed | 16-mixed")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"))
    return parser.parse_args()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast(device: torch.device, precision: str):
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def student(args, device: torch.device) -> CnnStudent:
    model = {"arch": args.arch, "weights": "none"}
    module = CnnStudent(model, OPTIMIZER, image_size=args.size, compile_backbone=args.compile).to(
        device
    )
    teacher = MultitaskCNN(**model).to(device)
    module.attach_frozen("teacher", teacher)
    return module


def device_batches(args, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        part: {
            "image": torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
            .to(device)
            .contiguous(memory_format=torch.channels_last),
            "expr": torch.randint(0, 7, (args.batch,), generator=generator).to(device),
            "va": (torch.rand(args.batch, 2, generator=generator) * 2 - 1).to(device),
        }
        for part in PARTS
    }


def model_ceiling(args, device, precision) -> float:
    """(a) images/s of teacher forward + student train step, data already on the device."""
    module = student(args, device).train()
    optimizer = module.configure_optimizers()
    batches = device_batches(args, device)

    def step() -> None:
        with autocast(device, precision):
            loss = module.loss(*module.training_outputs(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    return args.steps * len(PARTS) * args.batch / (time.perf_counter() - start)


class TorchvisionBaseline(Dataset):
    """The released design's input path: PIL decode, float torchvision transforms, normalise."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths = paths
        self.transform = T.Compose(
            [
                T.Resize(round(size * 134 / 112)),
                T.RandomCrop(size),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Lambda(lambda x: x * 255),
                T.Normalize([131.0912, 103.8827, 91.4953], [1, 1, 1]),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.transform(Image.open(self.paths[index]).convert("RGB")), index % 7


def forever(loader):
    """Batches of ``loader``, epoch after epoch (small parts end their epoch early)."""
    while True:
        yield from loader


def images_per_second(loader, steps: int, images_per_step: int) -> float:
    iterator = forever(loader)
    for _ in range(2):
        next(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        next(iterator)
    return steps * images_per_step / (time.perf_counter() - start)


def cnn_datamodule(args, prepared: Path, workers: int, device) -> CnnDataModule:
    datamodule = CnnDataModule(
        prepared,
        batch_size=args.batch,
        image_size=args.size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    datamodule.setup("fit")
    return datamodule


def input_pipeline(args, prepared: Path, workers: int, device) -> tuple[float, float]:
    """(b) images/s out of our CombinedLoader and out of the torchvision baseline (3 loaders)."""
    ours = images_per_second(
        cnn_datamodule(args, prepared, workers, device).train_dataloader(),
        args.steps,
        len(PARTS) * args.batch,
    )
    paths = [prepared / p for part in PARTS for p in load_table(prepared, f"parts/{part}")["image"]]
    baseline_loaders = [
        DataLoader(
            TorchvisionBaseline(paths, args.size),
            batch_size=args.batch,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
        )
        for _ in PARTS
    ]

    class Zipped:
        def __iter__(self):
            return zip(*baseline_loaders, strict=False)

    baseline = images_per_second(Zipped(), args.steps, len(PARTS) * args.batch)
    return ours, baseline


class StepTimer(pl.Callback):
    """Times training steps after a warm-up."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.steps = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            synchronize(module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step > self.warmup:
            self.steps = trainer.global_step - self.warmup

    def rate(self, device) -> float:
        synchronize(device)
        return self.steps / (time.perf_counter() - self.start)


def trainer(device, precision: str, steps: int, timer: StepTimer) -> pl.Trainer:
    return pl.Trainer(
        accelerator=device.type,
        devices=1,
        precision=precision,
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )


def end_to_end(args, prepared: Path, workers: int, device, precision) -> float:
    """(c) images/s of CNN student training through DataModule + LightningModule + Trainer."""
    timer = StepTimer(warmup=3)
    module = student(args, device)
    datamodule = cnn_datamodule(args, prepared, workers, device)
    trainer(device, precision, args.steps + 3, timer).fit(module, datamodule=datamodule)
    return timer.rate(device) * len(PARTS) * args.batch


def checkpoint_of(module: CnnStudent, folder: Path) -> Path:
    path = folder / "cnn.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def gru_rates(args, prepared: Path, workers: int, device, precision, folder: Path) -> dict:
    """(d) frames/s of GRU teacher training, cached vs online; (e) extraction images/s."""
    cnn_path = checkpoint_of(student(args, torch.device("cpu")), folder)
    views = default_views(args.size, round(args.size * 134 / 112), offsets=1, flip=True)
    tables = [f"affwild2/{name}" for name in ("train_expr", "train_va", "val_expr", "val_va")]
    start = time.perf_counter()
    cache = ensure_features(
        folder / "features",
        cnn_path,
        prepared,
        tables,
        args.size,
        round(args.size * 134 / 112),
        views,
        num_workers=max(workers, 0),
        trainer_kwargs={"accelerator": device.type, "precision": precision},
    )
    distinct_views = len(set(views))
    extraction = cache.num_frames * distinct_views / (time.perf_counter() - start)
    rates = {"extraction_img_s": extraction}
    frames_per_step = len(PARTS) * 16 * 32
    for mode in ("cache", "online"):
        datamodule = GruDataModule(
            prepared,
            features=folder / "features" if mode == "cache" else None,
            image_size=args.size,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        module = GruTeacher(OPTIMIZER)
        if mode == "online":
            module.attach_frozen("cnn", load_cnn(cnn_path))
        steps = args.steps if mode == "cache" else max(2, args.steps // 4)
        timer = StepTimer(warmup=2)
        trainer(device, precision, steps + 2, timer).fit(module, datamodule=datamodule)
        rates[f"gru_{mode}_frames_s"] = timer.rate(device) * frames_per_step
    return rates


def prepared_data(args, folder: Path) -> Path:
    if args.prepared is not None:
        return args.prepared
    generate(folder / "synth", scale=args.scale)
    synth = folder / "synth"
    prepare(
        synth / "affwild2",
        folder / "prepared",
        expw=synth / "expw",
        afew_va=synth / "afew_va",
        affectnet=synth / "affectnet",
    )
    return folder / "prepared"


def report(results: dict) -> None:
    title = f"throughput on {results['device']} ({results['arch']}, {results['size']}px)"
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in results["figures"].items():
        table.add_row(key, f"{value:,.1f}")
    for key, value in results["ratios"].items():
        table.add_row(key, f"{value:.2f}x", style="bold")
    console.print(table)


def main() -> None:
    args = arguments()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = args.precision or ("bf16-mixed" if device.type == "cuda" else "32-true")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu x{os.cpu_count()}"
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepared = prepared_data(args, folder)
        figures["a_model_ceiling_img_s"] = model_ceiling(args, device, precision)
        for workers in args.workers:
            ours, baseline = input_pipeline(args, prepared, workers, device)
            figures[f"b_loader_w{workers}_img_s"] = ours
            figures[f"b_torchvision_baseline_w{workers}_img_s"] = baseline
        best_workers = max(args.workers)
        figures["c_end_to_end_img_s"] = end_to_end(args, prepared, best_workers, device, precision)
        gru = gru_rates(args, prepared, best_workers, device, precision, folder)
    figures["d_gru_cache_frames_s"] = gru["gru_cache_frames_s"]
    figures["d_gru_online_frames_s"] = gru["gru_online_frames_s"]
    figures["e_extraction_img_s"] = gru["extraction_img_s"]
    ratios = {
        f"loader / torchvision baseline (w{w})": figures[f"b_loader_w{w}_img_s"]
        / figures[f"b_torchvision_baseline_w{w}_img_s"]
        for w in args.workers
    }
    ratios["end-to-end / model ceiling"] = (
        figures["c_end_to_end_img_s"] / figures["a_model_ceiling_img_s"]
    )
    ratios["GRU cached / online"] = (
        figures["d_gru_cache_frames_s"] / figures["d_gru_online_frames_s"]
    )
    results = {
        "device": name,
        "arch": args.arch,
        "size": args.size,
        "batch_per_part": args.batch,
        "precision": precision,
        "compile": args.compile,
        "figures": figures,
        "ratios": ratios,
    }
    report(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"written {args.out}")


if __name__ == "__main__":
    main()

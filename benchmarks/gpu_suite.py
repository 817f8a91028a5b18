"""Every throughput figure of issue 15 in one process, for one short GPU lease (`gpu.sh` runs it).

Each figure is the median of ``--reps`` repetitions; the compared variants of a measurement are
interleaved (A B A B ...), each repetition warms up the same way, and the spread (min-max) and
the per-repetition ratios are reported. Every measurement runs in its own try/except (its error
is recorded and the suite goes on) and a time budget skips what no longer fits. The JSON is
rewritten after every measurement, so a killed run still leaves what it measured.

    python benchmarks/gpu_suite.py --out $OUT/gpu_suite.json               # GPU (the defaults)
    python benchmarks/gpu_suite.py --smoke --out /tmp/gpu_dry/gpu_suite.json   # CPU dry run
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import json
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from paper_estimate import estimate
from rich.console import Console
from rich.table import Table
from synthetic_prepared import Sizes, write_prepared
from throughput import autocast, synchronize
from torch.utils.data import DataLoader, Dataset, RandomSampler

from abaw_lightning.data.loading.datamodules import CnnDataModule, GruDataModule
from abaw_lightning.data.loading.feature_cache import default_views
from abaw_lightning.models import MultitaskCNN, TemporalModel
from abaw_lightning.schema import PARTS
from abaw_lightning.stages import CnnStudent, CnnTeacher, GruStudent, GruTeacher
from abaw_lightning.stages.features import ensure_features

console = Console(soft_wrap=True, width=110)  # the device reply keeps the last 12,000 chars
OPTIMIZER = {"lr": 1e-4, "betas": [0.5, 0.999]}
logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # no banner per Trainer
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


@dataclass(frozen=True)
class Settings:
    """What the suite runs; the defaults are the paper's settings on a GPU (METHOD.md §5)."""

    arch: str = "resnet50"
    size: int = 112
    batch: int = 64
    reps: int = 5
    warmup: int = 10
    steps: int = 50
    workers: int = 8
    precision: str = "bf16-mixed"
    val_batch: int = 512
    extract_batch: int = 256
    gru_batch: int = 16
    gru_steps: int = 40
    online_steps: int = 6
    budget_s: float = 450.0
    reserve_s: float = 20.0
    compile: bool = False
    more_workers: tuple[int, ...] = ()
    gpu_decode: bool = False
    data: Sizes = field(default_factory=Sizes)


SMOKE = {
    "arch": "resnet18",
    "size": 32,
    "batch": 4,
    "reps": 2,
    "warmup": 2,
    "steps": 3,
    "workers": 1,
    "precision": "32-true",
    "val_batch": 64,
    "extract_batch": 72,
    "gru_batch": 4,
    "gru_steps": 3,
    "online_steps": 2,
    "data": Sizes(
        train_videos=4,
        val_videos=2,
        frames_per_video=160,
        distinct_frames=60,
        distinct_crops=30,
        part_rows=400,
        bench_tables=(16, 96),
    ),
}
"""--smoke: the same code path at CPU sizes (the figures mean nothing)."""


MEASUREMENTS = (
    "released_design",
    "cnn_student",
    "extraction",
    "feature_cache",
    "gru",
    "model_steps",
    "loader",
    "validation",
    "batchnorm_script",
)
"""In the order they run (gru needs feature_cache; released_design runs before and after
cnn_student)."""


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    parser.add_argument(
        "--report-only", action="store_true", help="recompute targets, estimate and table of --out"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a dry run on the CPU")
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 5)")
    parser.add_argument("--budget", type=float, help="seconds from SUITE_START (default 450)")
    parser.add_argument("--workers", type=int, help="loader workers per part (default 8)")
    parser.add_argument(
        "--more-workers", type=int, nargs="*", default=[], help="also these worker counts"
    )
    parser.add_argument("--compile", action="store_true", help="also torch.compile'd variants")
    parser.add_argument("--gpu-decode", action="store_true", help="also decode JPEGs on the GPU")
    parser.add_argument("--reference", type=Path, help="reference_design.py (released design)")
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, help="run only these")
    return parser.parse_args()


def settings_of(args: argparse.Namespace) -> Settings:
    settings = Settings(**SMOKE) if args.smoke else Settings()
    changes = {
        "reps": args.reps,
        "budget_s": args.budget,
        "workers": args.workers,
        "compile": args.compile or None,
        "gpu_decode": args.gpu_decode or None,
        "more_workers": tuple(args.more_workers) or None,
    }
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})


def to_device(value, device: torch.device):
    """Tensors of nested dicts (a training batch) on the device."""
    if isinstance(value, dict):
        return {key: to_device(item, device) for key, item in value.items()}
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


def summary(values: list[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": [round(v, 2) for v in values],
    }


def ratio(a: dict, b: dict) -> dict:
    """a / b: of the medians, and per repetition (neighbouring runs) median and spread."""
    paired = [x / y for x, y in zip(a["values"], b["values"], strict=False) if y]
    return {
        "of_medians": a["median"] / b["median"],
        "per_rep_median": statistics.median(paired),
        "per_rep_min": min(paired),
        "per_rep_max": max(paired),
    }


class Suite:
    """Runs measurements within the time budget and keeps every result, error and skip."""

    def __init__(self, settings: Settings, out: Path, device: torch.device, folder: Path) -> None:
        self.settings, self.out, self.device, self.folder = settings, out, device, folder
        self.start = float(os.environ.get("SUITE_START", time.time()))
        self.results: dict = {"measurements": {}, "errors": {}, "skipped": {}}
        self.optimizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.only: set[str] | None = None

    def elapsed(self) -> float:
        return time.time() - self.start

    def left(self) -> float:
        return self.settings.budget_s - self.elapsed()

    def progress(self, text: str) -> None:
        console.print(f"[{self.elapsed():6.1f} s] {text}", highlight=False)

    def save(self) -> None:
        self.results["elapsed_s"] = round(self.elapsed(), 1)
        self.out.write_text(json.dumps(self.results, indent=2, default=str) + "\n")

    def run(self, name: str, measure: Callable[[], dict], needs_s: float) -> dict | None:
        """``measure()`` unless not selected (--only) or fewer than ``needs_s`` seconds of the
        budget are left."""
        base = name.removesuffix("_before").removesuffix("_after")
        if self.only is not None and base in MEASUREMENTS and base not in self.only:
            self.results["skipped"][name] = "not selected (--only)"
            return None
        if self.left() < needs_s:
            reason = f"time budget: {self.left():.0f} s left, needs ~{needs_s:.0f} s"
            self.results["skipped"][name] = reason
            self.progress(f"skip {name}: {reason}")
            self.save()
            return None
        self.progress(f"{name} ...")
        began = time.time()
        try:
            result = measure()
            result["wall_s"] = round(time.time() - began, 1)
            self.results["measurements"][name] = result
            self.progress(f"{name} done in {result['wall_s']} s")
            return result
        except Exception as error:  # one failed measurement must not stop the others
            lines = traceback.format_exception(error)
            self.results["errors"][name] = "".join(lines[-12:])
            self.progress(f"[red]{name} failed[/]: {type(error).__name__}: {error}")
            return None
        finally:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.save()

    def interleaved(self, variants: dict[str, Callable[[], float]], reps: int | None = None):
        """Repetitions of every variant in turn (A B A B ...); stops early on the budget."""
        values: dict[str, list[float]] = {name: [] for name in variants}
        reps = reps or self.settings.reps
        for rep in range(reps):
            if rep and self.left() < self.settings.reserve_s:
                self.results.setdefault("notes", []).append(
                    f"{list(variants)}: stopped after {rep} of {reps} repetitions (time budget)"
                )
                break
            for name, measure in variants.items():
                values[name].append(measure())
                gc.collect()  # loader workers of the variant end before the next one starts
            last = ", ".join(f"{name} {v[-1]:,.0f}" for name, v in values.items())
            children = len(multiprocessing.active_children())  # loader workers left running
            self.progress(f"  rep {rep + 1}/{reps}: {last} ({children} child processes)")
        return {name: summary(v) for name, v in values.items()}


# ---------------------------------------------------------------- CNN stages


def cnn_stage(kind: type, settings: Settings, batchnorm="per_part", compile=False):
    """A CNN stage (student: with its frozen teacher), ``model.batchnorm`` as given."""
    model = {"arch": settings.arch, "weights": "none", "batchnorm": batchnorm}
    module = kind(
        model=model, optimizer=OPTIMIZER, image_size=settings.size, compile_backbone=compile
    )
    if kind is CnnStudent:
        module.attach_frozen("teacher", MultitaskCNN(**model))
    return module


def device_batches(settings: Settings, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    shape = (settings.batch, 3, settings.size, settings.size)
    return {
        part: {
            "image": torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
            .to(device)
            .contiguous(memory_format=torch.channels_last),
            "expr": torch.randint(0, 7, (settings.batch,), generator=generator).to(device),
            "va": (torch.rand(settings.batch, 2, generator=generator) * 2 - 1).to(device),
        }
        for part in PARTS
    }


def step_rate(suite: Suite, module, batches, images: int, check_finite=True, steps=None):
    """Images/s of the stage's training step on batches already on the device (the ceiling):
    the LightningModule's own outputs and loss, its finite-loss check (one host sync per step,
    as `training_step` does) unless ``check_finite`` is off, backward and Adam."""
    settings, device = suite.settings, suite.device
    module.to(device).train()
    for network in module.frozen.values():
        network.to(device)
    if module not in suite.optimizers:
        suite.optimizers[module] = module.configure_optimizers()
    optimizer = suite.optimizers[module]

    def step() -> None:
        with autocast(device, settings.precision):
            loss = module.loss(*module.training_outputs(batches))
        if check_finite and not torch.isfinite(loss):
            raise RuntimeError("non-finite loss in the ceiling step")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    steps = steps or settings.steps
    for _ in range(settings.warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * images / (time.perf_counter() - start)


class StepTimer(pl.Callback):
    """Wall time of training steps warmup + 1 ... warmup + steps: from the end of the step before
    to the end of the last (device synchronised), so it holds as many fetches as steps."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.start = self.end = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            synchronize(module.device)
            self.start = time.perf_counter()
        elif trainer.global_step == self.warmup + self.steps:
            synchronize(module.device)
            self.end = time.perf_counter()

    def seconds(self) -> float:
        if self.start is None or self.end is None:
            raise RuntimeError(f"the fit ended before step {self.warmup + self.steps}")
        return self.end - self.start


def make_trainer(suite: Suite, max_steps: int, callbacks: list, validate=False) -> pl.Trainer:
    """The `gpu` trainer config's settings, without logger, checkpoints or (unless ``validate``)
    validation."""
    cuda = suite.device.type == "cuda"
    return pl.Trainer(
        accelerator=suite.device.type,
        devices=1,
        precision=suite.settings.precision,
        benchmark=cuda or None,
        max_steps=max_steps,
        limit_val_batches=None if validate else 0,
        num_sanity_val_steps=0,
        log_every_n_steps=20,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=suite.folder / "trainer",
    )


def cnn_data(suite: Suite, workers: int) -> CnnDataModule:
    settings = suite.settings
    return CnnDataModule(
        suite.folder / "prepared",
        batch_size=settings.batch,
        val_batch_size=settings.val_batch,
        image_size=settings.size,
        num_workers=workers,
        pin_memory=suite.device.type == "cuda",
        persistent_workers=True,
        prefetch_factor=4,
    )


def fit_rate(suite: Suite, module, datamodule, items_per_step: int, steps=None, warmup=None):
    """Items/s of `Trainer.fit` on the real datamodule, after ``warmup`` steps."""
    settings = suite.settings
    steps, warmup = steps or settings.steps, warmup or settings.warmup
    timer = StepTimer(warmup, steps)
    fitter = make_trainer(suite, warmup + steps, [timer])
    fitter.fit(module, datamodule=datamodule)
    rate = steps * items_per_step / timer.seconds()
    del fitter
    gc.collect()  # shuts the loader workers down before the next variant starts its own
    return rate


def measure_cnn_student(suite: Suite) -> dict:
    """Student training end to end vs its model-only ceiling (same module, same settings)."""
    settings, device = suite.settings, suite.device
    images = len(PARTS) * settings.batch
    batches = device_batches(settings, device)
    module = cnn_stage(CnnStudent, settings)
    variants = {
        "ceiling": lambda: step_rate(suite, module, batches, images),
        "ceiling_no_sync": lambda: step_rate(suite, module, batches, images, check_finite=False),
        "end_to_end": lambda: fit_rate(suite, module, cnn_data(suite, settings.workers), images),
    }
    for workers in settings.more_workers:
        variants[f"end_to_end_w{workers}"] = lambda w=workers: fit_rate(
            suite, module, cnn_data(suite, w), images
        )
    if settings.compile:
        compiled = cnn_stage(CnnStudent, settings, compile=True)
        variants["ceiling_compiled"] = lambda: step_rate(suite, compiled, batches, images)
        variants["end_to_end_compiled"] = lambda: fit_rate(
            suite, compiled, cnn_data(suite, settings.workers), images
        )
    result = {"unit": "images/s", "variants": suite.interleaved(variants)}
    found = result["variants"]
    result["ratios"] = {
        "end_to_end / ceiling": ratio(found["end_to_end"], found["ceiling"]),
        "ceiling / ceiling_no_sync": ratio(found["ceiling"], found["ceiling_no_sync"]),
    }
    if settings.compile:
        result["ratios"]["end_to_end_compiled / ceiling_compiled"] = ratio(
            found["end_to_end_compiled"], found["ceiling_compiled"]
        )
    return result


def measure_model_steps(suite: Suite) -> dict:
    """Model-only steps: per-part vs joint BatchNorm (student), and the teacher's step."""
    settings, device = suite.settings, suite.device
    images = len(PARTS) * settings.batch
    batches = device_batches(settings, device)
    modules = {
        "student_per_part": cnn_stage(CnnStudent, settings),
        "student_joint": cnn_stage(CnnStudent, settings, batchnorm="joint"),
        "teacher_per_part": cnn_stage(CnnTeacher, settings),
    }
    variants = {
        name: (lambda m=module: step_rate(suite, m, batches, images))
        for name, module in modules.items()
    }
    found = suite.interleaved(variants)
    ratios = {
        "student_per_part / student_joint": ratio(
            found["student_per_part"], found["student_joint"]
        ),
        "teacher_per_part / student_per_part": ratio(
            found["teacher_per_part"], found["student_per_part"]
        ),
    }
    return {"unit": "images/s", "variants": found, "ratios": ratios}


def measure_validation(suite: Suite) -> dict:
    """Images/s of `Trainer.validate` over the two Aff-Wild2 validation sets (batch 512)."""
    settings = suite.settings
    module = cnn_stage(CnnStudent, settings)

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.seconds, self.images, self.mark = 0.0, 0, None

        def on_validation_batch_end(
            self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0
        ):
            synchronize(module.device)
            if batch_idx >= 1:  # the first batch of each set starts its workers
                self.seconds += time.perf_counter() - self.mark
                self.images += len(batch["image"])
            self.mark = time.perf_counter()

    def rate() -> float:
        timer = Timer()
        validator = make_trainer(suite, 1, [timer], validate=True)
        validator.validate(module, datamodule=cnn_data(suite, settings.workers), verbose=False)
        del validator
        gc.collect()
        return timer.images / timer.seconds

    return {"unit": "images/s", "variants": suite.interleaved({"cnn": rate})}


# ---------------------------------------------------------------- input pipeline


def loader_rate(suite: Suite, loader, images_per_step: int, step=None) -> float:
    """Images/s out of a loader (one batch per part and step) after the warm-up."""
    settings = suite.settings
    iterator = iter(loader)
    for _ in range(settings.warmup):
        step(next(iterator)) if step else next(iterator)
    synchronize(suite.device)
    start = time.perf_counter()
    for _ in range(settings.steps):
        step(next(iterator)) if step else next(iterator)
    synchronize(suite.device)
    seconds = time.perf_counter() - start
    del iterator
    gc.collect()
    return settings.steps * images_per_step / seconds


class JpegFiles(Dataset):
    """A part's image files undecoded, a batch per fetch: all bytes in one uint8 tensor and the
    file lengths (one shared-memory tensor each, not one per file, between processes)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        files = [torchvision.io.read_file(str(self.paths[i])) for i in indices]
        return torch.cat(files), torch.tensor([len(f) for f in files])


def device_augment(images: list[torch.Tensor], size: int, resize: int) -> torch.Tensor:
    """Decoded CHW uint8 images (any sides) -> the CNN training transform (resize, random crop,
    random flip) on the images' device: one resize per distinct side, crops by one gather."""
    device = images[0].device
    resized = torch.empty(len(images), 3, resize, resize, device=device)
    sides: dict[tuple, list[int]] = {}
    for index, image in enumerate(images):
        sides.setdefault(tuple(image.shape), []).append(index)
    for indices in sides.values():
        group = torch.stack([images[i] for i in indices]).float()
        resized[indices] = F.interpolate(group, (resize, resize), mode="bilinear", antialias=True)
    count, span = len(images), torch.arange(size, device=device)
    top, left = torch.randint(0, resize - size + 1, (2, count, 1), device=device)
    flip = torch.rand(count, 1, device=device) < 0.5
    columns = torch.where(flip, left + size - 1 - span, left + span)
    rows = (top + span)[:, None, :, None]
    batch = resized[
        torch.arange(count, device=device)[:, None, None, None],
        torch.arange(3, device=device)[None, :, None, None],
        rows,
        columns[:, None, None, :],
    ]
    batch = batch.round_().clamp_(0, 255).to(torch.uint8)
    return batch.contiguous(memory_format=torch.channels_last)


def measure_loader(suite: Suite) -> dict:
    """The CNN datamodule's loader alone (CombinedLoader: 3 parts, samplers, OpenCV decode,
    albumentations), per worker count; with --gpu-decode also JPEG bytes decoded on the device
    (`torchvision.io.decode_jpeg`) and augmented there."""
    settings, device = suite.settings, suite.device
    images = len(PARTS) * settings.batch

    def ours(workers: int) -> float:
        datamodule = cnn_data(suite, workers)
        datamodule.setup("fit")
        return loader_rate(suite, datamodule.train_dataloader(), images)

    variants = {f"w{settings.workers}": lambda: ours(settings.workers)}
    for workers in settings.more_workers:
        variants[f"w{workers}"] = lambda w=workers: ours(w)
    if settings.gpu_decode:
        root = suite.folder / "prepared"
        files = {  # the README's prepared layout: image paths relative to the folder
            part: [
                root / image for image in pd.read_parquet(root / f"parts/{part}.parquet")["image"]
            ]
            for part in PARTS
        }
        resize = round(settings.size * 134 / 112)

        def decode(batches) -> None:
            for data, lengths in batches:
                files = list(data.split(lengths.tolist()))
                decoded = torchvision.io.decode_jpeg(files, device=device)
                device_augment(decoded, settings.size, resize)

        def on_device() -> float:
            loaders = [
                DataLoader(
                    JpegFiles(paths),
                    batch_size=settings.batch,
                    sampler=RandomSampler(paths, replacement=True, num_samples=10**7),
                    collate_fn=lambda batch: batch,
                    num_workers=settings.workers,
                    persistent_workers=False,
                    timeout=120 if settings.workers else 0,  # a stuck worker is an error
                )
                for paths in files.values()
            ]
            return loader_rate(suite, zip(*loaders, strict=False), images, step=decode)

        variants[f"gpu_decode_w{settings.workers}"] = on_device
    found = suite.interleaved(variants)
    return {"unit": "images/s", "variants": found}


# ---------------------------------------------------------------- features and GRU


def views_and_resize(settings: Settings):
    resize = round(settings.size * 134 / 112)
    return default_views(settings.size, resize, offsets=3, flip=True), resize


def cnn_checkpoint(suite: Suite) -> Path:
    """A CNN student checkpoint (random weights) for the feature extraction and online GRU."""
    path = suite.folder / "cnn_student.ckpt"
    if not path.is_file():
        module = cnn_stage(CnnStudent, suite.settings)
        state = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
        torch.save(state, path)
    return path


def extract(suite: Suite, tables: list[str], folder: Path) -> float:
    """Seconds of one whole `ensure_features` call (extraction from scratch into ``folder``)."""
    settings = suite.settings
    views, resize = views_and_resize(settings)
    trainer_kwargs = {"accelerator": suite.device.type, "precision": settings.precision}
    start = time.perf_counter()
    ensure_features(
        folder,
        cnn_checkpoint(suite),
        suite.folder / "prepared",
        tables,
        settings.size,
        resize,
        views,
        batch_size=settings.extract_batch,
        num_workers=settings.workers,
        trainer_kwargs=trainer_kwargs,
    )
    return time.perf_counter() - start


def measure_extraction(suite: Suite) -> dict:
    """Feature extraction end to end (`ensure_features`: JPEG decode, the views, the forward,
    the memmap writes) vs the forward alone at the same batch. The steady-state rate is the
    difference of two extraction lengths, which cancels the start-up (Trainer, workers)."""
    settings, device = suite.settings, suite.device
    views, _ = views_and_resize(settings)
    computed = len(set(views))
    batch = max(1, settings.extract_batch // computed) * computed
    small, big = settings.data.bench_tables
    model = MultitaskCNN(settings.arch, "none").to(device).eval()
    model.to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (batch, 3, settings.size, settings.size), dtype=torch.uint8)
    images = images.to(device).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward() -> float:
        def once() -> None:
            with autocast(device, settings.precision):
                outputs = model(images)
                torch.stack([outputs["expr_feature"], outputs["va_feature"]], 1).half()

        for _ in range(settings.warmup):
            once()
        synchronize(device)
        start = time.perf_counter()
        for _ in range(settings.steps):
            once()
        synchronize(device)
        return settings.steps * batch / (time.perf_counter() - start)

    seconds: dict[int, list[float]] = {small: [], big: []}

    def whole(frames: int) -> float:
        with tempfile.TemporaryDirectory(dir=suite.folder) as folder:
            taken = extract(suite, [f"bench/frames_{frames}"], Path(folder) / "features")
        seconds[frames].append(taken)
        return frames * computed / taken

    found = suite.interleaved(
        {
            "ceiling": forward,
            f"call_{small}": lambda: whole(small),
            f"call_{big}": lambda: whole(big),
        }
    )
    steady = [
        (big - small) * computed / (b - s)
        for s, b in zip(seconds[small], seconds[big], strict=False)
        if b > s
    ]
    found["steady_state"] = summary(steady)
    startup = [s - small * computed / r for s, r in zip(seconds[small], steady, strict=False)]
    return {
        "unit": "images/s",
        "computed_views": computed,
        "forward_batch": batch,
        "variants": found,
        "startup_s": summary(startup),
        "ratios": {
            "steady_state / ceiling": ratio(found["steady_state"], found["ceiling"]),
            f"call_{big} / ceiling": ratio(found[f"call_{big}"], found["ceiling"]),
        },
    }


def measure_feature_cache(suite: Suite) -> dict:
    """The cache of every Aff-Wild2 frame that the GRU stages read (built once, timed once)."""
    tables = [f"affwild2/{name}" for name in ("train_expr", "train_va", "val_expr", "val_va")]
    folder = suite.folder / "features"
    seconds = extract(suite, tables, folder)
    views, _ = views_and_resize(suite.settings)
    frames = json.loads((folder / "manifest.json").read_text())["frames"]
    return {
        "unit": "images/s",
        "folder": str(folder),
        "frames": frames,
        "images_per_s_whole_call": frames * len(set(views)) / seconds,
        "seconds": seconds,
    }


def gru_data(suite: Suite, features: Path | None) -> GruDataModule:
    return GruDataModule(
        suite.folder / "prepared",
        features=features,
        batch_size=suite.settings.gru_batch,
        image_size=suite.settings.size,
        num_workers=suite.settings.workers,
        pin_memory=suite.device.type == "cuda",
        persistent_workers=True,
        prefetch_factor=4,
    )


def gru_step_rate(suite: Suite, module, features: Path, frames: int) -> float:
    """Frames/s of the GRU step alone, on one real cached batch already on the device."""
    datamodule = gru_data(suite, features)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch
    batches = to_device(batch, suite.device)
    rate = step_rate(suite, module, batches, frames, steps=suite.settings.gru_steps)
    module.cpu()
    return rate


def measure_gru(suite: Suite) -> dict:
    """GRU teacher and student from the cache, the teacher's step alone on device tensors (is it
    starved by the window loader?), and the teacher with the CNN recomputed online."""
    settings = suite.settings
    cache = suite.results["measurements"].get("feature_cache")
    if cache is None:
        raise RuntimeError("no feature cache (the feature_cache measurement did not run)")
    features = Path(cache["folder"])
    frames = len(PARTS) * settings.gru_batch * 32
    teacher = GruTeacher(optimizer=OPTIMIZER)
    student = GruStudent(optimizer=OPTIMIZER)
    student.attach_frozen("teacher", TemporalModel())
    online = GruTeacher(optimizer=OPTIMIZER)
    online.attach_frozen("cnn", CnnStudent.load_network(cnn_checkpoint(suite)))
    steps, warmup = settings.gru_steps, max(2, settings.warmup // 2)
    variants = {
        "teacher_cached": lambda: fit_rate(
            suite, teacher, gru_data(suite, features), frames, steps, warmup
        ),
        "teacher_step_only": lambda: gru_step_rate(
            suite, GruTeacher(optimizer=OPTIMIZER), features, frames
        ),
        "student_cached": lambda: fit_rate(
            suite, student, gru_data(suite, features), frames, steps, warmup
        ),
        "teacher_online": lambda: fit_rate(
            suite, online, gru_data(suite, None), frames, settings.online_steps, 2
        ),
    }
    found = suite.interleaved(variants)
    return {
        "unit": "frames/s",
        "variants": found,
        "ratios": {
            "teacher_cached / teacher_online": ratio(
                found["teacher_cached"], found["teacher_online"]
            ),
            "teacher_cached / teacher_step_only": ratio(
                found["teacher_cached"], found["teacher_step_only"]
            ),
        },
    }


# ---------------------------------------------------------------- other scripts


def run_script(command: list[str], out: Path, timeout: float, env: dict | None = None) -> dict:
    """Run another benchmark script in its own process; its JSON (``out``) is the result."""
    started = time.time()
    environment = {**os.environ, **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
    if done.returncode != 0:
        raise RuntimeError(f"{command} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return {"result": json.loads(out.read_text()), "seconds": round(time.time() - started, 1)}


def measure_reference(suite: Suite, script: Path, smoke: bool) -> dict:
    """The released design re-created (`reference_design.py`), in a process of its own."""
    with tempfile.TemporaryDirectory(dir=suite.folder) as folder:
        command = [sys.executable, str(script), *(["--smoke"] if smoke else [])]
        return run_script(command, Path(folder) / "peer.json", 240, {"OUT": folder})


def measure_batchnorm_script(suite: Suite, out: Path) -> dict:
    """benchmarks/batchnorm.py (one pass vs three passes vs joint, exactness check) here."""
    script = Path(__file__).with_name("batchnorm.py")
    if not script.is_file():
        raise RuntimeError(f"{script} is not in this checkout")
    settings = suite.settings
    command = [sys.executable, str(script), "--arch", settings.arch, "--size", str(settings.size)]
    command += ["--batch", str(settings.batch), "--reps", str(max(5, settings.reps * 2))]
    command += ["--precision", settings.precision, "--out", str(out)]
    return run_script(command, out, timeout=180)


# ---------------------------------------------------------------- report


def headline(results: dict) -> dict:
    """The issue's targets, each with the figure that answers it (None: not measured)."""
    measured = results["measurements"]

    def pick(measurement: str, key: str):
        entry = measured.get(measurement, {}).get("ratios", {}).get(key)
        return None if entry is None else entry["of_medians"]

    released = [n for n in ("released_design_before", "released_design_after") if n in measured]
    reference = [measured[name]["result"].get("peer_end_to_end_img_s") for name in released]
    ours = measured.get("cnn_student", {}).get("variants", {}).get("end_to_end")
    versus = ours["median"] / statistics.median(reference) if ours and reference else None
    steps = [measured[name]["result"].get("peer_step_img_s") for name in released]
    ceiling = measured.get("cnn_student", {}).get("variants", {}).get("ceiling")
    model_gain = ceiling["median"] / statistics.median(steps) if ceiling and steps else None
    return {
        "cnn e2e / ceiling (>= 0.90)": pick("cnn_student", "end_to_end / ceiling"),
        "cnn e2e / released design (>= 3.5)": versus,
        "cnn ceiling / released design's step alone": model_gain,
        "extraction / forward ceiling (>= 0.60)": pick("extraction", "steady_state / ceiling"),
        "gru cached / online (>= 50)": pick("gru", "teacher_cached / teacher_online"),
        "gru e2e / gru step alone (~1: not starved)": pick(
            "gru", "teacher_cached / teacher_step_only"
        ),
        "per-part BN / joint, student step": pick(
            "model_steps", "student_per_part / student_joint"
        ),
    }


def report(results: dict) -> None:
    table = Table(title=f"GPU suite on {results['device']} ({results['settings']['arch']})")
    for column in ("measurement", "variant", "median", "min-max", "unit"):
        table.add_column(column, justify="right" if column in ("median", "min-max") else "left")
    for name, measured in results["measurements"].items():
        for variant, entry in measured.get("variants", {}).items():
            spread = f"{entry['min']:,.0f}-{entry['max']:,.0f}"
            table.add_row(name, variant, f"{entry['median']:,.1f}", spread, measured["unit"])
        if name.startswith("released_design"):  # its own figures, one run of its own timing
            for key, value in measured["result"].items():
                if key.startswith("peer_"):
                    unit = "frames/s" if "frames" in key else "images/s"
                    table.add_row(name, key.removeprefix("peer_"), f"{value:,.1f}", "1 run", unit)
    console.print(table)
    targets = Table(title="targets (ratios of medians, same run)")
    targets.add_column("target")
    targets.add_column("measured", justify="right")
    for key, value in results["headline"].items():
        targets.add_row(key, "not measured" if value is None else f"{value:.3f}")
    console.print(targets)
    paper = results.get("paper_estimate", {})
    for key in ("measured_40_epochs", "measured_15_epochs", "rtx4090_bf16_tensor_15_epochs"):
        if key in paper:
            console.print(f"paper table x 10 seeds, {key}: {paper[key]['table_x10_hours']} h")
    for name, error in results["errors"].items():
        console.print(f"[red]error in {name}[/]: {error.strip().splitlines()[-1]}")
    for name, reason in results["skipped"].items():
        console.print(f"[yellow]skipped {name}[/]: {reason}")


def conclude(results: dict) -> None:
    """The targets and the paper-table estimate from the measurements, then the table."""
    results["headline"] = headline(results)
    try:
        results["paper_estimate"] = estimate(results, views=results["views"])
    except Exception as error:
        results["errors"]["paper_estimate"] = repr(error)


def main() -> None:
    args = arguments()
    if args.report_only:  # e.g. of a run the watchdog ended, after fetching its JSON
        results = json.loads(args.out.read_text())
        conclude(results)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        report(results)
        return
    settings = settings_of(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":  # as the `gpu` trainer config (benchmark: true) and Lightning's
        torch.backends.cudnn.benchmark = True  # bf16-mixed set them, from the first ceiling on
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        settings = replace(settings, precision="32-true")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as tmp:
        suite = Suite(settings, args.out, device, Path(tmp))
        suite.only = set(args.only) if args.only else None
        # A hang (a stuck loader worker, say) prints every thread's stack and ends the run
        # before the device call's own limit: the JSON keeps what was measured until then.
        faulthandler.dump_traceback_later(max(suite.left(), 0) + 60, exit=True)
        name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu x{os.cpu_count()}"
        suite.results |= {
            "device": name,
            "torch": torch.__version__,
            "lightning": pl.__version__,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "smoke": args.smoke,
            "settings": asdict(settings),
            "views": len(set(views_and_resize(settings)[0])),
        }
        pl.seed_everything(0, verbose=False)
        data = suite.run(
            "data", lambda: write_prepared(Path(tmp) / "prepared", settings.data), needs_s=0
        )
        if data is None:
            raise SystemExit(f"no data: {suite.results['errors'].get('data')}")
        reference = args.reference
        if reference is not None and reference.is_file():
            suite.run(
                "released_design_before",
                lambda: measure_reference(suite, reference, args.smoke),
                needs_s=60,
            )
        elif reference is not None:
            suite.results["skipped"]["released_design"] = f"{reference} not found"
        suite.run("cnn_student", lambda: measure_cnn_student(suite), needs_s=60)
        if reference is not None and reference.is_file():
            suite.run(
                "released_design_after",
                lambda: measure_reference(suite, reference, args.smoke),
                needs_s=60,
            )
        suite.run("extraction", lambda: measure_extraction(suite), needs_s=60)
        suite.run("feature_cache", lambda: measure_feature_cache(suite), needs_s=40)
        suite.run("gru", lambda: measure_gru(suite), needs_s=45)
        suite.run("model_steps", lambda: measure_model_steps(suite), needs_s=25)
        suite.run("loader", lambda: measure_loader(suite), needs_s=25)
        suite.run("validation", lambda: measure_validation(suite), needs_s=25)
        batchnorm_out = args.out.with_name("batchnorm.json")
        suite.run("batchnorm_script", lambda: measure_batchnorm_script(suite, batchnorm_out), 30)
        conclude(suite.results)
        suite.save()
        report(suite.results)
        console.print(f"written {args.out}")


if __name__ == "__main__":
    main()

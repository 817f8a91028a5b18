"""`abaw predict`: ABAW 2021 test submissions from the cropped_aligned test crops, and CSVs with a
row per frame and face (plus a PNG per video) for videos, image folders and single images, or a
row per face of each independent photo (`--images`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from abaw_lightning.errors import UserError
from abaw_lightning.inference.detection import MARGIN
from abaw_lightning.inference.media import is_image, is_video, list_images, numbered_frames
from abaw_lightning.inference.plots import plot_video
from abaw_lightning.inference.predictor import Predictor
from abaw_lightning.inference.submission import (
    predict_stem,
    read_test_list,
    video_index,
)
from abaw_lightning.inference.tracking import MAX_GAP
from abaw_lightning.text import plural

TASK_CHOICES = {"expr": ("expr",), "va": ("va",), "both": ("expr", "va")}
FLOAT_FORMAT = "%.4f"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="videos, image folders (frames of one video, in name order; with --images: "
        "independent photos), images",
    )
    parser.add_argument("--ckpt", required=True, help="CNN-stage checkpoint (best.ckpt)")
    parser.add_argument("--gru-ckpt", help="GRU-stage checkpoint: predict over frame sequences")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--abaw-test", type=Path, help="Aff-Wild2 cropped_aligned folder")
    parser.add_argument("--list", type=Path, help="test list (one video stem per line)")
    parser.add_argument(
        "--task", choices=sorted(TASK_CHOICES), default="both", help="submission files to write"
    )
    parser.add_argument("--videos", type=Path, help="Aff-Wild2 videos folder (frame counts)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=64, help="faces per forward pass")
    parser.add_argument("--margin", type=float, default=MARGIN, help="face box margin per side")
    parser.add_argument(
        "--max-faces",
        type=int,
        metavar="N",
        help="the N most confident faces per frame (default: all; 1: the single-face mode)",
    )
    parser.add_argument(
        "--images",
        action="store_true",
        help="image folders and images are independent photos: each is predicted on its own "
        "(a row per face, numbered left to right; no tracking, gap filling or GRU across photos; "
        "videos still use --gru-ckpt)",
    )
    parser.add_argument(
        "--max-gap",
        type=int,
        default=MAX_GAP,
        metavar="FRAMES",
        help="frames in a row a face track may go undetected and still continue",
    )


def _check(args: argparse.Namespace) -> None:
    if not args.inputs and args.abaw_test is None:
        raise UserError("nothing to predict: give INPUT files/folders, or --abaw-test with --list")
    if (args.abaw_test is None) != (args.list is None):
        raise UserError("--abaw-test and --list go together: the crops folder and the test list")
    if args.videos is not None and args.abaw_test is None:
        raise UserError("--videos only counts the frames of --abaw-test videos")


def write_submissions(
    predictor: Predictor, args: argparse.Namespace, console: Console
) -> list[tuple[str, str]]:
    """The submission files of every stem of the test list; returns the (stem, error) failures."""
    stems = read_test_list(args.list)
    videos = None if args.videos is None else video_index(args.videos)
    failures = []
    for stem in stems:
        try:
            report = predict_stem(
                predictor, args.abaw_test, stem, TASK_CHOICES[args.task], args.out, videos
            )
        except UserError as error:
            failures.append((stem, str(error)))
            continue
        filled = report.frames - report.crops
        bad = f", {report.unreadable} unreadable jpgs" if report.unreadable else ""
        console.print(
            f"{stem}: {report.frames} lines ({report.crops} predicted, {filled} filled{bad})",
            markup=False,
        )
    return failures


def _unique_name(name: str, used: set[str]) -> str:
    candidate, number = name, 1
    while candidate in used:
        number += 1
        candidate = f"{name}_{number}"
    used.add(candidate)
    return candidate


def predict_input(
    predictor: Predictor, path: Path, out: Path, name: str, photos: bool = False
) -> list[Path]:
    """Predict one video, image folder or image; write its CSV (and PNG for a video). With
    `photos`, images are independent (`Predictor.predict_photos`), else one frame sequence."""
    if not path.exists():
        raise UserError(f"input not found: {path}")
    stderr = Console(stderr=True, soft_wrap=True)
    predict_stills = predictor.predict_photos if photos else predictor.predict_images
    written = []
    if path.is_dir():
        images = list_images(path)
        if not photos and not numbered_frames(images):
            stderr.print(
                f"[yellow]warning:[/] {escape(str(path))}: the names are not numbered frames "
                "(like 00001.jpg, 00002.jpg), yet the images are predicted as one video, faces "
                "tracked across them; add --images if they are independent photos",
                highlight=False,
            )
        table = predict_stills(images)
    elif is_video(path):
        table = predictor.predict_video(path)
        decoded, listed = table["frame"].max() + 1, table.attrs["listed_frames"]
        if decoded < listed:
            stderr.print(
                f"[yellow]warning:[/] {escape(str(path))}: {decoded} of the {listed} frames its "
                "container lists could be decoded (the video is damaged or cut short); the CSV "
                "has the decoded ones",
                highlight=False,
            )
        written.append(plot_video(table, out / f"{name}.png", path.name))
    elif is_image(path):
        table = predict_stills([path])
    else:
        raise UserError(f"{path} is neither a video, an image nor a folder of images")
    unreadable = table.attrs.get("unreadable", [])
    if unreadable:
        stderr.print(
            f"[yellow]warning:[/] {len(unreadable)} unreadable image(s) in {escape(str(path))} "
            f"left out (first: {escape(unreadable[0])})",
            highlight=False,
        )
    csv = out / f"{name}.csv"
    table.to_csv(csv, index=False, float_format=FLOAT_FORMAT)
    return [csv, *written]


def run(args: argparse.Namespace) -> int:
    _check(args)
    console = Console(soft_wrap=True, highlight=False)
    predictor = Predictor.from_checkpoints(
        args.ckpt,
        args.gru_ckpt,
        args.device,
        batch_size=args.batch_size,
        margin=args.margin,
        max_faces=args.max_faces,
        max_gap=args.max_gap,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    failures = []
    if args.abaw_test is not None:
        try:
            failures += write_submissions(predictor, args, console)
        except UserError as error:
            failures.append((str(args.list), str(error)))
    used: set[str] = set()
    for item in args.inputs:
        path = Path(item)
        name = _unique_name(path.stem if path.is_file() else path.resolve().name, used)
        try:
            written = predict_input(predictor, path, args.out, name, args.images)
        except UserError as error:
            failures.append((item, str(error)))
            continue
        console.print(f"{path}: " + ", ".join(str(p) for p in written), markup=False)
    if failures:
        errors = Console(stderr=True, soft_wrap=True, highlight=False)
        errors.print(f"[bold red]{plural(len(failures), 'input')} failed:[/]")
        for item, message in failures:
            errors.print(f"  {item}: {message}", markup=False)
        return 1
    return 0

"""Advice about a prepared folder that actually fixes it: the `abaw prepare` command that rebuilds
it (from its manifest) and what to do about a crop or frame that cannot be read."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np

from abaw_lightning.data.images import read_image
from abaw_lightning.errors import UserError

MANIFEST = "manifest.json"
AFFWILD2_IMAGES = "affwild2_images"
"""The link to Aff-Wild2's cropped_aligned folder; every other image is one of prepare's crops."""
SOURCE_FLAGS = {
    "affwild2": "--affwild2",
    "expw": "--expw",
    "afew_va": "--afew-va",
    "affectnet": "--affectnet",
}


def prepare_command(root: Path) -> str:
    """`abaw prepare` with the sources and options `<root>/manifest.json` records, or with
    ``...`` for the sources when there is no readable manifest."""
    root = Path(root)
    out = f"--out {shlex.quote(str(root))}"
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        sources = {name: manifest["sources"].get(name) for name in SOURCE_FLAGS}
        expr_va_source = manifest.get("options", {}).get("expr_va_source", "affectnet")
    except (OSError, ValueError, KeyError, AttributeError):
        return f"abaw prepare ... {out}"
    if not sources["affwild2"]:
        return f"abaw prepare ... {out}"
    words = [f"{SOURCE_FLAGS[name]} {shlex.quote(path)}" for name, path in sources.items() if path]
    if expr_va_source != "affectnet":
        words.append(f"--expr-va-source {expr_va_source}")
    return " ".join(["abaw prepare", *words, out])


def unreadable_image_advice(root: Path, image: str) -> str:
    """What fixes image ``image`` (relative to the prepared folder ``root``) that is missing or
    does not decode: prepare leaves out Aff-Wild2 frames without a jpg and makes missing crops."""
    root, path = Path(root), Path(root) / image
    command = prepare_command(root)
    if Path(image).parts[:1] == (AFFWILD2_IMAGES,):
        link = root / AFFWILD2_IMAGES
        if link.is_symlink() and not link.exists():
            return (
                f"{link} points to {os.readlink(link)}, which does not exist (was Aff-Wild2 "
                "moved?): re-run `abaw prepare` with --affwild2 at its new place and the other "
                f"options as before: {command}"
            )
        if not path.exists():
            return (
                "this Aff-Wild2 frame is missing (the dataset changed after `abaw prepare`): "
                f"re-run `{command}`, which leaves out frames without a jpg."
            )
        return (
            "this Aff-Wild2 frame does not decode: restore it from the Aff-Wild2 archive, or "
            f"delete it and re-run `{command}`, which then leaves the frame out."
        )
    if not path.exists():
        return f"this crop is missing: re-run `{command}`, which makes missing crops again."
    return f"this crop does not decode: delete it and re-run `{command}`, which makes it again."


def read_prepared_image(root: Path, image: str, where: str = "") -> np.ndarray:
    """The RGB crop or frame ``image`` of the prepared folder ``root``; one that cannot be read
    is a UserError naming it (and ``where``, e.g. its table row) and what fixes it."""
    path = Path(root) / image
    try:
        if path.is_file():  # OpenCV would also print a warning for a missing file
            return read_image(path)
    except UserError:
        pass
    place = f" ({where})" if where else ""
    raise UserError(f"cannot read {path}{place}: {unreadable_image_advice(root, image)}")

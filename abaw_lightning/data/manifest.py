"""`<prepared>/manifest.json`: its format version, content identity, atomic writes, and the check
that training reads only a complete folder of this format (README "Prepared dataset layout")."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

from abaw_lightning.errors import UserError

MANIFEST = "manifest.json"
PREPARED_FORMAT = 2
"""Version of the prepared folder. 2: square crops of at least 134 px (aspect ratio kept, AFEW-VA
aligned on the eye corners), verified Aff-Wild2 frames, tables' content identity (`data_id`).
Folders of another version are refused at training time."""
SOURCE_FLAGS = {
    "affwild2": "--affwild2",
    "expw": "--expw",
    "afew_va": "--afew-va",
    "affectnet": "--affectnet",
}
"""`abaw prepare` option of each source named in the manifest, in the command's order."""


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def data_id(table_hashes: dict[str, str], options: dict) -> str:
    """Short content identity of a prepared folder: its tables' sha256 and the options that decide
    the crops' pixels (no paths), so the same data prepared anywhere has the same id."""
    identity = {"format": PREPARED_FORMAT, "options": options, "tables": table_hashes}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_command(root: Path, manifest: dict | None) -> str:
    """The `abaw prepare` command that rebuilds `root`, with the sources its manifest names."""
    sources = manifest.get("sources") if isinstance(manifest, dict) else None
    parts = ["abaw", "prepare"]
    if isinstance(sources, dict) and sources.get("affwild2"):
        for name, flag in SOURCE_FLAGS.items():
            if sources.get(name):
                parts += [flag, shlex.quote(str(sources[name]))]
        options = manifest.get("options") or {}
        if options.get("expr_va_source") == "affwild2":
            parts += ["--expr-va-source", "affwild2"]
    else:
        parts += ["--affwild2", "<Aff-Wild2 folder>", "[--expw ... --afew-va ... --affectnet ...]"]
    return " ".join([*parts, "--out", shlex.quote(str(root))])


def read_manifest(root: Path) -> dict | None:
    """The parsed `<root>/manifest.json`, None when there is none; a UserError when unreadable."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(
            f"cannot read {path} ({error}): the prepared folder {root} is damaged; rebuild it "
            f"with `{prepare_command(Path(root), None)}`."
        ) from error
    if not isinstance(manifest, dict):
        raise UserError(
            f"{path} is not a JSON object: rebuild {root} with "
            f"`{prepare_command(Path(root), None)}`."
        )
    return manifest


def check_prepared(root: Path | str) -> dict | None:
    """The manifest of a complete prepared folder of this format; None for a folder without one
    (hand-made tables). A UserError naming the folder and the command that rebuilds it when the
    manifest is of another format or says that `abaw prepare` did not finish."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        return None
    found = manifest.get("format")
    command = prepare_command(root, manifest)
    if found != PREPARED_FORMAT:
        made_by = "an older" if not isinstance(found, int) or found < PREPARED_FORMAT else "a newer"
        raise UserError(
            f"prepared folder {root} was made by {made_by} `abaw prepare` (format "
            f"{found if found is not None else 1}; this version reads format {PREPARED_FORMAT}): "
            f"rerun `{command}` (it redoes the crops and tables)."
        )
    if manifest.get("complete") is not True:
        raise UserError(
            f"prepared folder {root} is incomplete: `abaw prepare` was interrupted while "
            f"writing it. Rerun `{command}`."
        )
    return manifest


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to a temporary name beside `path`, flush it to disk, then rename it over `path`:
    a reader sees the old file or the new one, never a part."""
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    sync_dir(path.parent)


def sync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames) to disk where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

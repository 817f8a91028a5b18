"""`<prepared>/manifest.json`: its format version, content identity, atomic writes, and the check
that training reads only a complete folder of this format (README "Prepared dataset layout")."""

from __future__ import annotations

import hashlib
import json
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


def data_id(table_hashes: dict[str, str], options: dict) -> str:
    """Short content identity of a prepared folder: its tables' sha256 and the options that decide
    the crops' pixels (no paths), so the same data prepared anywhere has the same id."""
    identity = {"format": PREPARED_FORMAT, "options": options, "tables": table_hashes}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_command(root: Path, manifest: dict | None = None) -> str:
    """The `abaw prepare` command that rebuilds ``root``, with the sources and options its
    manifest records (read from ``root`` when not given); ``...`` for the sources when there is
    no readable manifest naming them."""
    root = Path(root)
    if manifest is None:
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except (OSError, ValueError):
            manifest = None
    sources = manifest.get("sources") if isinstance(manifest, dict) else None
    out = f"--out {shlex.quote(str(root))}"
    if not isinstance(sources, dict) or not sources.get("affwild2"):
        return f"abaw prepare ... {out}"
    words = [
        f"{flag} {shlex.quote(str(sources[name]))}"
        for name, flag in SOURCE_FLAGS.items()
        if sources.get(name)
    ]
    options = manifest.get("options") or {}
    if options.get("expr_va_source") == "affwild2":
        words.append("--expr-va-source affwild2")
    return " ".join(["abaw prepare", *words, out])


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
            f"with `{prepare_command(Path(root), {})}`."
        ) from error
    if not isinstance(manifest, dict):
        raise UserError(
            f"{path} is not a JSON object: rebuild {root} with `{prepare_command(Path(root), {})}`."
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

"""`abaw prepare`: the four datasets -> the prepared folder of README "Prepared dataset layout"."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from abaw_lightning.data.ingest import balancing
from abaw_lightning.data.ingest.crops import (
    CROP_FORMAT,
    CROP_MAX,
    CROP_MIN,
    JPEG_QUALITY,
    CropJob,
    box_square,
    clear_stale_crops,
    eye_aligned_square,
    landmark_square,
    make_crops,
    remove_partial_crops,
)
from abaw_lightning.data.ingest.image_files import frame_problem
from abaw_lightning.data.ingest.pool import map_with_progress
from abaw_lightning.data.ingest.readers import AFFWILD2_IMAGES, COLUMNS, CROPS, Skipped, require_dir
from abaw_lightning.data.ingest.readers.afew_va import read_afew_va
from abaw_lightning.data.ingest.readers.affectnet import read_affectnet
from abaw_lightning.data.ingest.readers.affwild2 import images_dir, read_affwild2
from abaw_lightning.data.ingest.readers.expw import read_expw
from abaw_lightning.data.manifest import MANIFEST, PREPARED_FORMAT, SOURCE_FLAGS, data_id
from abaw_lightning.errors import UserError
from abaw_lightning.files import sha256_file, sync_dir, write_json_atomic

DEFAULT_WORKERS = max(1, min(8, os.cpu_count() or 1))


EXPR_VA_SOURCES = ("affectnet", "affwild2")


SOURCES = ("affwild2", "expw", "afew_va", "affectnet")


VA_STEP = 5
"""The `va` part keeps Aff-Wild2 rows whose number is a multiple of this (METHOD.md section 1)."""


EXPR_VA_STEP = 3
"""The `affwild2` variant of `expr_va` keeps rows whose number is a multiple of this."""


KEY = ["video", "frame"]


def share_labels(expr: pd.DataFrame, va: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """EXPR rows with VA of the same (video, frame) of `va`, and VA rows with `expr`'s expression.

    Call it with tables of one split only: labels never cross splits.
    """
    with_va = expr.drop(columns=["valence", "arousal"]).merge(
        va[[*KEY, "valence", "arousal"]], on=KEY, how="left", validate="one_to_one"
    )
    with_expr = va.drop(columns=["expr"]).merge(
        expr[[*KEY, "expr"]], on=KEY, how="left", validate="one_to_one"
    )
    with_expr["expr"] = with_expr["expr"].fillna(-1).astype(np.int8)
    return with_va[COLUMNS], with_expr[COLUMNS]


READERS = {"expw": read_expw, "afew_va": read_afew_va, "affectnet": read_affectnet}


def _crop_job(name: str, src: str, dst: Path, row: pd.Series) -> CropJob:
    """The crop of one row: ExpW box, AffectNet landmark square, AFEW-VA eye-aligned square."""
    if name == "expw":
        box = (int(row[k]) for k in ("top", "left", "right", "bottom"))
        return CropJob(src, str(dst), box_square(*box))
    if name == "affectnet":
        return CropJob(src, str(dst), landmark_square(row["landmarks"]))
    return CropJob(src, str(dst), eye_aligned_square(row["landmarks"]))


def read_and_crop(
    name: str, root: Path, out: Path, workers: int, skipped: Skipped
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows of one cropped source whose crop exists in `out`, and the crop statistics.

    AffectNet rows without valence/arousal are dropped first (the `expr_va` part needs both).
    Crops of another crop format (112x112 stretched ones of format 1) are deleted and made again.
    """
    read = READERS[name](root)
    skipped.update(read.skipped)
    rows = read.rows
    if name == "affectnet":
        no_va = rows["valence"].isna() | rows["arousal"].isna()
        for src in rows.loc[no_va, "src_path"]:
            skipped.add("valence/arousal not annotated (-2)", src)
        rows = rows[~no_va].reset_index(drop=True)
    stale = clear_stale_crops(out / CROPS / name)
    jobs = [_crop_job(name, row["src_path"], out / row["image"], row) for _, row in rows.iterrows()]
    report = make_crops(jobs, workers=workers, label=f"cropping {name}")
    for job in jobs:
        if job.dst in report.failed:
            skipped.add(report.failed[job.dst], job.src)
    failed = np.array([job.dst in report.failed for job in jobs], dtype=bool)
    stats = {
        "made": report.made,
        "reused": report.reused,
        "redone": report.redone,
        "failed": len(report.failed),
        "stale_deleted": stale,
    }
    return rows[~failed][COLUMNS].reset_index(drop=True), stats


def read_affwild2_tables(
    root: Path, skipped: Skipped, workers: int
) -> tuple[dict[str, pd.DataFrame], dict]:
    """`train_expr`, `train_va`, `val_expr`, `val_va`, with secondary labels from the same split,
    and the frame check: every kept frame's jpg must be a complete JPEG that decodes."""
    reads = {
        (split, task): read_affwild2(root, task, split)
        for split in ("train", "val")
        for task in ("expr", "va")
    }
    folder = images_dir(root)
    distinct = sorted(set().union(*(set(read.rows["image"]) for read in reads.values())))
    bad = check_frames(folder, distinct, workers)
    tables = {}
    for split in ("train", "val"):
        kept = {}
        for task in ("expr", "va"):
            read = reads[(split, task)]
            prefix = f"{task.upper()} {split}: "
            skipped.update(read.skipped, prefix=prefix)
            is_bad = read.rows["image"].isin(bad)
            for image in read.rows["image"][is_bad]:
                skipped.add(f"{prefix}bad jpg: {bad[image]}", frame_file(folder, image))
            kept[task] = read.rows[~is_bad].reset_index(drop=True)
        tables[f"{split}_expr"], tables[f"{split}_va"] = share_labels(kept["expr"], kept["va"])
    report = {
        "checked": len(distinct),
        "bad": len(bad),
        "bad_files": {frame_file(folder, image): bad[image] for image in sorted(bad)},
    }
    return tables, report


def frame_file(folder: Path, image: str) -> str:
    """The file in Aff-Wild2's cropped_aligned `folder` of a table's `image`
    (`affwild2_images/<stem>/<name>`)."""
    return os.path.join(folder, image.removeprefix(f"{AFFWILD2_IMAGES}/"))


def check_frames(folder: Path, images: list[str], workers: int) -> dict[str, str]:
    """`image` -> reason for every one of `images` whose jpg is empty, truncated, not a JPEG or
    does not decode, checked by `workers` processes with a progress bar."""
    paths = [frame_file(folder, image) for image in images]
    problems = map_with_progress(frame_problem, paths, workers, "checking Aff-Wild2 frames")
    return {image: p for image, p in zip(images, problems, strict=True) if p is not None}


def build_parts(
    affwild2: dict[str, pd.DataFrame], other: dict[str, pd.DataFrame], expr_va_source: str
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, int]]]:
    """The three parts (decimated Aff-Wild2 rows, then the other source's rows, with `weight`),
    and the Aff-Wild2 row counts before/after decimation."""
    train_expr, train_va = affwild2["train_expr"], affwild2["train_va"]
    decimated = {
        "expr": (train_expr, balancing.decimate_expr(train_expr["expr"].to_numpy())),
        "va": (train_va, balancing.decimate_every(len(train_va), VA_STEP)),
    }
    if expr_va_source == "affwild2":
        both = train_expr[train_expr["valence"].notna()]
        decimated["expr_va"] = (both, balancing.decimate_every(len(both), EXPR_VA_STEP))
    added = {"expr": "expw", "va": "afew_va", "expr_va": "affectnet"}
    parts = {}
    for name, source in added.items():
        pieces = []
        if name in decimated:
            table, keep = decimated[name]
            pieces.append(table[keep])
        if source in other:
            pieces.append(other[source])
        parts[name] = pd.concat(pieces, ignore_index=True)
    parts["expr"]["weight"] = balancing.expr_weights(parts["expr"]["expr"].to_numpy())
    parts["va"]["weight"] = balancing.va_weights(
        parts["va"]["valence"].to_numpy(), parts["va"]["arousal"].to_numpy()
    )
    parts["expr_va"]["weight"] = balancing.expr_va_weights(
        *(parts["expr_va"][c].to_numpy() for c in ("expr", "valence", "arousal"))
    )
    decimation = {
        name: {"affwild2_before": len(table), "affwild2_after": int(keep.sum())}
        for name, (table, keep) in decimated.items()
    }
    return parts, decimation


def _link_images(out: Path, affwild2: Path) -> None:
    """Point `<out>/affwild2_images` at Aff-Wild2's cropped_aligned (replacing an older link)."""
    link = out / AFFWILD2_IMAGES
    target = images_dir(affwild2).resolve()
    if link.is_symlink():
        if link.resolve() == target:
            return
        link.unlink()
    elif link.exists():
        raise UserError(f"{link} exists and is not a symbolic link; move it away and re-run.")
    link.symlink_to(target, target_is_directory=True)


def _counts(table: pd.DataFrame) -> dict[str, int]:
    by_source = table["source"].value_counts()
    return {**{s: int(by_source[s]) for s in SOURCES if s in by_source}, "total": len(table)}


def prepare(
    affwild2: Path | str,
    out: Path | str,
    expw: Path | str | None = None,
    afew_va: Path | str | None = None,
    affectnet: Path | str | None = None,
    expr_va_source: str = "affectnet",
    workers: int = DEFAULT_WORKERS,
    replace: bool = False,
) -> dict:
    """Build the prepared folder `out` (parts, Aff-Wild2 tables, crops, manifest); return manifest.

    `out` must be new, empty or an earlier prepare's folder (`check_out`); a prepared folder is
    replaced by one without some of its datasets only with `replace`. Re-running into the same
    folder reuses the crops there that check out. The tables and the manifest are published last
    (`_publish`): an interrupted run leaves the previous complete folder or one that training
    refuses and the next run rebuilds.
    """
    console = Console()
    if expr_va_source not in EXPR_VA_SOURCES:
        raise UserError(
            f"--expr-va-source must be one of {EXPR_VA_SOURCES}, not {expr_va_source!r}"
        )
    paths = _source_paths(
        {"affwild2": affwild2, "expw": expw, "afew_va": afew_va, "affectnet": affectnet}
    )
    used_expr_va = expr_va_source
    if expr_va_source == "affectnet" and "affectnet" not in paths:
        used_expr_va = "affwild2"
    out = Path(out)
    check_out(out, paths, used_expr_va, replace)
    previous = _previous_data_id(out)
    for name in ("expw", "afew_va", "affectnet"):
        if name not in paths:
            flag = name.replace("_", "-")
            console.print(f"[yellow]warning:[/] no --{flag} given: {_missing_effect(name)}")
    if expr_va_source == "affwild2" and "affectnet" in paths:
        console.print("[yellow]warning:[/] --expr-va-source affwild2: AffectNet is not used.")
    options = {
        "expr_va_source": expr_va_source,
        "expr_va_source_used": used_expr_va,
        "workers": workers,
        "crop_format": CROP_FORMAT,
        "crop_min": CROP_MIN,
        "crop_max": CROP_MAX,
        "jpeg_quality": JPEG_QUALITY,
    }
    sources = {name: str(paths[name]) if name in paths else None for name in SOURCES}
    skipped = {name: Skipped() for name in paths}

    affwild2_tables, frames = read_affwild2_tables(paths["affwild2"], skipped["affwild2"], workers)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MANIFEST).is_file():  # a new folder is marked as prepare's before any write
        write_json_atomic(out / MANIFEST, _incomplete(sources, options))
    _remove_partials(out)
    _link_images(out, paths["affwild2"])
    cropped = [n for n in ("expw", "afew_va") if n in paths]
    cropped += ["affectnet"] if used_expr_va == "affectnet" else []
    other, crop_stats = {}, {}
    for name in cropped:
        other[name], crop_stats[name] = read_and_crop(
            name, paths[name], out, workers, skipped[name]
        )
    parts, decimation = build_parts(affwild2_tables, other, used_expr_va)
    for name, table in parts.items():
        if table.empty:
            console.print(f"[yellow]warning:[/] part {name} has no rows; training cannot use it.")

    tables = {f"parts/{name}": table for name, table in parts.items()}
    tables.update({f"affwild2/{name}": table for name, table in affwild2_tables.items()})
    written = _write_partial_tables(out, tables)
    manifest = {
        "format": PREPARED_FORMAT,
        "complete": True,
        "data_id": data_id(
            {name: entry["sha256"] for name, entry in written.items()},
            {key: options[key] for key in IDENTITY_OPTIONS},
        ),
        "sources": sources,
        "options": options,
        "tables": written,
        "rows": {name: _counts(table) for name, table in tables.items()},
        "decimation": decimation,
        "affwild2_videos": _video_counts(affwild2_tables),
        "affwild2_frames": frames,
        "crops": crop_stats,
        "skipped": {name: skipped[name].to_dict() for name in SOURCES if name in skipped},
    }
    _publish(out, list(tables), manifest)
    _print_summary(console, manifest, out)
    if previous is not None and previous != manifest["data_id"]:
        console.print(
            f"[yellow]warning:[/] {out} now holds other data than before (data_id {previous} -> "
            f"{manifest['data_id']}): runs trained on the previous data stay in the store, but "
            "every stage trains again on this data",
            highlight=False,
        )
    return manifest


def _previous_data_id(out: Path) -> str | None:
    """The data_id of the complete prepared folder a run replaces, if there is one."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(manifest, dict) or manifest.get("complete") is not True:
        return None
    found = manifest.get("data_id")
    return found if isinstance(found, str) else None


IDENTITY_OPTIONS = ("expr_va_source_used", "crop_format", "crop_min", "crop_max", "jpeg_quality")
"""Options that decide the prepared content beyond the tables (`workers` does not), in `data_id`."""


PARTIAL = ".partial"
"""Suffix of a table written but not yet published (renamed into place at the very end)."""


def _incomplete(sources: dict, options: dict) -> dict:
    """The manifest of a folder being written: it names the folder as prepare's and says that
    training must not read it yet."""
    return {"format": PREPARED_FORMAT, "sources": sources, "options": options, "complete": False}


FOLDER_ADVICE = "choose an empty or new folder, or the folder of an earlier `abaw prepare`"


def check_out(out: Path, paths: dict[str, Path], expr_va_used: str, replace: bool) -> None:
    """A UserError, before anything is read or written, unless `out` is new, empty or an earlier
    prepare's folder (it holds manifest.json); and, unless `replace`, when it is a complete
    prepared folder with datasets this run would drop (that changes its data identity)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: {FOLDER_ADVICE}.")
    if not out.is_dir():
        return
    if not (out / MANIFEST).is_file():
        if any(not _is_partial_manifest(path) for path in out.iterdir()):
            raise UserError(
                f"--out {out} is not empty and holds no {MANIFEST}, so it is not a folder of "
                f"`abaw prepare`; nothing was written: {FOLDER_ADVICE}."
            )
        return
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # a damaged manifest: the folder is rebuilt
    if replace or not isinstance(manifest, dict) or manifest.get("complete") is False:
        return
    sources = manifest.get("sources") if isinstance(manifest.get("sources"), dict) else {}
    options = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
    before = _datasets(sources, options.get("expr_va_source_used", "affectnet"))
    dropped = [name for name in before if name not in _datasets(paths, expr_va_used)]
    if not dropped:
        return
    again = [f"{SOURCE_FLAGS[n]} {shlex.quote(str(sources[n]))}" for n in dropped if n not in paths]
    remedies = [f"pass {' '.join(again)} again"] if again else []
    if "affectnet" in dropped and "affectnet" in paths:
        remedies.append("leave out --expr-va-source affwild2")
    raise UserError(
        f"--out {out} is a prepared folder of {', '.join(before)}; this run would replace it "
        f"without {', '.join(dropped)}, which changes its data (data_id), so every stage trained "
        f"on it would train again. Nothing was written: {' and '.join(remedies)}, choose another "
        f"--out, or add --replace to rebuild {out} without them."
    )


def _is_partial_manifest(path: Path) -> bool:
    """What a run killed while writing the manifest of a new folder leaves in it."""
    return path.name.startswith(f".{MANIFEST}") and path.name.endswith(PARTIAL)


def _datasets(sources: dict, expr_va_used: str) -> list[str]:
    """The datasets whose rows a prepared folder holds: its sources, AffectNet only when the
    expr_va part was built from it."""
    return [
        name
        for name in SOURCES
        if sources.get(name) and (name != "affectnet" or expr_va_used == "affectnet")
    ]


def _remove_partials(out: Path) -> None:
    """Delete what a killed run left half-written: partial tables, manifest and crops."""
    for pattern in (f"*/*.parquet{PARTIAL}", f".{MANIFEST}*{PARTIAL}"):
        for path in out.glob(pattern):
            path.unlink()
    if (out / CROPS).is_dir():
        remove_partial_crops(out / CROPS)


def _write_partial_tables(out: Path, tables: dict[str, pd.DataFrame]) -> dict[str, dict]:
    """Write every table to `<name>.parquet.partial`, flushed to disk; their rows and sha256."""
    written = {}
    for name, table in tables.items():
        path = out / f"{name}.parquet{PARTIAL}"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(path, index=False)
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        written[name] = {"rows": len(table), "sha256": sha256_file(path)}
    return written


def _publish(out: Path, names: list[str], manifest: dict) -> None:
    """Put the partial tables in place and the manifest last, each step atomic.

    First the manifest is replaced by one that says `complete: false`, so a kill between the
    renames leaves a folder that training refuses (and the next prepare rebuilds) instead of new
    tables beside an old manifest; a kill before it leaves the previous complete state.
    """
    write_json_atomic(out / MANIFEST, _incomplete(manifest["sources"], manifest["options"]))
    for name in names:
        final = out / f"{name}.parquet"
        os.replace(final.with_name(final.name + PARTIAL), final)
    for folder in {(out / name).parent for name in names}:
        sync_dir(folder)
    write_json_atomic(out / MANIFEST, manifest)


def _source_paths(given: dict[str, Path | str | None]) -> dict[str, Path]:
    """Absolute folders of the sources given; a UserError for one that is not a folder."""
    paths = {}
    for name, path in given.items():
        if path is not None:
            flag = f"--{name.replace('_', '-')}"
            paths[name] = require_dir(Path(path), f"{flag} folder", "Check the path.").resolve()
    return paths


def _missing_effect(name: str) -> str:
    return {
        "expw": "the expr part is built from Aff-Wild2 alone.",
        "afew_va": "the va part is built from Aff-Wild2 alone.",
        "affectnet": "the expr_va part is built from Aff-Wild2 (train frames with both labels, "
        "every 3rd).",
    }[name]


def _video_counts(tables: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Aff-Wild2 stems per task and split, and those with both annotations (overall, per split)."""
    stems = {name: set(table["video"]) for name, table in tables.items()}
    expr_all = stems["train_expr"] | stems["val_expr"]
    va_all = stems["train_va"] | stems["val_va"]
    return {
        **{name: len(s) for name, s in stems.items()},
        "with_both_annotations": len(expr_all & va_all),
        "with_both_annotations_train": len(stems["train_expr"] & stems["train_va"]),
        "with_both_annotations_val": len(stems["val_expr"] & stems["val_va"]),
    }


def _print_summary(console: Console, manifest: dict, out: Path) -> None:
    """Tables of rows (table x source) and skipped rows (source, reason)."""
    rows = Table(title=f"prepared {out}")
    rows.add_column("table")
    for source in (*SOURCES, "total"):
        rows.add_column(source, justify="right")
    for name, counts in manifest["rows"].items():
        rows.add_row(name, *(str(counts.get(s, "-")) for s in (*SOURCES, "total")))
    console.print(rows)
    skipped = Table(title="skipped rows")
    for column in ("source", "reason", "rows"):
        skipped.add_column(column, justify="right" if column == "rows" else "left")
    for source, entry in manifest["skipped"].items():
        for reason, count in entry["counts"].items():
            skipped.add_row(source, reason, str(count))
    if skipped.row_count:
        console.print(skipped)
    frames = manifest["affwild2_frames"]
    console.print(f"Aff-Wild2 frames checked: {frames['checked']}, bad (skipped): {frames['bad']}")
    videos = manifest["affwild2_videos"]
    both, train, val = (videos[f"with_both_annotations{split}"] for split in ("", "_train", "_val"))
    console.print(
        f"Aff-Wild2 videos with both annotations: {both} ({train} within train, {val} within "
        f"validation, {both - train - val} across the two)"
    )

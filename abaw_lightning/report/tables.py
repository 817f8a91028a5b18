"""Mean +/- std over seeds per report row (experiment, variant, stage), laid out like the paper's
tables, and paired comparisons of two rows, as a DataFrame, Markdown, CSV, JSON or a rich table."""

from __future__ import annotations

import json
import math

import pandas as pd
from rich.table import Table
from rich.text import Text

from abaw_lightning.report.runs import METRICS, PAPER
from abaw_lightning.text import decimals

PAPER_COLUMNS = ("paper_expr", "paper_valence", "paper_arousal")
TEXT_COLUMNS = ("experiment", "variant", "settings", "stage", "incomplete", "metric")
DISPLAY = {
    "expr_score": "EXPR",
    "ccc_v": "Valence",
    "ccc_a": "Arousal",
    "expr_f1": "F1",
    "expr_acc": "Acc",
    "total": "Total",
}
"""Display columns in the paper's order (EXPR score, CCC valence, CCC arousal), then the rest."""


def _incomplete(group: pd.DataFrame) -> list[str]:
    return [f"seed {r.seed}: {r.status}" for r in group[~group["complete"]].itertuples()]


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per report row (experiment, variant, stage; ``settings``: the variant's full
    label, where ``variant`` may be its short name): n complete seeds, mean and sample std
    (ddof=1) of every metric over them, the incomplete seeds, the data source and, on real ABAW
    2021 data, the paper's figures for the row the stage reproduces."""
    rows = []
    for row_name, group in runs.groupby("row", sort=False):
        first = group.iloc[0]
        done = group[group["complete"]]
        sources = set(done["data"]) or set(group["data"])
        data = sources.pop() if len(sources) == 1 else "mixed"
        rows_named = done["paper_row"].dropna().unique()
        paper = PAPER.get(rows_named[0]) if data == "abaw2021" and len(rows_named) == 1 else None
        row = {
            "row": row_name,
            "experiment": first["experiment"],
            "variant": first["variant"],
            "settings": first["settings"],
            "stage": first["stage"],
            "n": len(done),
            "seeds": [int(s) for s in done["seed"]],
            "incomplete": _incomplete(group),
            "data": data,
        }
        for name in METRICS:
            values = done[name].astype(float)
            row[f"{name}_mean"] = values.mean() if len(values) else math.nan
            row[f"{name}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        row |= dict(zip(PAPER_COLUMNS, paper or (math.nan,) * 3, strict=True))
        row["paper_row"] = rows_named[0] if paper else None
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return decimals(mean) if math.isnan(std) else f"{decimals(mean)} ± {decimals(std)}"


def format_table(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for display: "mean ± std" cells, paper figures when any row has them, the
    incomplete seeds when there are any, and the full settings where a variant is shown by its
    short name."""
    shown = pd.DataFrame({"experiment": table["experiment"]})
    if table["variant"].astype(bool).any():
        shown["variant"] = table["variant"]
    if (table["settings"] != table["variant"]).any():
        shown["settings"] = table["settings"]
    shown["stage"] = table["stage"]
    shown["n"] = table["n"].astype(str)
    for name, title in DISPLAY.items():
        means, stds = table[f"{name}_mean"], table[f"{name}_std"]
        shown[title] = [_cell(m, s) for m, s in zip(means, stds, strict=True)]
    if table[list(PAPER_COLUMNS)].notna().any(axis=None):
        for column, title in zip(PAPER_COLUMNS, ("paper EXPR", "paper V", "paper A"), strict=True):
            shown[title] = ["" if math.isnan(v) else decimals(v) for v in table[column]]
    if table["incomplete"].map(len).any():
        shown["incomplete"] = table["incomplete"].map("; ".join)
    return shown


def to_markdown(table: pd.DataFrame) -> str:
    """The formatted table as a GitHub Markdown table."""
    return markdown(format_table(table))


def markdown(shown: pd.DataFrame) -> str:
    """A table of strings as GitHub Markdown (text columns left-aligned, numbers right)."""
    lines = ["| " + " | ".join(shown.columns) + " |"]
    lines.append("|" + "|".join("---" if c in TEXT_COLUMNS else "---:" for c in shown) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def plain(table: pd.DataFrame) -> list[dict]:
    """Records with NaN as None (valid JSON)."""
    return [
        {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in row.items()}
        for row in table.to_dict(orient="records")
    ]


def to_json(table: pd.DataFrame) -> str:
    return json.dumps(plain(table), indent=2) + "\n"


def to_csv(table: pd.DataFrame) -> str:
    """Numbers in full precision; seed lists space-separated, incomplete seeds `; `-separated."""
    flat = table.assign(
        seeds=table["seeds"].map(lambda seeds: " ".join(map(str, seeds))),
        incomplete=table["incomplete"].map("; ".join),
    )
    return flat.to_csv(index=False)


FORMATS = {"md": to_markdown, "csv": to_csv, "json": to_json}


TEXT_MIN_WIDTH = 11
"""Narrowest a folded text column gets (or its header's width) on a narrow terminal, where rich
would take it to nothing; 11 keeps ``cnn_teacher`` and a short name such as ``v1a2b3c4d`` whole."""


def add_columns(out: Table, shown: pd.DataFrame) -> None:
    """Columns for a rich table of `shown` (strings): numbers right-aligned and never cut or
    wrapped (at least as wide as their longest line), text left-aligned and folded where space
    runs short."""
    for column in shown.columns:
        lines = [column, *(line for cell in shown[column] for line in cell.splitlines())]
        widest = max(map(len, lines))
        if column in TEXT_COLUMNS:
            minimum = max(len(column), min(widest, TEXT_MIN_WIDTH))
            out.add_column(column, justify="left", overflow="fold", min_width=minimum)
        else:
            out.add_column(column, justify="right", no_wrap=True, min_width=widest)


def widened(out: Table, width: int) -> Table:
    """`out` at least as wide as its columns' minimum widths where `width` (the terminal's) is
    narrower, instead of rich cutting the numbers or dropping the text columns; print it with
    ``crop=False`` so its lines run past the terminal's edge (``less -S`` scrolls them)."""
    needed = sum(column.min_width + 2 for column in out.columns) + len(out.columns) + 1
    if needed > width:
        out.width = needed
    return out


def rich_table(table: pd.DataFrame, title: str) -> Table:
    """The table for the terminal: the paper's figure under the measured EXPR, Valence and
    Arousal cells (when shown); incomplete seeds and the `legend` are left to the caller to
    list below."""
    shown = format_table(table).drop(columns=["incomplete", "settings"], errors="ignore")
    shown = shown[[c for c in shown.columns if not c.startswith("paper ")]]
    cells = shown.map(Text)
    for column, paper in zip(("EXPR", "Valence", "Arousal"), PAPER_COLUMNS, strict=True):
        for cell, figure in zip(cells[column], table[paper], strict=True):
            if not math.isnan(figure):
                cell.append(f"\npaper {decimals(figure)}", style="dim")
    out = Table(title=title)
    add_columns(out, cells.map(str))
    for row in cells.itertuples(index=False):
        out.add_row(*row)
    return out


def legend(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(row, full settings) of each row whose name shows only some of its settings."""
    short = table[table["settings"] != table["variant"]]
    return list(zip(short["row"], short["settings"], strict=True))

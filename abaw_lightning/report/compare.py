"""Paired comparison of two report rows over the seeds both completed: per metric the mean
difference (B - A), its 95% confidence interval (Student t, n - 1 degrees of freedom) and the
paired t-test's two-sided p-value (`scipy.stats.ttest_rel`), so that "sharing beats no sharing"
is a tested statement, not two overlapping error bars."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from rich.markup import escape
from rich.table import Table
from scipy import stats

from abaw_lightning.errors import UserError
from abaw_lightning.report.runs import row_id
from abaw_lightning.report.tables import DISPLAY, add_columns, markdown, plain
from abaw_lightning.text import decimals, plural

CONFIDENCE = 0.95
SMALLEST_P = 0.001
"""p-values are shown with three decimals, those below this as ``< 0.001``."""


def _row(runs: pd.DataFrame, name: str) -> pd.DataFrame:
    """The complete runs, by seed, of the row named `name` as in the table, or as its variant's
    full settings spell it where the table shows a short name."""
    rows = runs[runs["row"] == name]
    if rows.empty:
        full = [
            row_id(e, s, v)
            for e, s, v in zip(runs["experiment"], runs["stage"], runs["settings"], strict=True)
        ]
        rows = runs[pd.Series(full, index=runs.index) == name]
    if rows.empty:
        known = ", ".join(runs["row"].unique()) or "none"
        raise UserError(f"no row {name!r} in the table; its rows are: {known}")
    if rows["row"].nunique() > 1:
        shown = ", ".join(rows["row"].unique())
        raise UserError(f"{name!r} names several rows ({shown}): pass one of these names")
    done = rows[rows["complete"]]
    if done.empty:
        seeds = "; ".join(f"seed {r.seed}: {r.status}" for r in rows.itertuples())
        raise UserError(f"row {name!r} has no complete run to compare ({seeds})")
    return done.set_index("seed")


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean of b - a, its 95% CI and the paired t-test p-value (NaN below two pairs)."""
    difference = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    n = len(difference)
    mean = float(difference.mean()) if n else math.nan
    if n < 2:
        return {"difference": mean, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
    half = stats.t.ppf((1 + CONFIDENCE) / 2, n - 1) * difference.std(ddof=1) / math.sqrt(n)
    p_value = float(stats.ttest_rel(b, a).pvalue)
    return {"difference": mean, "ci_low": mean - half, "ci_high": mean + half, "p_value": p_value}


def compare(runs: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """One row per metric: means of rows ``a`` and ``b`` over their common complete seeds, the
    paired difference b - a with its CI and p-value, and the number of pairs; ``a`` and ``b``
    name the rows as the table does, ``a_settings`` and ``b_settings`` spell out their variants."""
    first, second = _row(runs, a), _row(runs, b)
    a, b = first["row"].iloc[0], second["row"].iloc[0]
    settings = {"a_settings": first["settings"].iloc[0], "b_settings": second["settings"].iloc[0]}
    seeds = sorted(set(first.index) & set(second.index))
    if not seeds:
        raise UserError(
            f"{a} (seeds {sorted(first.index)}) and {b} (seeds {sorted(second.index)}) have no "
            "complete seed in common: a paired comparison needs the same seeds"
        )
    records = []
    for name in DISPLAY:
        x = first.loc[seeds, name].to_numpy(dtype=float)
        y = second.loc[seeds, name].to_numpy(dtype=float)
        records.append(
            {
                "metric": name,
                "a": a,
                "b": b,
                "a_mean": float(x.mean()),
                "b_mean": float(y.mean()),
                **paired_difference(x, y),
                "n": len(seeds),
                "seeds": seeds,
                **settings,
            }
        )
    return pd.DataFrame(records)


def format_p(p_value: float) -> str:
    """``0.037``, ``0.370``, ``< 0.001``: one rule for every p-value shown."""
    if math.isnan(p_value):
        return "–"
    return f"< {SMALLEST_P}" if p_value < SMALLEST_P else f"{p_value:.3f}"


def format_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Strings for display: metric, both means, the difference with its CI, p, n."""

    def number(value: float, digits: int = 3) -> str:
        return "–" if math.isnan(value) else f"{value:+.{digits}f}"

    return pd.DataFrame(
        {
            "metric": table["metric"].map(DISPLAY),
            "A": table["a_mean"].map(decimals),
            "B": table["b_mean"].map(decimals),
            "B − A": table["difference"].map(number),
            f"{CONFIDENCE:.0%} CI": [
                "–" if math.isnan(lo) else f"[{lo:+.3f}, {hi:+.3f}]"
                for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)
            ],
            "p": table["p_value"].map(format_p),
            "n": table["n"].astype(str),
        }
    )


def _named(table: pd.DataFrame, side: str) -> str:
    """The row of side `side` (``a`` or ``b``), with its variant's full settings where the row
    shows a short name."""
    row, settings = table.iloc[0][side], table.iloc[0][f"{side}_settings"]
    return row if not settings or row.endswith(f"[{settings}]") else f"{row} ({settings})"


def comparison_legend(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(row, full settings) of A and B where the row's name shows only some of them."""
    first = table.iloc[0]
    short = {first[s]: first[f"{s}_settings"] for s in ("a", "b") if _named(table, s) != first[s]}
    return list(short.items())


def comparison_markdown(table: pd.DataFrame) -> str:
    a, b = _named(table, "a"), _named(table, "b")
    return f"A = {a}, B = {b} (paired by seed)\n\n" + markdown(format_comparison(table))


def comparison_csv(table: pd.DataFrame) -> str:
    return table.assign(seeds=table["seeds"].map(lambda s: " ".join(map(str, s)))).to_csv(
        index=False
    )


def comparison_json(table: pd.DataFrame) -> str:
    return json.dumps(plain(table), indent=2) + "\n"


COMPARISON_FORMATS = {"md": comparison_markdown, "csv": comparison_csv, "json": comparison_json}


def comparison_table(table: pd.DataFrame) -> Table:
    """The comparison for the terminal."""
    a, b, n = table.iloc[0]["a"], table.iloc[0]["b"], table.iloc[0]["n"]
    seeds = table.iloc[0]["seeds"]
    out = Table(title=escape(f"A = {a}\nB = {b}\npaired over {plural(n, 'seed')} {seeds}"))
    shown = format_comparison(table)
    add_columns(out, shown)
    for row in shown.itertuples(index=False):
        out.add_row(*map(escape, row))
    return out

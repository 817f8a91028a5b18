"""Wording shared by every command's output: counts with their nouns, numbers to fixed decimals."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``1 run``, ``3 runs``: a count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def decimals(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` decimals, a negative that rounds to zero shown as ``0.000``."""
    shown = f"{value:.{digits}f}"
    return shown[1:] if shown.startswith("-") and not shown.strip("-0.") else shown

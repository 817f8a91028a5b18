"""Wording shared by every command's output."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``1 run``, ``3 runs``: a count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"

"""Helpers the benchmarks share: progress lines on stderr and the plain-text tables of their reports."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    """A progress line on stderr (the report goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns two spaces apart under a dashed rule: the first left-aligned, the others right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if j == 0 else cell.rjust(w)
            for j, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in rows)])

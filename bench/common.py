"""Helpers the benchmarks share: progress lines on stderr and the plain-text tables of their reports."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection


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


def engine_args(description: str | None, engines: Collection[str], rounds: int) -> argparse.Namespace:
    """`--rounds N` (timed rounds per path) and `--engines a,b` (a subset of `engines`), checked."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--rounds", type=int, default=rounds, help=f"timed rounds per path (default {rounds})"
    )
    parser.add_argument(
        "--engines", default=",".join(engines), help=f"comma-separated: {','.join(engines)} (default all)"
    )
    args = parser.parse_args()
    args.engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = [name for name in args.engines if name not in engines]
    if unknown or not args.engines:
        parser.error(f"--engines takes names from {', '.join(engines)}; got {', '.join(unknown) or 'none'}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args

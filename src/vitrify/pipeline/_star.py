"""STAR access for the pipeline: every value read as text, tables written RELION's way.

Reading goes through ``vitrify.io`` (all-strings mode, so ``9999.`` and ``""`` survive
untouched); writing through ``vitrify.io.star.write_star`` (RELION-4 layout, atomic).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_blocks(path: str | Path) -> dict[str, pd.DataFrame | dict]:
    """All blocks of a STAR file with every value as text, in file order."""
    from vitrify.io.star import read_star

    return read_star(path, as_strings=True)


def row_line(table: pd.DataFrame, index: int) -> int:
    """1-based line number in the file of row ``index`` of a table read by :func:`read_blocks`."""
    lines = table.attrs.get("star_row_lines")
    if lines:
        return int(lines[index])
    first = int(table.attrs.get("star_first_line", 0))
    return first + index if first else index + 1


def write_blocks(path: str | Path, blocks: dict[str, pd.DataFrame | dict]) -> None:
    """Write blocks (loops as DataFrames, list blocks as dicts) atomically, RELION-formatted."""
    from vitrify.io.star import write_star

    write_star(path, blocks)

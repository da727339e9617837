"""STAR access for the pipeline: every value read as text, tables written RELION's way.

Reading goes through ``vitrify.io`` (all-strings mode, so ``9999.`` and ``""`` survive
untouched); writing through ``vitrify.io.star.write_star`` (RELION-4 layout, atomic).
Also the two look-ups the scheme operators need (:func:`read_table_column`, :func:`count_table_rows`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vitrify.io.errors import InputError


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


def read_table_column(path: Path, table: str, label: str) -> list[str]:
    """Values (as text) of ``label`` in table ``table`` of a STAR file."""
    if not Path(path).exists():
        raise InputError("STAR file not found", path=path)
    blocks = read_blocks(path)
    block = blocks.get(table)
    if block is None:
        raise InputError(f"no table data_{table}", path=path, expected=", ".join(blocks))
    label = label.lstrip("_")
    if isinstance(block, dict):
        if label not in block:
            raise InputError(f"no label _{label} in data_{table}", path=path)
        return [str(block[label])]
    if label not in block.columns:
        raise InputError(f"no label _{label} in data_{table}", path=path,
                         expected=", ".join(block.columns))
    return [str(v) for v in block[label]]


def count_table_rows(path: Path, table: str) -> int:
    """Number of rows of ``table`` in a STAR file (0 when the table is absent)."""
    block = read_blocks(path).get(table)
    if block is None:
        return 0
    return 1 if isinstance(block, dict) and block else (0 if isinstance(block, dict) else len(block))

"""Shared plumbing of the preprocessing jobs: job.star values, output names, skips, nodes.

Paths inside STAR files are relative to the project directory (the current directory),
as in RELION. A per-micrograph output goes to ``<job_dir>/<input path without its
leading Type/jobNNN/>`` with a new suffix, so outputs keep the input's folder layout.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.io.errors import InputError

_JOB_DIR = re.compile(r"^job\d+$")


def relative_output(job_dir: Path, input_name: str, suffix: str) -> Path:
    """``job_dir`` + input path minus a leading ``Type/jobNNN/``, with ``suffix`` for its extension.

    >>> relative_output(Path("CtfFind/job003"), "MotionCorr/job002/Movies/a.mrc", ".ctf").as_posix()
    'CtfFind/job003/Movies/a.ctf'
    """
    parts = Path(input_name).parts
    if Path(input_name).is_absolute():
        parts = (Path(input_name).name,)
    elif len(parts) > 2 and _JOB_DIR.match(parts[1]):
        parts = parts[2:]
    rel = Path(*parts)
    return job_dir / rel.with_name(rel.stem + suffix)


def require_columns(table: pd.DataFrame, labels: tuple[str, ...], path: Path | str, block: str) -> None:
    """InputError naming the first missing column."""
    for label in labels:
        if label not in table.columns:
            raise InputError(f"missing column {label}", path=path, field=f"data_{block}",
                             expected=f"columns {', '.join(labels)}")


@dataclass
class Skips:
    """Items a job could not process: recorded, logged, and written to ``skipped.txt``."""

    job_dir: Path
    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, reason: str, log: logging.Logger | None = None) -> None:
        self.items.append((name, reason))
        (log or logging.getLogger("vitrify")).warning("skipped %s: %s", name, reason)

    def raise_if_all_skipped(self, n_items: int, what: str) -> None:
        """InputError when every one of ``n_items`` inputs was skipped (nothing to write as output).

        Called before the job writes its output STAR, so a job that processed nothing fails
        instead of leaving an empty result that looks complete; ``skipped.txt`` lists them all.
        """
        if n_items == 0 or len(self.items) < n_items:
            return
        self.write()
        reason = self.items[0][1]
        more = f" (and {n_items - 1} more, listed in {self.job_dir / 'skipped.txt'})" if n_items > 1 else ""
        raise InputError(f"no {what} could be processed; {reason}{more}")

    def write(self) -> None:
        from vitrify.io.atomic import atomic_write

        lines = "".join(f"{name}\t{reason}\n" for name, reason in self.items)
        path = self.job_dir / "skipped.txt"
        if self.items:
            atomic_write(path, lines)
        else:
            path.unlink(missing_ok=True)


def read_micrograph(name: str) -> tuple[np.ndarray, float]:
    """A micrograph ``(ny, nx)`` (or frames ``(n, ny, nx)``) as float32 and its header pixel size (Å).

    InputError (naming the file) for NaN/infinite pixels or a constant image (all zero, say),
    which no fit, picker or extraction can use.
    """
    from vitrify.io.mrc import read_mrc

    data, pixel = read_mrc(name, require_finite=True)
    if data.size and float(data.min()) == float(data.max()):
        raise InputError(f"constant image (every pixel is {float(data.min()):g})", path=name,
                         field="pixel values", expected="a micrograph with signal")
    return data, pixel


def write_output_nodes(job_dir: Path, nodes: list[tuple[Path | str, str]]) -> None:
    """``RELION_OUTPUT_NODES.star``: the job's outputs and their RELION-4 node type labels."""
    from vitrify.io.star import write_star

    table = pd.DataFrame({"rlnPipeLineNodeName": [str(p) for p, _ in nodes],
                          "rlnPipeLineNodeTypeLabel": [label for _, label in nodes]})
    write_star(job_dir / "RELION_OUTPUT_NODES.star", {"output_nodes": table})


def optics_value(optics_row: Mapping, label: str, path: Path | str, fallback: float | None = None) -> float:
    """A number from an optics row, or ``fallback``; InputError naming file and label if absent."""
    if label in optics_row and pd.notna(optics_row[label]):
        return float(optics_row[label])
    if fallback is not None:
        return fallback
    raise InputError(f"missing optics value {label}", path=path, field="data_optics",
                     expected=f"a {label} column")

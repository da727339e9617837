"""Detector MTF files for Import: validation, and the real curves shipped by ``ttsim3d``.

A RELION MTF file is a STAR table with ``rlnResolutionInversePixel`` (frequency in
1/pixel, 0 … 0.5 — Gatan's own files end at 0.508 —, increasing) and ``rlnMtfValue``. Import
accepts a path to such a file (kept as given, as RELION does) or the name of a curve shipped in the optional
``ttsim3d`` package (``k3_CDS_300kV_FL1``, ``falcon4EC_300kV``, …; Falcon 2/3/4, K2, K3,
DE20 — copied from RELION's and Gatan's data), which is validated and copied into the
job directory so that the project does not depend on the package's location.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.io.errors import InputError

COLUMNS = ("rlnResolutionInversePixel", "rlnMtfValue")


def shipped_mtf_files() -> dict[str, Path]:
    """``{name: path}`` of the MTF curves in the installed ``ttsim3d`` package (empty if absent).

    The package is located without being imported.
    """
    spec = importlib.util.find_spec("ttsim3d")
    if spec is None or not spec.submodule_search_locations:
        return {}
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return {p.stem.removeprefix("mtf_"): p for p in sorted(data.glob("mtf_*.star"))}


def read_mtf(path: str | Path) -> pd.DataFrame:
    """The MTF table of ``path``; InputError naming the problem when it is not a usable curve."""
    from vitrify.io.star import read_star

    blocks = read_star(path)
    table = next((b for b in blocks.values() if isinstance(b, pd.DataFrame)), None)
    if table is None or any(c not in table.columns for c in COLUMNS):
        raise InputError("not an MTF table", path=path, field="fn_mtf", expected=f"a loop with {', '.join(COLUMNS)}")
    freq = pd.to_numeric(table[COLUMNS[0]], errors="coerce").to_numpy(float)
    mtf = pd.to_numeric(table[COLUMNS[1]], errors="coerce").to_numpy(float)
    if len(freq) < 2 or not (np.isfinite(freq).all() and np.isfinite(mtf).all()):
        raise InputError("MTF needs at least two numeric rows", path=path, field="fn_mtf",
                         expected="numbers in both columns")
    if freq.min() < 0 or freq.max() > 0.55 or np.any(np.diff(freq) <= 0):  # Gatan's files end at 0.508
        raise InputError("MTF frequencies must increase within 0 … 0.5 (1/pixel)", path=path,
                         field=COLUMNS[0], expected="increasing values in [0, 0.5]")
    if mtf.min() < 0 or mtf.max() > 1.5:
        raise InputError("MTF values outside 0 … 1.5", path=path, field=COLUMNS[1],
                         expected="a modulation transfer (about 1 at frequency 0)")
    return table


def resolve_mtf(value: str, job_dir: Path) -> str:
    """The MTF path to record in the optics table for the user's ``value`` (file or shipped name)."""
    from vitrify.io.atomic import atomic_write

    if Path(value).is_file():
        read_mtf(value)
        return value
    shipped = shipped_mtf_files()
    source = shipped.get(value.removeprefix("mtf_").removesuffix(".star"))
    if source is None:
        names = ", ".join(shipped) if shipped else "none (the optional ttsim3d package is not installed)"
        raise InputError(f"MTF {value!r} is neither a file nor a shipped detector curve", path=value,
                         field="fn_mtf", expected=f"a RELION MTF STAR file or one of: {names}")
    read_mtf(source)
    target = job_dir / source.name
    atomic_write(target, source.read_text())
    return target.as_posix()

"""Optics groups (private): data_optics + data_particles/micrographs/movies, merge, split, validate.

RELION >= 3.1 keeps per-group acquisition values (voltage, Cs, pixel sizes ...) in ``data_optics``
and links each row of the data table to it by ``rlnOpticsGroup`` (1-based). Pre-3.1 files have no
optics table: their acquisition values sit in every row, the pixel size is
``rlnDetectorPixelSize [um] * 1e4 / rlnMagnification`` and offsets ``rlnOriginX/Y`` are pixels;
they are converted on read (one optics group per distinct acquisition, offsets in Angstrom).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.io._ranges import star_range
from vitrify.io.errors import InputError

GROUP = "rlnOpticsGroup"

#: RELION's column order for optics tables (labels not listed keep their order, after these).
OPTICS_ORDER = (
    "rlnOpticsGroupName", GROUP, "rlnMtfFileName", "rlnMicrographOriginalPixelSize", "rlnVoltage",
    "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnMicrographPixelSize", "rlnBeamTiltX",
    "rlnBeamTiltY", "rlnImagePixelSize", "rlnImageSize", "rlnImageDimensionality",
    "rlnCtfDataAreCtfPremultiplied",
)
_PARTICLE_ORDER = (
    "rlnCoordinateX", "rlnCoordinateY", "rlnClassNumber", "rlnAutopickFigureOfMerit", "rlnAnglePsi",
    "rlnImageName", "rlnMicrographName", GROUP, "rlnCtfMaxResolution", "rlnCtfFigureOfMerit",
    "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnCtfBfactor", "rlnCtfScalefactor",
    "rlnPhaseShift", "rlnAngleRot", "rlnAngleTilt", "rlnOriginXAngst", "rlnOriginYAngst",
    "rlnGroupNumber", "rlnNormCorrection", "rlnLogLikeliContribution", "rlnMaxValueProbDistribution",
    "rlnNrOfSignificantSamples", "rlnRandomSubset",
)
_MICROGRAPH_ORDER = (
    "rlnCtfPowerSpectrum", "rlnMicrographName", "rlnMicrographMetadata", GROUP, "rlnAccumMotionTotal",
    "rlnAccumMotionEarly", "rlnAccumMotionLate", "rlnMicrographNameNoDW", "rlnCtfImage", "rlnDefocusU",
    "rlnDefocusV", "rlnCtfAstigmatism", "rlnDefocusAngle", "rlnCtfFigureOfMerit", "rlnCtfMaxResolution",
    "rlnPhaseShift", "rlnCtfValidationScore",
)
DATA_ORDER = {
    "particles": _PARTICLE_ORDER,
    "micrographs": _MICROGRAPH_ORDER,
    "movies": ("rlnMicrographMovieName", GROUP),
}

_ACQUISITION = ("rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")
#: Required labels per data block: (data table, optics table).
REQUIRED = {
    "particles": (("rlnImageName",), (GROUP, "rlnImagePixelSize") + _ACQUISITION),
    "micrographs": (("rlnMicrographName",), (GROUP, "rlnMicrographPixelSize") + _ACQUISITION),
    "movies": (("rlnMicrographMovieName",), (GROUP, "rlnMicrographOriginalPixelSize") + _ACQUISITION),
}
#: Pixel-size label of the optics table per data block.
PIXEL_LABEL = {
    "particles": "rlnImagePixelSize",
    "micrographs": "rlnMicrographPixelSize",
    "movies": "rlnMicrographOriginalPixelSize",
}
#: Labels that must hold numbers (checked with line numbers on read).
NUMERIC_LABELS = frozenset(c for c in OPTICS_ORDER if c not in ("rlnOpticsGroupName", "rlnMtfFileName")) | frozenset(
    {
        "rlnCoordinateX", "rlnCoordinateY", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
        "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
        "rlnClassNumber", "rlnCtfBfactor", "rlnCtfScalefactor", "rlnPhaseShift", "rlnRandomSubset",
        "rlnOriginX", "rlnOriginY", "rlnDetectorPixelSize", "rlnMagnification",
    }
)
_LEGACY_OPTICS = _ACQUISITION + ("rlnBeamTiltX", "rlnBeamTiltY")
_LEGACY_DROP = ("rlnDetectorPixelSize", "rlnMagnification")


@dataclass(frozen=True)
class OpticsStar:
    """A STAR file with optics groups.

    Attributes
    ----------
    optics
        The optics table, one row per group (RELION column order).
    data
        The data table (particles, micrographs or movies), as in the file.
    merged
        ``data`` with every optics column added per row (values already in ``data`` win).
    data_block
        Name of the data block (``"particles"``, ``"micrographs"`` or ``"movies"``).
    path
        The file read.
    legacy
        True when the file had no optics table (pre-3.1) and was converted.
    """

    optics: pd.DataFrame
    data: pd.DataFrame
    merged: pd.DataFrame
    data_block: str
    path: Path
    legacy: bool = False


def order_columns(frame: pd.DataFrame, order: tuple[str, ...]) -> pd.DataFrame:
    """Known labels first in ``order``, then the rest in their current order."""
    known = [c for c in order if c in frame.columns]
    return frame[known + [c for c in frame.columns if c not in known]]


def text_as_object(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as ``object`` dtype (pandas 3 infers ``str``; we keep one convention)."""
    text = [c for c in frame.columns if isinstance(frame[c].dtype, pd.StringDtype)]
    return frame.astype({c: object for c in text}) if text else frame


def merge_optics(optics: pd.DataFrame, data: pd.DataFrame) -> pd.DataFrame:
    """Add each optics column to every data row of its group; values in ``data`` win.

    A data table without ``rlnOpticsGroup`` belongs to the only group of a one-group optics table.
    """
    if GROUP not in data.columns:
        if len(optics) != 1:
            raise InputError(f"data table without {GROUP} and {len(optics)} optics groups",
                             field=GROUP, expected="an rlnOpticsGroup column")
        data = data.assign(**{GROUP: optics[GROUP].iloc[0]})
    merged = data.copy()
    by_group = optics.set_index(GROUP)
    for label in optics.columns:
        if label != GROUP and label not in merged.columns:
            merged[label] = data[GROUP].map(by_group[label]).to_numpy()
    return text_as_object(merged)


def split_optics(merged: pd.DataFrame, data_block: str = "particles") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a merged table into (optics, data) in RELION's column order.

    Optics labels constant within each group move to the optics table; one that varies within a group
    (per-particle values) stays in the data table too, and the optics table takes its first value.
    Missing ``rlnOpticsGroup`` means one group; missing ``rlnOpticsGroupName`` becomes ``opticsGroupN``.
    """
    merged = merged.copy()
    if GROUP not in merged.columns:
        merged[GROUP] = 1
    optics_labels = [c for c in merged.columns if c in OPTICS_ORDER and c != GROUP]
    grouped = merged.groupby(GROUP, sort=True)
    optics = grouped[optics_labels].first().reset_index()
    varying = grouped[optics_labels].nunique(dropna=False).max() > 1 if len(merged) else pd.Series(dtype=bool)
    if "rlnOpticsGroupName" not in optics.columns:
        optics["rlnOpticsGroupName"] = [f"opticsGroup{g}" for g in optics[GROUP]]
    data = merged.drop(columns=[c for c in optics_labels if not bool(varying.get(c, False))])
    optics, data = text_as_object(optics), text_as_object(data)
    return order_columns(optics, OPTICS_ORDER), order_columns(data, DATA_ORDER.get(data_block, ()))


def optics_blocks(optics: pd.DataFrame, data: pd.DataFrame, data_block: str = "particles") -> dict[str, pd.DataFrame]:
    """``{"optics": optics, data_block: data}`` in RELION's column order, as ``write_star`` takes them."""
    return {
        "optics": order_columns(optics, OPTICS_ORDER),
        data_block: order_columns(data, DATA_ORDER.get(data_block, ())),
    }


def optics_star(
    blocks: dict, data_block: str, path: Path, legacy_pixel_size_angst: float | None = None
) -> OpticsStar:
    """Validate the blocks of a STAR file read from ``path`` into an :class:`OpticsStar`.

    The checks and the pre-3.1 conversion of :func:`vitrify.io.star.read_star_optics`, which
    reads the file and calls this.
    """
    legacy = "optics" not in blocks
    if legacy:
        data = _legacy_data_table(blocks, data_block, path)
        optics, data = convert_legacy(data, data_block, path, legacy_pixel_size_angst)
    else:
        optics = _table(blocks, "optics", path)
        data = _table(blocks, data_block, path)
        if GROUP not in data.columns and len(optics) == 1 and GROUP in optics.columns:
            data = data.assign(**{GROUP: optics[GROUP].iloc[0]})
    validate_optics(optics, data, data_block, path)
    return OpticsStar(optics, data, merge_optics(optics, data), data_block, path, legacy)


def _table(blocks: dict, name: str, path: Path) -> pd.DataFrame:
    if name not in blocks:
        present = ", ".join(f"data_{b}" for b in blocks) or "none"
        raise InputError(f"no block data_{name} (blocks present: {present})", path=path)
    table = blocks[name]
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"data_{name} is a list block", path=path, expected="a loop_ table")
    return table


def _legacy_data_table(blocks: dict, data_block: str, path: Path) -> pd.DataFrame:
    for name in (data_block, "", "images"):
        if name in blocks and isinstance(blocks[name], pd.DataFrame):
            return blocks[name]
    loops = [b for b in blocks.values() if isinstance(b, pd.DataFrame)]
    if len(loops) == 1:
        return loops[0]
    return _table(blocks, data_block, path)


def row_line(frame: pd.DataFrame, row: int) -> int | None:
    """Line number of row ``row`` in the file it was read from (None when unknown)."""
    lines = frame.attrs.get("star_row_lines")
    if lines is not None:
        return int(lines[row])
    first = frame.attrs.get("star_first_line")
    return int(first) + row if first else None


def _where(block: str, label: str, frame: pd.DataFrame, row: int | None) -> str:
    line = None if row is None else row_line(frame, row)
    return f"data_{block}, column {label}" + (f", line {line}" if line else "")


def require_columns(frame: pd.DataFrame, labels, block: str, path: Path) -> None:
    """InputError naming the first of ``labels`` missing from ``frame``."""
    for label in labels:
        if label not in frame.columns:
            raise InputError(
                "missing required column", path=path, field=f"data_{block}, column {label}",
                expected=f"_{label} in data_{block}",
            )


def require_numbers(frame: pd.DataFrame, block: str, path: Path) -> None:
    """InputError naming column and line of the first non-numeric value in a numeric column."""
    for label in frame.columns:
        if label not in NUMERIC_LABELS or pd.api.types.is_numeric_dtype(frame[label].dtype):
            continue
        values = pd.to_numeric(frame[label], errors="coerce")
        bad = int(np.flatnonzero(values.isna().to_numpy())[0]) if values.isna().any() else 0
        raise InputError(
            f"not a number: {frame[label].iloc[bad]!r}", path=path,
            field=_where(block, label, frame, bad), expected="a number",
        )


def require_plausible(frame: pd.DataFrame, block: str, path: Path) -> None:
    """InputError naming column and line of the first value that is not finite or not plausible.

    Every numeric label must be finite; physical ones must lie in their range (voltage 60..400 kV,
    Cs 0..10 mm, amplitude contrast 0..1, pixel sizes 0.1..50 Å, |defocus| <= 200000 Å, ...).
    """
    for label in frame.columns:
        if label not in NUMERIC_LABELS or not pd.api.types.is_numeric_dtype(frame[label].dtype):
            continue
        values = frame[label].to_numpy(dtype=np.float64)
        rule = star_range(label)
        bad = rule.bad_rows(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(rule.problem(float(values[row])) or "implausible value", path=path,
                             field=_where(block, label, frame, row), expected=rule.expected())


def validate_optics(optics: pd.DataFrame, data: pd.DataFrame, data_block: str, path: Path) -> None:
    """Check required columns, numbers (finite, plausible), unique optics groups and that every
    data group exists."""
    data_required, optics_required = REQUIRED.get(data_block, ((), (GROUP,)))
    require_columns(optics, optics_required, "optics", path)
    require_columns(data, data_required + (GROUP,), data_block, path)
    require_numbers(optics, "optics", path)
    require_numbers(data, data_block, path)
    require_plausible(optics, "optics", path)
    require_plausible(data, data_block, path)
    groups = optics[GROUP]
    if groups.duplicated().any():
        row = int(np.flatnonzero(groups.duplicated().to_numpy())[0])
        raise InputError(f"optics group {groups.iloc[row]} defined twice", path=path,
                         field=_where("optics", GROUP, optics, row), expected="unique group numbers")
    unknown = ~data[GROUP].isin(set(groups.tolist()))
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise InputError(
            f"unknown optics group {data[GROUP].iloc[row]}", path=path,
            field=_where(data_block, GROUP, data, row),
            expected="one of the groups in data_optics: " + ", ".join(str(g) for g in groups.tolist()),
        )


def convert_legacy(
    data: pd.DataFrame, data_block: str, path: Path, pixel_size_angst: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pre-3.1 table -> (optics, data): one group per distinct acquisition, offsets in Angstrom."""
    require_columns(data, _ACQUISITION, data_block, path)
    require_numbers(data, data_block, path)
    data = data.copy()
    pixel = _legacy_pixel_size(data, data_block, path, pixel_size_angst)
    pixel_label = PIXEL_LABEL.get(data_block, "rlnImagePixelSize")
    data[pixel_label] = pixel
    for axis in ("X", "Y"):
        if f"rlnOrigin{axis}" in data.columns:
            data[f"rlnOrigin{axis}Angst"] = data.pop(f"rlnOrigin{axis}").to_numpy(dtype=np.float64) * pixel
    keys = [c for c in _LEGACY_OPTICS if c in data.columns] + [pixel_label]
    codes, _ = pd.MultiIndex.from_frame(data[keys].round(6)).factorize()
    data[GROUP] = codes + 1
    optics = data.groupby(GROUP, sort=True)[keys].first().reset_index()
    optics.insert(0, "rlnOpticsGroupName", [f"opticsGroup{g}" for g in optics[GROUP]])
    if data_block in ("particles", "micrographs"):
        optics["rlnMicrographOriginalPixelSize"] = optics[pixel_label]
    if data_block == "particles":
        optics["rlnImageDimensionality"] = 2
    data = data.drop(columns=keys + [c for c in _LEGACY_DROP if c in data.columns])
    optics, data = text_as_object(optics), text_as_object(data)
    return order_columns(optics, OPTICS_ORDER), order_columns(data, DATA_ORDER.get(data_block, ()))


def _legacy_pixel_size(data: pd.DataFrame, data_block: str, path: Path, pixel_size_angst: float | None):
    """Per-row pixel size (A) of a pre-3.1 table."""
    if "rlnDetectorPixelSize" in data.columns and "rlnMagnification" in data.columns:
        return data["rlnDetectorPixelSize"].to_numpy(np.float64) * 1e4 / data["rlnMagnification"].to_numpy(
            np.float64
        )
    label = PIXEL_LABEL.get(data_block, "rlnImagePixelSize")
    if label in data.columns:
        return data[label].to_numpy(np.float64)
    if pixel_size_angst is not None:
        return np.full(len(data), float(pixel_size_angst))
    raise InputError(
        "pre-3.1 file (no data_optics) without a pixel size", path=path, field=f"data_{data_block}",
        expected="rlnDetectorPixelSize and rlnMagnification columns, or legacy_pixel_size_angst",
    )

"""Builders of small malformed input files for tests/test_bad_inputs.py (private to the tests).

Good data come from the project's simulator (tiny sizes); bad files are written by hand as STAR
text or raw MRC/TIFF bytes, so each case shows exactly what is wrong with its input.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

#: Byte offsets of MRC header words (little-endian int32).
MRC_NX, MRC_NZ, MRC_MODE, MRC_MAP = 0, 8, 12, 208


@dataclass(frozen=True)
class Good:
    """Paths of a small, valid simulated data set (absolute)."""

    root: Path
    particles_stack: Path     # 8 images, 32 px, 4 Å/px
    defocus: tuple[float, float, float]
    micrograph: Path          # 256 px, 2 Å/px
    movie: Path               # 4-frame TIFF, 128 px
    gain: Path                # (128, 128) MRC
    epu_xml: Path
    mdoc: Path


def star_text(blocks: dict[str, tuple[dict[str, str], list[dict[str, str]] | None]]) -> str:
    """STAR text of loop blocks ``{name: (first row (labels -> text), more rows or None)}``."""
    out = []
    for name, (first, rest) in blocks.items():
        out.append(f"\n# version 30001\n\ndata_{name}\n\nloop_\n")
        out.extend(f"_{label} #{k}\n" for k, label in enumerate(first, start=1))
        for row in [first] + (rest or []):
            if row:
                out.append(" ".join(row.values()) + "\n")
        out.append("\n")
    return "".join(out)


def particle_optics(**edits: str) -> dict[str, str]:
    row = {"rlnOpticsGroupName": "opticsGroup1", "rlnOpticsGroup": "1", "rlnVoltage": "300.0",
           "rlnSphericalAberration": "2.7", "rlnAmplitudeContrast": "0.1", "rlnImagePixelSize": "4.0",
           "rlnImageSize": "32", "rlnImageDimensionality": "2"}
    return _edited(row, edits)


def particle_rows(good: Good, n: int = 8, **first_edits: str) -> list[dict[str, str]]:
    du, dv, angle = good.defocus
    rows = [{"rlnImageName": f"{i + 1:06d}@{good.particles_stack}", "rlnMicrographName": "mic.mrc",
             "rlnOpticsGroup": "1", "rlnDefocusU": f"{du:.3f}", "rlnDefocusV": f"{dv:.3f}",
             "rlnDefocusAngle": f"{angle:.3f}"} for i in range(n)]
    rows[0] = _edited(rows[0], first_edits)
    return rows


def particles_star(path: Path, good: Good, optics: dict | None = None, rows: list | None = None) -> Path:
    """Write a particles STAR file (optics and rows as text, for easy corruption)."""
    rows = particle_rows(good) if rows is None else rows
    optics = particle_optics() if optics is None else optics
    path.write_text(star_text({"optics": (optics, None), "particles": (rows[0] if rows else {}, rows[1:])}))
    return path


def micrograph_optics(**edits: str) -> dict[str, str]:
    row = {"rlnOpticsGroupName": "opticsGroup1", "rlnOpticsGroup": "1", "rlnVoltage": "300.0",
           "rlnSphericalAberration": "2.7", "rlnAmplitudeContrast": "0.1", "rlnMicrographPixelSize": "2.0",
           "rlnMicrographOriginalPixelSize": "2.0"}
    return _edited(row, edits)


def micrographs_star(path: Path, names: list[Path | str], optics: dict | None = None, **first_edits: str) -> Path:
    """Write a micrographs STAR file listing ``names``."""
    rows = [{"rlnMicrographName": str(n), "rlnOpticsGroup": "1"} for n in names]
    rows[0] = _edited(rows[0], first_edits)
    optics = micrograph_optics() if optics is None else optics
    path.write_text(star_text({"optics": (optics, None), "micrographs": (rows[0], rows[1:])}))
    return path


def movies_star(path: Path, names: list[Path | str], **optics_edits: str) -> Path:
    """Write a movies STAR file listing ``names``."""
    optics = micrograph_optics()
    optics.pop("rlnMicrographPixelSize")
    optics = _edited(optics, optics_edits)
    rows = [{"rlnMicrographMovieName": str(n), "rlnOpticsGroup": "1"} for n in names]
    path.write_text(star_text({"optics": (optics, None), "movies": (rows[0], rows[1:])}))
    return path


def _edited(row: dict[str, str], edits: dict[str, str]) -> dict[str, str]:
    """``row`` with values replaced; a value ``None`` drops the label."""
    out = dict(row)
    for label, value in edits.items():
        if value is None:
            out.pop(label, None)
        else:
            out[label] = value
    return out


def line_of(path: Path, token: str) -> str:
    """``"line N"`` of the first line of ``path`` containing ``token``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if token in line:
            return f"line {number}"
    raise AssertionError(f"{token!r} not in {path}")


def write_mrc(path: Path, data: np.ndarray, pixel_size_angst: float = 2.0) -> Path:
    """A valid MRC file of ``data`` (float32; NaN/inf pixels written without mrcfile's warnings)."""
    with warnings.catch_warnings(), mrcfile.new(path, overwrite=True) as mrc:
        warnings.simplefilter("ignore")
        mrc.set_data(np.asarray(data, dtype=np.float32))
        mrc.voxel_size = pixel_size_angst
        if path.suffix == ".mrcs":
            mrc.set_image_stack()
    return path


def patch_int32(path: Path, offset: int, value: int) -> Path:
    """Overwrite one little-endian int32 header word."""
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 4] = np.int32(value).tobytes()
    path.write_bytes(bytes(raw))
    return path


def cut(source: Path, target: Path, fraction: float) -> Path:
    """``target`` = the first ``fraction`` of ``source``'s bytes."""
    raw = source.read_bytes()
    target.write_bytes(raw[: int(len(raw) * fraction)])
    return target


def random_bytes(path: Path, n: int = 4096, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def tiff_movie(path: Path, frames: np.ndarray) -> Path:
    """An uncompressed TIFF movie (one page per frame)."""
    import tifffile

    tifffile.imwrite(path, np.asarray(frames, dtype=np.uint8), photometric="minisblack")
    return path


def cut_text(source: Path, target: Path, marker: str) -> Path:
    """``target`` = ``source``'s text up to the middle of the first ``marker``."""
    text = source.read_text()
    k = text.index(marker) + len(marker) // 2
    target.write_text(text[:k])
    return target


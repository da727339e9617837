"""Refine3D input: the reference (rescaled to the particles' grid when needed), the solvent mask, the
half-set split and the continue state. Every check runs before any compute or write."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vitrify.io.errors import InputError
from vitrify.jobs._class2d_data import InputParticles, diameter_in_px

ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
MASK_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Reference:
    """The reference on the particles' grid ``(n, n, n)`` and what was done to it (for run.log)."""

    volume: torch.Tensor
    note: str


def read_reference(path: str | Path, inp: InputParticles) -> Reference:
    """The reference map, resampled to the particles' pixel size and cropped/padded to their box."""
    from vitrify.core.fourier import rescale_3d
    from vitrify.io.mrc import read_mrc

    path = Path(path)
    volume, pixel = _read_cubic(path, "--ref")
    n, p = inp.box_px, inp.pixel_size_angst
    pixel = float(pixel or 0.0)
    if pixel <= 0:
        if volume.shape[0] != n:
            raise InputError(f"reference box {volume.shape[0]} differs from the particles' {n} px and its header "
                             "has no pixel size", path=path, field="--ref", expected="a pixel size in the header")
        pixel = p
    vol = torch.as_tensor(volume).float()
    if abs(pixel - p) <= 1e-3 * p and vol.shape[0] == n:
        return Reference(vol, "")
    scaled = int(round(vol.shape[0] * pixel / p / 2.0)) * 2
    vol = rescale_3d(vol, scaled) if scaled != vol.shape[0] else vol
    vol = crop_or_pad(vol, n)
    note = (f"reference {path.name}: {volume.shape[0]} px of {pixel:.4g} Å rescaled to {scaled} px of "
            f"{volume.shape[0] * pixel / scaled:.4g} Å and {'cropped' if scaled > n else 'padded'} to the "
            f"particles' {n} px of {p:.4g} Å" if scaled != n else
            f"reference {path.name}: {volume.shape[0]} px of {pixel:.4g} Å rescaled to the particles' "
            f"{n} px of {p:.4g} Å")
    del read_mrc
    return Reference(vol, note)


def _read_cubic(path: Path, field: str) -> tuple[np.ndarray, float]:
    from vitrify.io.mrc import read_mrc

    if not path.exists():
        raise InputError("file not found", path=path, field=field, expected="an MRC map")
    try:
        volume, pixel = read_mrc(path)
    except InputError:
        raise
    except Exception as err:  # mrcfile raises several types on corrupt files
        raise InputError(f"cannot read the map ({err})", path=path, field=field, expected="an MRC map") from err
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise InputError(f"map of shape {volume.shape}", path=path, field=field, expected="a cubic 3D map")
    if not np.isfinite(volume).all():
        raise InputError("NaN or infinite voxels", path=path, field=field, expected="finite values")
    return volume, pixel


def crop_or_pad(volume: torch.Tensor, n: int) -> torch.Tensor:
    """Centre crop or zero-pad ``(m, m, m)`` to ``(n, n, n)`` (centre ``m // 2`` kept at ``n // 2``)."""
    m = volume.shape[-1]
    if m == n:
        return volume
    if m > n:
        lo = m // 2 - n // 2
        return volume[lo:lo + n, lo:lo + n, lo:lo + n].contiguous()
    out = volume.new_zeros(n, n, n)
    lo = n // 2 - m // 2
    out[lo:lo + m, lo:lo + m, lo:lo + m] = volume
    return out


def read_solvent_mask(path: str | Path, inp: InputParticles) -> torch.Tensor:
    """A solvent mask of the particles' box with values in [0, 1] (else one clear error)."""
    path = Path(path)
    mask, _ = _read_cubic(path, "--solvent-mask")
    if mask.shape[0] != inp.box_px:
        raise InputError(f"mask box {mask.shape[0]} differs from the particles' {inp.box_px} px", path=path,
                         field="--solvent-mask", expected=f"a {inp.box_px}^3 mask")
    lo, hi = float(mask.min()), float(mask.max())
    if lo < -MASK_TOLERANCE or hi > 1 + MASK_TOLERANCE:
        raise InputError(f"mask values {lo:.3g} .. {hi:.3g}", path=path, field="--solvent-mask",
                         expected="values in [0, 1] (vitrify mask-create makes one)")
    if hi <= 0:
        raise InputError("the mask is empty", path=path, field="--solvent-mask", expected="some voxels > 0")
    return torch.as_tensor(mask).float().clamp(0.0, 1.0)


def random_subsets(inp: InputParticles) -> torch.Tensor | None:
    """``rlnRandomSubset`` of the input (1 or 2 per particle) when it has the column, else None."""
    data = inp.star.merged
    if "rlnRandomSubset" not in data.columns:
        return None
    values = data["rlnRandomSubset"].to_numpy()
    if not np.isin(values, (1, 2)).all() or len(set(values.tolist())) < 2:
        raise InputError(f"rlnRandomSubset holds {sorted(set(values.tolist()))[:5]}", field="rlnRandomSubset",
                         expected="1 and 2 (both halves non-empty)")
    return torch.as_tensor(values.astype(np.int64))


def input_angles(inp: InputParticles) -> torch.Tensor | None:
    """Euler angles ``(N, 3)`` of the input particles, or None when it has none."""
    data = inp.star.merged
    if not all(c in data.columns for c in ANGLE_COLUMNS):
        return None
    return torch.as_tensor(data[list(ANGLE_COLUMNS)].to_numpy(np.float64))


def check_particles(inp: InputParticles, diameter_angst: float, local_from_start: bool) -> float:
    """Checks that need the particles; returns the diameter in px."""
    diameter_px = diameter_in_px(diameter_angst, inp)
    if inp.n_particles < 2:
        raise InputError(f"{inp.n_particles} particle(s)", field="--i", expected="at least 2 (two half-sets)")
    if local_from_start and input_angles(inp) is None:
        raise InputError("local searches from the first iteration need poses, and the particles have no "
                         "rlnAngleRot/rlnAngleTilt/rlnAnglePsi", field="--i",
                         expected="particles with angles, or --local-order above --healpix-order")
    return diameter_px


def ini_shell(box_px: int, pixel_size_angst: float, ini_high_angst: float) -> float:
    """The Fourier shell of ``--ini-high`` (at most Nyquist)."""
    if not math.isfinite(ini_high_angst) or ini_high_angst <= 0:
        return 0.0
    return min(box_px / 2.0, box_px * pixel_size_angst / ini_high_angst)

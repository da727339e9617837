"""Density maps from atomic models: electron scattering potential on a cubic grid.

The map is gemmi's ``DensityCalculatorE`` sum of atomic electron scattering factors
(five-Gaussian fits, blurred by each atom's B-factor and occupancy), sampled on a
cubic box of ``box_px`` voxels of ``pixel_size_angst``. Units: the integral of the
map over space (sum of voxels × voxel volume, Å³) equals the sum over atoms of the
electron scattering factor at zero angle, f_e(0) in Å, so the map's total scales
with the mass of the model (about 0.18 Å per Da for proteins without hydrogens,
0.20 with them; the exact value depends on the composition) and does not depend on the pixel size.

Sharp atoms under-sampled on a coarse grid alias; by default the density is
computed on a grid ``oversample`` times finer and Fourier-cropped to the requested
pixel size, with a soft spherical low-pass at Nyquist, so the map is band-limited.

Arrays are ``(z, y, x)`` (MRC order). The centre of mass of the model (or a given
centre) lands on voxel ``(n//2, n//2, n//2)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gemmi
import numpy as np

from vitrify.io.atomic_model import AtomicModel, to_gemmi_model
from vitrify.io.errors import InputError

log = logging.getLogger(__name__)

#: largest fine grid edge (voxels) used by automatic oversampling
_MAX_FINE_EDGE = 320


@dataclass(frozen=True)
class MapOptions:
    """How to turn atoms into a map.

    Attributes
    ----------
    box_px
        Edge of the cubic box (voxels), even, >= 8.
    pixel_size_angst
        Voxel size (Å).
    bfactor_angst2
        Extra B-factor (Å²) added to every atom's own B (blurs the map).
    oversample
        Fine-grid factor (1 = none); 0 chooses 2 when the fine grid stays small.
    lowpass_start
        Fraction of Nyquist where the soft low-pass starts falling (to 0 at Nyquist).
    """

    box_px: int
    pixel_size_angst: float
    bfactor_angst2: float = 0.0
    oversample: int = 0
    lowpass_start: float = 0.85

    def __post_init__(self) -> None:
        if self.box_px < 8 or self.box_px % 2:
            raise InputError(f"box must be an even number >= 8, got {self.box_px}", field="box_px")
        if not self.pixel_size_angst > 0:
            raise InputError("pixel size must be > 0", field="pixel_size_angst")
        if self.oversample < 0 or self.oversample > 4:
            raise InputError("oversample must be 0 (auto) to 4", field="oversample")
        if not 0 < self.lowpass_start <= 1:
            raise InputError("lowpass_start must be in (0, 1]", field="lowpass_start")

    def oversample_factor(self) -> int:
        """The fine-grid factor actually used."""
        if self.oversample:
            return self.oversample
        return 2 if 2 * self.box_px <= _MAX_FINE_EDGE else 1


def _density_on_grid(atoms: AtomicModel, edge_px: int, spacing_angst: float,
                     bfactor_angst2: float) -> np.ndarray:
    """Raw gemmi density on an ``edge_px``³ periodic grid with origin at position 0.

    Returns ``(x, y, z)``-indexed float32 (gemmi's order).
    """
    calc = gemmi.DensityCalculatorE()
    length = edge_px * spacing_angst
    calc.grid.set_unit_cell(gemmi.UnitCell(length, length, length, 90, 90, 90))
    calc.grid.spacegroup = gemmi.SpaceGroup("P 1")
    calc.grid.set_size(edge_px, edge_px, edge_px)
    calc.d_min = 2 * spacing_angst
    calc.blur = float(bfactor_angst2)
    calc.add_model_density_to_grid(to_gemmi_model(atoms))
    return np.array(calc.grid, copy=True)


def _soft_lowpass_crop(fine: np.ndarray, box_px: int, factor: int, start: float) -> np.ndarray:
    """Fourier-crop a periodic ``(k n)³`` grid to ``n³`` with a soft spherical low-pass.

    Both grids sample the same positions (origin at index 0); values keep their units.
    """
    ft = np.fft.rfftn(fine)
    half = box_px // 2
    keep = np.r_[0:half, ft.shape[0] - half:ft.shape[0]]
    ft = ft[np.ix_(keep, keep, np.arange(half + 1))]
    fz = np.fft.fftfreq(box_px)[:, None, None]
    fy = np.fft.fftfreq(box_px)[None, :, None]
    fx = np.fft.rfftfreq(box_px)[None, None, :]
    radius = np.sqrt(fx**2 + fy**2 + fz**2) / 0.5
    ramp = np.clip((radius - start) / max(1.0 - start, 1e-6), 0.0, 1.0)
    ft *= 0.5 * (1 + np.cos(np.pi * ramp))
    return np.fft.irfftn(ft, s=(box_px,) * 3, axes=(0, 1, 2)) / factor**3


def simulate_map(atoms: AtomicModel, options: MapOptions,
                 centre_angst: np.ndarray | None = None) -> np.ndarray:
    """Electron scattering potential of ``atoms`` on a centred cubic grid.

    Parameters
    ----------
    atoms
        The atoms (positions in Å).
    options
        Box, pixel size, blur and sampling.
    centre_angst
        ``(3,)`` point (x, y, z, Å) put at voxel ``n//2``; default the centre of mass.

    Returns
    -------
    np.ndarray
        ``(n, n, n)`` float32, indexed ``[z, y, x]``.

    Examples
    --------
    >>> from vitrify.io.atomic_model import read_atomic_model
    >>> from vitrify.io.structures import example_structure
    >>> vol = simulate_map(read_atomic_model(example_structure("adk")), MapOptions(32, 3.0))
    >>> vol.shape, bool(vol[16, 16, 16] > vol[0, 0, 0])
    ((32, 32, 32), True)
    """
    n, pixel = options.box_px, options.pixel_size_angst
    centre = atoms.centre_of_mass_angst() if centre_angst is None else np.asarray(centre_angst)
    radius_px = atoms.max_radius_angst(centre) / pixel
    if radius_px > n / 2:
        log.warning("the model (radius %.0f px) does not fit in a box of %d px: it wraps around",
                    radius_px, n)
    moved = atoms.transformed(np.eye(3), (n // 2) * pixel - centre)
    factor = options.oversample_factor()
    fine = _density_on_grid(moved, n * factor, pixel / factor, options.bfactor_angst2)
    volume = _soft_lowpass_crop(fine, n, factor, options.lowpass_start)
    return np.ascontiguousarray(volume.transpose(2, 1, 0), dtype=np.float32)


def map_integral(volume: np.ndarray, pixel_size_angst: float) -> float:
    """Integral of a map over space: sum of voxels × voxel volume (Å³)."""
    return float(volume.sum(dtype=np.float64) * pixel_size_angst**3)


def map_centre_of_mass_px(volume: np.ndarray) -> np.ndarray:
    """``(3,)`` centre of mass (z, y, x, voxels) of the positive part of a map."""
    weights = np.clip(volume, 0, None).astype(np.float64)
    grids = np.indices(volume.shape, dtype=np.float64)
    return np.array([(g * weights).sum() / weights.sum() for g in grids])

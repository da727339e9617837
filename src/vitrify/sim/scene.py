"""A micrograph's specimen and optics: particles at known places, ice, carbon, CTF -> intensity.

Physics (weak-phase approximation, RELION's CTF):

* each particle's projected map ``P`` (sum over voxels of the gemmi potential density, see
  :mod:`vitrify.sim.maps`) becomes a phase ``φ = σ_e(V) · C · pixel · P`` in radians, with
  ``C = h²/(2π m₀ e) = 47.878 V·Å²`` turning gemmi's scattering density into Volts and
  ``σ_e`` the relativistic interaction constant (6.5e-4 rad / (V·Å) at 300 kV);
* a carbon film covers one side of a (soft) edge: an extra phase of ``carbon_phase_rad``
  with a faint amorphous texture; particles are only placed on the ice side;
* ice thickness grows linearly across the image (``ice_thickness_nm`` ± half the gradient);
  it attenuates the beam as ``exp(-t / mean_free_path)`` (zero-loss, energy-filtered);
* the recorded intensity is ``I = A · (1 - 2 · IFT[CTF · FT(φ)])`` with RELION's CTF
  (CTF(0) = +Q0): protein is dark ("black protein"), as in RELION's micrographs.

Particles keep a minimum distance between centres (crowding control, dart throwing).
Coordinates are pixel positions of particle centres (x to the right, y down the rows),
0-based, as RELION's rlnCoordinateX/Y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vitrify.core.ctf import CtfParams, ctf_2d, electron_wavelength_angst
from vitrify.core.euler import euler_to_matrix
from vitrify.core.fourier import irfft2_centered, rfft2_centered
from vitrify.core.projector import Projector, project_fourier
from vitrify.core.shifts import shift_2d

#: h² / (2π m₀ e) in V·Å²: gemmi scattering density (Å⁻²) -> potential (V)
MOTT_BETHE_VOLT_ANGST2 = 47.878
#: mean free path (nm) for inelastic scattering in vitreous ice at 300 kV
ICE_MEAN_FREE_PATH_NM = 350.0


def interaction_constant(voltage_kv: float) -> float:
    """Relativistic σ_e in rad / (V·Å)."""
    volts = voltage_kv * 1e3
    wavelength = electron_wavelength_angst(voltage_kv)
    rest = 510998.95  # m₀c² / e, volts
    return 2 * math.pi / (wavelength * volts) * (rest + volts) / (2 * rest + volts)


@dataclass(frozen=True)
class SceneTruth:
    """What is in one micrograph.

    Attributes
    ----------
    coordinates_px
        ``(k, 2)`` particle centres (x, y) in pixels.
    angles_deg
        ``(k, 3)`` rot, tilt, psi of each particle.
    map_index
        ``(k,)`` 1-based map of each particle.
    defocus
        ``(3,)`` defocus U, V (Å), angle (deg).
    ice_nm
        ``(2,)`` ice thickness at the left and right edges (nm).
    carbon
        ``(3,)`` carbon edge: angle (rad), offset from the centre (px), 1 if present else 0.
    """

    coordinates_px: np.ndarray
    angles_deg: np.ndarray
    map_index: np.ndarray
    defocus: np.ndarray
    ice_nm: np.ndarray
    carbon: np.ndarray


def carbon_side(shape: tuple[int, int], carbon: np.ndarray) -> np.ndarray:
    """``(ny, nx)`` signed distance (px) to the carbon edge; positive on the carbon."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    angle, offset, present = carbon
    if not present:
        return np.full(shape, -np.inf)
    return (x - nx / 2) * np.cos(angle) + (y - ny / 2) * np.sin(angle) - offset


def place_particles(shape: tuple[int, int], count: int, min_distance_px: float, margin_px: int,
                    allowed: np.ndarray, rng: np.random.Generator, tries: int = 50) -> np.ndarray:
    """Up to ``count`` centres ``(k, 2)`` (x, y), at least ``min_distance_px`` apart.

    Centres stay ``margin_px`` from the borders and where ``allowed`` ``(ny, nx)`` is True.
    """
    ny, nx = shape
    chosen: list[np.ndarray] = []
    for _ in range(count * tries):
        if len(chosen) == count:
            break
        point = rng.uniform([margin_px, margin_px], [nx - margin_px, ny - margin_px])
        if not allowed[int(point[1]), int(point[0])]:
            continue
        if chosen and np.min(np.hypot(*(np.array(chosen) - point).T)) < min_distance_px:
            continue
        chosen.append(point)
    return np.array(chosen, dtype=np.float64).reshape(-1, 2)


def particle_phase(projectors: list[Projector], truth: SceneTruth, shape: tuple[int, int],
                   phase_per_unit: float, device: torch.device) -> torch.Tensor:
    """``(ny, nx)`` phase (rad) of all particles, each projected and placed at its centre."""
    canvas = torch.zeros(shape, device=device)
    if not len(truth.map_index):
        return canvas
    b = projectors[0].box_px
    angles = torch.as_tensor(truth.angles_deg, dtype=torch.float32, device=device)
    rotations = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    whole = np.floor(truth.coordinates_px).astype(int)
    frac = torch.as_tensor(truth.coordinates_px - whole, dtype=torch.float32, device=device)
    for i, m in enumerate(truth.map_index):
        patch = _project(projectors[m - 1], rotations[i])
        patch = shift_2d(patch, frac[i])
        x0, y0 = whole[i] - b // 2
        canvas[y0:y0 + b, x0:x0 + b] += patch
    return canvas * phase_per_unit


def _project(projector: Projector, rotation: torch.Tensor) -> torch.Tensor:
    """``(b, b)`` real-space projection for one ``(3, 3)`` rotation."""
    return irfft2_centered(project_fourier(projector, rotation), projector.box_px)


def carbon_phase(shape: tuple[int, int], truth: SceneTruth, phase_rad: float,
                 rng: np.random.Generator) -> np.ndarray:
    """``(ny, nx)`` phase (rad) of the carbon film: soft step plus 10 % low-pass texture."""
    distance = carbon_side(shape, truth.carbon)
    if not np.isfinite(distance).any():
        return np.zeros(shape)
    step = 1.0 / (1.0 + np.exp(-np.clip(distance, -50, 50) / 2.0))
    ft = np.fft.rfft2(rng.standard_normal(shape))
    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.rfftfreq(shape[1])[None, :]
    texture = np.fft.irfft2(ft * np.exp(-(fx**2 + fy**2) / (2 * 0.08**2)), s=shape)
    texture /= max(texture.std(), 1e-12)
    return phase_rad * step * (1 + 0.1 * texture)


def ice_attenuation(shape: tuple[int, int], ice_nm: np.ndarray) -> np.ndarray:
    """``(ny, nx)`` beam attenuation of an ice layer varying linearly in x."""
    thickness = np.linspace(ice_nm[0], ice_nm[1], shape[1])[None, :]
    return np.broadcast_to(np.exp(-thickness / ICE_MEAN_FREE_PATH_NM), shape)


def intensity(phase: torch.Tensor, attenuation: torch.Tensor, ctf: CtfParams) -> torch.Tensor:
    """Relative intensity ``(ny, nx)`` = attenuation · (1 - 2 · CTF ⊗ phase).

    ``phase`` and ``attenuation`` are ``(ny, nx)``; ``ctf`` is the micrograph's (float fields).

    The phase is padded to a square of twice its larger side so the CTF does not wrap, with its
    edge values (the specimen goes on beyond the field of view): padded with zeros, a carbon film
    would end in a phase step at the border, and the CTF would ring along the micrograph's edges.
    """
    ny, nx = phase.shape
    size = 2 * max(ny, nx)
    y0, x0 = size // 2 - ny // 2, size // 2 - nx // 2
    padded = torch.nn.functional.pad((phase - phase.mean())[None, None],
                                     (x0, size - nx - x0, y0, size - ny - y0), mode="replicate")[0, 0]
    transfer = ctf_2d(size, ctf, device=phase.device)
    contrast = irfft2_centered(rfft2_centered(padded) * transfer, size)[y0:y0 + ny, x0:x0 + nx]
    return attenuation * (1 - 2 * contrast)

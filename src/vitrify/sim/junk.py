"""Junk images: what a picker also boxes out besides good particles.

Each generator returns a real-space "projected potential" image ``(n, n)`` on a field twice
the particle box (the simulator crops the centre after the CTF), in the same units
as the particle projections (``scale`` is the peak value of a typical particle projection), to
which the simulator then applies the micrograph's CTF and the noise like to any particle:

* ``noise``: nothing but noise (an empty box);
* ``ice``: one to three bright, smooth ice blobs / contamination several times stronger
  than a particle;
* ``carbon``: a carbon edge: a soft step across the box at a random angle and offset, with a
  faint low-resolution texture on the carbon side;
* ``aggregate``: two to four particles in random orientations, packed next to each other.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

#: ``project(rotations (k, 3, 3), map_index) -> (k, n, n)`` real-space projections, centred.
ProjectFn = Callable[[torch.Tensor, int], torch.Tensor]


def _centred_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, n)`` y and x pixel coordinates relative to the centre ``n//2``."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    return y - n // 2, x - n // 2


def _noise(n: int, rng: np.random.Generator, scale: float, radius_px: float,
           project: ProjectFn, n_maps: int) -> np.ndarray:
    return np.zeros((n, n))


def _ice(n: int, rng: np.random.Generator, scale: float, radius_px: float,
         project: ProjectFn, n_maps: int) -> np.ndarray:
    y, x = _centred_grid(n)
    image = np.zeros((n, n))
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(-0.15 * n, 0.15 * n, 2)
        sigma = rng.uniform(0.04, 0.12) * n
        image += rng.uniform(2.0, 5.0) * scale * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
    return image


def _smooth_texture(n: int, rng: np.random.Generator, cutoff: float = 0.05) -> np.ndarray:
    """Low-pass Gaussian noise with unit standard deviation."""
    ft = np.fft.rfft2(rng.standard_normal((n, n)))
    fy, fx = np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :]
    ft *= np.exp(-(fx**2 + fy**2) / (2 * cutoff**2))
    texture = np.fft.irfft2(ft, s=(n, n))
    return texture / max(texture.std(), 1e-12)


def _carbon(n: int, rng: np.random.Generator, scale: float, radius_px: float,
            project: ProjectFn, n_maps: int) -> np.ndarray:
    y, x = _centred_grid(n)
    angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(-0.15, 0.15) * n
    distance = x * np.cos(angle) + y * np.sin(angle) - offset
    step = 1.0 / (1.0 + np.exp(-distance / 1.5))
    texture = 1.0 + 0.15 * _smooth_texture(n, rng)
    return rng.uniform(1.0, 2.5) * scale * step * texture


def _aggregate(n: int, rng: np.random.Generator, scale: float, radius_px: float,
               project: ProjectFn, n_maps: int) -> np.ndarray:
    from vitrify.core.euler import euler_to_matrix
    from vitrify.core.shifts import shift_2d
    from vitrify.sim.geometry import random_euler_deg

    k = int(rng.integers(2, 5))  # n is the field (2 x box); projections come at the box size
    angles = torch.as_tensor(random_euler_deg(k, rng), dtype=torch.float32)
    rotations = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    maps = rng.integers(1, n_maps + 1, k)
    from vitrify.core.projector import pad_centered

    images = torch.cat([project(rotations[i:i + 1], int(maps[i])) for i in range(k)])
    images = pad_centered(images, n, 2)
    # first particle near the centre, the others touching it at random directions
    phi = rng.uniform(0, 2 * np.pi, k)
    dist = np.r_[0.0, rng.uniform(1.2, 1.8, k - 1) * radius_px]
    offsets = np.stack([dist * np.cos(phi), dist * np.sin(phi)], axis=1)
    offsets = np.clip(offsets, -0.3 * n, 0.3 * n)
    shifted = shift_2d(images, torch.as_tensor(offsets, dtype=images.dtype))
    return shifted.sum(0).cpu().numpy().astype(np.float64)


#: junk kind -> generator(n, rng, scale, particle_radius_px, project, n_maps) -> (n, n)
JUNK_GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "noise": _noise,
    "ice": _ice,
    "carbon": _carbon,
    "aggregate": _aggregate,
}


def edge_taper(n: int) -> np.ndarray:
    """``(n, n)`` window: 1 in the central half of the field, cosine to 0 at its borders.

    Keeps the field periodic (no artificial edge where the FFT wraps around) while leaving
    the central box, the one that is kept, untouched.
    """
    y, x = _centred_grid(n)
    def axis(c: np.ndarray) -> np.ndarray:
        ramp = np.clip((np.abs(c) - n / 4) / (n / 4), 0.0, 1.0)
        return 0.5 * (1 + np.cos(np.pi * ramp))
    return axis(x) * axis(y)


def make_junk_image(kind: str, n: int, rng: np.random.Generator, *, scale: float,
                    radius_px: float, project: ProjectFn, n_maps: int) -> np.ndarray:
    """One ``(n, n)`` junk image of ``kind`` (see :data:`JUNK_GENERATORS`) on a field of ``n``
    (twice the particle box), tapered to 0 at the field's borders, float64."""
    return JUNK_GENERATORS[kind](n, rng, scale, radius_px, project, n_maps) * edge_taper(n)

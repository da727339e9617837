"""Ground truth for core tests: sums of Gaussian blobs with exact (analytic) projections.

A blob ``exp(-|r - p|² / 2σ²)`` projects along z after rotation ``A`` (RELION: ``V(Aᵀ r)``) to the
2D Gaussian ``sqrt(2π) σ exp(-|r_xy - (A p)_xy|² / 2σ²)``: no interpolation involved.
"""

from __future__ import annotations

import math

import torch


def make_blobs(n_blobs: int, seed: int, *, extent_px: float, sigma_px: tuple[float, float]):
    """Random blob centres ``(b, 3)`` (x, y, z) and widths ``(b,)`` in float64."""
    g = torch.Generator().manual_seed(seed)
    centres = (torch.rand(n_blobs, 3, generator=g, dtype=torch.float64) * 2 - 1) * extent_px
    sigmas = sigma_px[0] + torch.rand(n_blobs, generator=g, dtype=torch.float64) * (sigma_px[1] - sigma_px[0])
    return centres, sigmas


def blob_volume(n: int, centres: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Sampled volume ``(n, n, n)`` (z, y, x), centred at n//2, float64."""
    c = torch.arange(n, dtype=torch.float64) - n // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    vol = torch.zeros(n, n, n, dtype=torch.float64)
    for p, s in zip(centres, sigmas):
        vol += torch.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2 + (z - p[2]) ** 2) / (2 * s * s))
    return vol


def blob_projections(n: int, centres: torch.Tensor, sigmas: torch.Tensor,
                     matrices: torch.Tensor) -> torch.Tensor:
    """Exact projections ``(r, n, n)`` float64 for RELION matrices ``(r, 3, 3)``."""
    c = torch.arange(n, dtype=torch.float64) - n // 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    moved = torch.einsum("rij,bj->rbi", matrices.double(), centres)  # A p: (r, b, 3)
    out = torch.zeros(matrices.shape[0], n, n, dtype=torch.float64)
    for b, s in enumerate(sigmas):
        dx = xx - moved[:, b, 0, None, None]
        dy = yy - moved[:, b, 1, None, None]
        out += math.sqrt(2 * math.pi) * s * torch.exp(-(dx * dx + dy * dy) / (2 * s * s))
    return out


def blob_image(n: int, centres_2d: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Sampled 2D image ``(n, n)`` of blobs at ``(b, 2)`` (x, y) centres, float64."""
    c = torch.arange(n, dtype=torch.float64) - n // 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    img = torch.zeros(n, n, dtype=torch.float64)
    for p, s in zip(centres_2d, sigmas):
        img += torch.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * s * s))
    return img


def random_rotations(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uniformly distributed RELION Euler angles (deg), float64, each ``(n,)``."""
    g = torch.Generator().manual_seed(seed)
    rot = torch.rand(n, generator=g, dtype=torch.float64) * 360 - 180
    tilt = torch.rad2deg(torch.acos(torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1))
    psi = torch.rand(n, generator=g, dtype=torch.float64) * 360 - 180
    return rot, tilt, psi

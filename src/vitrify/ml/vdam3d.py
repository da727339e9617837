"""3D M-step pieces: reference spectra, SSNR, MAP (EM) and VDAM updates on padded volume grids.

Grids are :func:`vitrify.ml.slices.volume_grids` ``(K, m, m, m//2+1)`` (``m = 2 n``); shells
``round(|k| / 2)`` (:func:`vitrify.ml.slices.grid_shells`). VDAM reuses the 2D moment code of
:mod:`vitrify.ml.vdam` on grids viewed as ``(..., m, m * (m//2+1))`` (the moment updates are
element-wise); the FSC-regularised step follows ``shared/spec/vdam.md`` section 5.3 in 3D.
RELION's padding corrections are ``pad**3`` in 3D (weights per padded voxel).
"""

from __future__ import annotations

import torch

from vitrify.core.fourier import shell_sums
from vitrify.core.masks import soft_spherical_mask
from vitrify.core.symmetry import symmetrise_volume
from vitrify.ml.slices import PAD, volume_grids, volumes_from_grids
from vitrify.ml.vdam import Moments, preconditioned_gradient


def flat(grid: torch.Tensor) -> torch.Tensor:
    """View ``(..., m, m, h)`` as ``(..., m, m * h)`` (the layout of the 2D moment code)."""
    return grid.reshape(*grid.shape[:-2], grid.shape[-2] * grid.shape[-1])


def zero_moments(n_classes: int, m: int, device) -> Moments:
    """Fresh 3D moments (m1 = 0, m2 = 1) in the flat layout."""
    size = m * (m // 2 + 1)
    return Moments(torch.zeros(2, n_classes, m, size, dtype=torch.complex64, device=device),
                   torch.ones(n_classes, m, size, device=device))


def reference_tau2(grids: torch.Tensor, shells: torch.Tensor, radius: int, n: int) -> torch.Tensor:
    """Reference power ``|F|^2 / 2`` per shell ``(K, n//2+1)`` float64 (0 beyond ``radius``)."""
    power = grids.real.double() ** 2 + grids.imag.double() ** 2
    tau2 = shell_sums(power, shells.clamp(max=n // 2 + 1), n // 2 + 2, mean=True)[:, : n // 2 + 1] / 2
    tau2[:, radius + 1:] = 0
    return tau2


def data_vs_prior(weight: torch.Tensor, tau2: torch.Tensor, tau2_fudge: float, shells: torch.Tensor,
                  n_shells: int) -> torch.Tensor:
    """SSNR ``(K, n_shells)`` from weight grids ``(K, m, m, m//2+1)``."""
    t2 = tau2.double()[:, shells.clamp(max=tau2.shape[1] - 1)]
    return shell_sums(weight.double() * PAD ** 3 * tau2_fudge * t2, shells.clamp(max=n_shells),
                      n_shells + 1, mean=True)[:, :n_shells]


def map_reconstruct(data: torch.Tensor, weight: torch.Tensor, tau2: torch.Tensor, tau2_fudge: float,
                    radius: int, shells: torch.Tensor, minres_map: int = 5) -> torch.Tensor:
    """EM: ``F = data / (weight + 1 / (pad^3 T tau2))`` (weights floored at 1e-3 of the shell mean).

    ``data``, ``weight`` ``(K, m, m, m//2+1)``; returns grids zero beyond ``radius``.
    """
    inside = shells <= radius
    s = shells.clamp(max=radius)
    w = weight.double()
    floor = shell_sums(w, s, radius + 1, mean=True).clamp_min(1e-30) * 1e-3
    w = torch.maximum(w, floor[:, s])
    t2 = tau2.double()[:, shells.clamp(max=tau2.shape[1] - 1)]
    prior = torch.where(t2 > 0, 1.0 / (PAD ** 3 * tau2_fudge * t2.clamp_min(1e-300)), torch.zeros_like(t2))
    prior = torch.where(shells >= minres_map, prior, torch.zeros_like(prior))
    out = data.to(torch.complex128) / (w + prior)
    return torch.where(inside, out, torch.zeros_like(out)).to(torch.complex64)


def gradient_step(refs: torch.Tensor, moments: Moments, steps: torch.Tensor, tau2_fudge: float,
                  radius: int, skip: torch.Tensor, shells: torch.Tensor) -> torch.Tensor:
    """FSC-regularised VDAM update of volumes ``(K, n, n, n)``; ``steps``/``skip`` ``(K,)``."""
    n = refs.shape[-1]
    f = volume_grids(refs)
    shape = f.shape
    inside = shells <= radius
    s = shells.clamp(max=radius)
    g = preconditioned_gradient(moments).reshape(shape)
    power = shell_sums(f.abs().double(), s, radius + 1, mean=True)
    m1 = moments.m1.reshape(2, *shape)
    noise = shell_sums((m1[0] - m1[1]).abs().double(), s, radius + 1, mean=True)
    snr = torch.where(noise > 0, 2.0 * tau2_fudge * power / noise.clamp_min(1e-300), torch.zeros_like(noise))
    fsc = (snr / (1.0 + snr)).clamp(0.0, 1.0).float()[:, s]
    step = steps.float().to(refs.device)[:, None, None, None]
    new = f + step * (fsc * g - (1.0 - fsc) * f)
    new = torch.where(inside, new, torch.zeros_like(new))
    out = volumes_from_grids(new, n)
    return torch.where(skip[:, None, None, None].to(refs.device), refs, out)


def flatten_solvent(refs: torch.Tensor, radius_px: float, edge_px: float = 5.0) -> torch.Tensor:
    """Multiply volumes ``(K, n, n, n)`` by the soft sphere (RELION ``--flatten_solvent``)."""
    return refs * soft_spherical_mask(refs.shape[-1], radius_px, edge_px, device=refs.device)


def symmetrise(refs: torch.Tensor, symmetry: str) -> torch.Tensor:
    """Average every volume ``(K, n, n, n)`` over the point group (identity for C1)."""
    if symmetry.strip().upper() == "C1":
        return refs
    return torch.stack([symmetrise_volume(v, symmetry) for v in refs])

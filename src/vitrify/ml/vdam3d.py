"""3D M-step pieces: reference spectra, SSNR, MAP (EM) and VDAM updates on padded volume grids.

Grids are :func:`vitrify.ml.slices.volume_grids` ``(K, m, m, m//2+1)`` (``m = 2 n``); shells
``round(|k| / 2)`` (:func:`vitrify.ml.slices.grid_shells`). VDAM reuses the 2D moment code of
:mod:`vitrify.ml.vdam` on grids viewed as ``(..., m, m * (m//2+1))`` (the moment updates are
element-wise); the FSC-regularised step follows ``shared/spec/vdam.md`` section 5.3 in 3D.
RELION's padding corrections are ``pad**3`` in 3D (weights per padded voxel).
"""

from __future__ import annotations

import functools

import torch

from vitrify.core.fourier import shell_sums
from vitrify.core.masks import soft_spherical_mask
from vitrify.core.symmetry import symmetrise_volume
from vitrify.ml.slices import PAD, volume_grids, volumes_from_grids
from vitrify.ml.vdam import BETA1, BETA2, EPS, Moments


_INSIDE: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _inside(shells: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat indices of the voxels with shell <= ``radius``, their shells and the voxel count per shell."""
    key = (shells.data_ptr(), tuple(shells.shape), str(shells.device), int(radius))
    if key not in _INSIDE:
        if len(_INSIDE) > 16:
            _INSIDE.clear()
        s = shells.reshape(-1)
        idx = torch.nonzero(s <= radius).flatten()
        _INSIDE[key] = (idx, s[idx], torch.bincount(s[idx], minlength=radius + 1).clamp_min(1))
    return _INSIDE[key]


def shell_means(values: torch.Tensor, shells: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of real grids ``(K, g, g, g//2+1)`` per shell ``0..radius``: ``(K, radius+1)`` float64.

    Only the voxels inside ``radius`` are read (a small part of the grid at low resolution).
    """
    idx, s, count = _inside(shells, radius)
    k = values.shape[0]
    sums = torch.zeros(k, radius + 1, dtype=torch.float64, device=values.device)
    sums.index_add_(1, s, values.reshape(k, -1)[:, idx].double())
    return sums / count


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
    tau2 = torch.zeros(grids.shape[0], n // 2 + 1, dtype=torch.float64, device=grids.device)
    tau2[:, : radius + 1] = shell_means(grids.real ** 2 + grids.imag ** 2, shells, radius) / 2
    return tau2


def data_vs_prior(weight: torch.Tensor, tau2: torch.Tensor, tau2_fudge: float, shells: torch.Tensor,
                  n_shells: int) -> torch.Tensor:
    """SSNR ``(K, n_shells)`` from weight grids ``(K, m, m, m//2+1)``."""
    r = n_shells - 1
    mean_w = shell_means(weight, shells, r)  # tau2 is constant on a shell
    return mean_w * PAD ** 3 * tau2_fudge * tau2.double()[:, :n_shells].to(mean_w.device)


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


def update_moments_inside(moments: Moments, data: torch.Tensor, weight: torch.Tensor, grids: torch.Tensor,
                          radius: int, shells: torch.Tensor, active: torch.Tensor) -> None:
    """Half-set gradients and the moment update (:func:`vitrify.ml.vdam.half_gradients`,
    :func:`vitrify.ml.vdam.update_moments`) on the voxels with shell <= ``radius`` only.

    ``data`` ``(2, K, m, m, m//2+1)`` complex, ``weight`` the same shape (real), ``grids``
    ``(K, m, m, m//2+1)`` the current volumes' transforms, ``active`` ``(K,)`` bool. Voxels outside
    the window are left as they are, as the full-grid update leaves them; at a window of 20 of 32
    shells they are 87 % of the grid.
    """
    idx = _inside(shells, radius)[0]
    k = grids.shape[0]
    f = grids.reshape(k, -1)[:, idx]
    w = weight.reshape(2, k, -1)[:, :, idx]
    g = (data.reshape(2, k, -1)[:, :, idx] - w * f[None]) / w.clamp_min(1.0)  # (2, K, V)
    m1 = moments.m1.reshape(2, k, -1)
    m2 = moments.m2.reshape(k, -1)
    fresh = ~(torch.view_as_real(m1) != 0).flatten(2).any(-1)  # (2, K): first use copies the gradient
    old1 = m1[:, :, idx]
    new1 = torch.where(fresh[..., None], g, BETA1 * old1 + (1 - BETA1) * g)
    rel = (g[1] - g[0]).abs() ** 2 / (((g[0] + g[1]) / 2).abs() ** 2 + EPS)
    new2 = BETA2 * m2[:, idx] + (1 - BETA2) * rel
    act = active.to(m1.device)
    m1[:, :, idx] = torch.where(act[None, :, None], new1, old1)
    m2[:, idx] = torch.where(act[:, None], new2, m2[:, idx])


def gradient_step(refs: torch.Tensor, moments: Moments, steps: torch.Tensor, tau2_fudge: float,
                  radius: int, skip: torch.Tensor, shells: torch.Tensor) -> torch.Tensor:
    """FSC-regularised VDAM update of volumes ``(K, n, n, n)``; ``steps``/``skip`` ``(K,)``.

    Computed on the voxels inside ``radius`` only (the result is zero outside).
    """
    n = refs.shape[-1]
    f = volume_grids(refs)
    k = f.shape[0]
    idx, s, count = _inside(shells, radius)
    ff = f.reshape(k, -1)[:, idx]
    m1 = moments.m1.reshape(2, k, -1)[:, :, idx]
    g = (m1[0] + m1[1]) / 2 / (torch.sqrt(moments.m2.reshape(k, -1)[:, idx]) + EPS)

    def means(values: torch.Tensor) -> torch.Tensor:
        sums = torch.zeros(k, radius + 1, dtype=torch.float64, device=values.device)
        return sums.index_add_(1, s, values.double()) / count

    power = means(ff.abs())
    noise = means((m1[0] - m1[1]).abs())
    snr = torch.where(noise > 0, 2.0 * tau2_fudge * power / noise.clamp_min(1e-300), torch.zeros_like(noise))
    fsc = (snr / (1.0 + snr)).clamp(0.0, 1.0).float()[:, s]
    step = steps.float().to(refs.device)[:, None]
    new = torch.zeros_like(f).reshape(k, -1)
    new[:, idx] = ff + step * (fsc * g - (1.0 - fsc) * ff)
    out = volumes_from_grids(new.reshape(f.shape), n)
    return torch.where(skip[:, None, None, None].to(refs.device), refs, out)


def flatten_solvent(refs: torch.Tensor, radius_px: float, edge_px: float = 5.0) -> torch.Tensor:
    """Multiply volumes ``(K, n, n, n)`` by the soft sphere (RELION ``--flatten_solvent``)."""
    return refs * _solvent_mask(refs.shape[-1], float(radius_px), float(edge_px), str(refs.device))


@functools.lru_cache(maxsize=4)
def _solvent_mask(n: int, radius_px: float, edge_px: float, device: str) -> torch.Tensor:
    return soft_spherical_mask(n, radius_px, edge_px, device=torch.device(device))


def symmetrise(refs: torch.Tensor, symmetry: str) -> torch.Tensor:
    """Average every volume ``(K, n, n, n)`` over the point group (identity for C1)."""
    if symmetry.strip().upper() == "C1":
        return refs
    return torch.stack([symmetrise_volume(v, symmetry) for v in refs])

"""Linear (bi/trilinear) gather and scatter on Hermitian half grids, vectorised, no pixel loops.

Half-grid layout ("centred half"): a 3D grid is ``(..., P, P, P//2+1)`` indexed
``[kz + P//2, ky + P//2, kx]`` for ``kz, ky in [-P/2, P/2)`` and ``kx in [0, P/2]``; a 2D grid is
``(..., P, P//2+1)`` indexed ``[ky + P//2, kx]``. It is the rfft layout fftshifted on all but the
last axis. Points with ``kx < 0`` are read (written) through Friedel symmetry:
``F(-k) = conj(F(k))``.

Coordinates are ``(..., d)`` in grid pixels, ordered ``(x, y[, z])``.
"""

from __future__ import annotations

import itertools

import torch

__all__ = ["corner_table", "gather_half", "scatter_half", "half_from_rfft", "rfft_from_half"]


def half_from_rfft(f: torch.Tensor, ndim: int) -> torch.Tensor:
    """rfft layout -> centred half layout (fftshift on all but the last of ``ndim`` axes)."""
    return torch.fft.fftshift(f, dim=tuple(range(-ndim, -1)))


def rfft_from_half(g: torch.Tensor, ndim: int) -> torch.Tensor:
    """Centred half layout -> rfft layout."""
    return torch.fft.ifftshift(g, dim=tuple(range(-ndim, -1)))


def corner_table(coords: torch.Tensor, grid_shape: tuple[int, ...]):
    """Flat indices and linear weights of the ``2**d`` grid neighbours of each point.

    Parameters
    ----------
    coords
        ``(m, d)`` real coordinates ``(x, y[, z])`` in grid pixels (``kx`` may be negative).
    grid_shape
        The trailing ``d`` dims of the grid, e.g. ``(P, P, P//2+1)``.

    Returns
    -------
    index : torch.Tensor
        ``(m, 2**d)`` int64 flat indices into the last ``d`` dims.
    weight : torch.Tensor
        ``(m, 2**d)`` weights (0 for neighbours outside the grid).
    conj : torch.Tensor
        ``(m,)`` bool, True where the point was mirrored (read/write the conjugate).
    """
    d = coords.shape[-1]
    conj = coords[:, 0] < 0
    pts = torch.where(conj[:, None], -coords, coords)
    base = torch.floor(pts)
    frac = pts - base
    base = base.long()
    sizes = [grid_shape[-1 - i] for i in range(d)]  # axis i of coords -> grid dim -1-i
    offsets = [0] + [grid_shape[-1 - i] // 2 for i in range(1, d)]
    strides = [1]
    for i in range(1, d):
        strides.append(strides[-1] * sizes[i - 1])
    indices, weights = [], []
    for bits in itertools.product((0, 1), repeat=d):
        idx = torch.zeros_like(base[:, 0])
        w = torch.ones_like(frac[:, 0])
        for i, b in enumerate(bits):
            c = base[:, i] + b + offsets[i]
            inside = (c >= 0) & (c < sizes[i])
            w = w * (frac[:, i] if b else 1 - frac[:, i]) * inside
            idx = idx + c.clamp(0, sizes[i] - 1) * strides[i]
        indices.append(idx)
        weights.append(w)
    return torch.stack(indices, -1), torch.stack(weights, -1), conj


def gather_half(grid_flat: torch.Tensor, index: torch.Tensor, weight: torch.Tensor,
                conj: torch.Tensor) -> torch.Tensor:
    """Interpolate ``(k, N)`` complex flat grids at points given by :func:`corner_table`.

    Returns ``(k, m)`` complex.
    """
    vals = grid_flat[:, index]  # (k, m, 2**d)
    out = (vals * weight.to(vals.real.dtype)).sum(-1)
    return torch.where(conj, out.conj(), out)


def scatter_half(data_flat: torch.Tensor, weight_flat: torch.Tensor | None, values: torch.Tensor,
                 sample_weights: torch.Tensor | None, index: torch.Tensor, weight: torch.Tensor,
                 conj: torch.Tensor) -> None:
    """Adjoint of :func:`gather_half`, in place: add ``values`` (and their weights) to grids.

    Parameters
    ----------
    data_flat
        ``(k, N)`` complex grids (modified in place).
    weight_flat
        ``(k, N)`` real grids of summed weights, or None.
    values
        ``(k, m)`` complex samples.
    sample_weights
        ``(k, m)`` or ``(m,)`` real weights added to ``weight_flat`` (None = 1).
    index, weight, conj
        From :func:`corner_table`.
    """
    vals = torch.where(conj, values.conj(), values)
    contrib = vals[..., None] * weight.to(vals.real.dtype)  # (k, m, c)
    k = data_flat.shape[0]
    flat_idx = index.reshape(-1)
    real_view = torch.view_as_real(data_flat)
    real_view.index_add_(1, flat_idx, torch.view_as_real(contrib.reshape(k, -1)))
    if weight_flat is None:
        return
    sw = weight if sample_weights is None else weight * sample_weights[..., None]
    sw = sw.expand(k, *weight.shape) if sw.ndim == 2 else sw
    weight_flat.index_add_(1, flat_idx, sw.reshape(k, -1).to(weight_flat.dtype))

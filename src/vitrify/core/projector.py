"""Fourier-space projection of volumes (3D) and in-plane rotation of references (2D).

A :class:`Projector` holds the transform of a zero-padded (``pad`` × box), gridding-corrected map in
the centred half layout of :mod:`vitrify.core._interp`. Slices are read by trilinear (3D) or
bilinear (2D) interpolation: the output pixel ``k = (kx, ky)`` of orientation ``A`` samples the map
transform at ``pad · Aᵀ (kx, ky, 0)`` (RELION's convention, see :mod:`vitrify.core.euler`).
Values match ``rfft2_centered`` of the real-space projection ``Σ_z V(Aᵀ r)``: no extra scaling.

Gridding correction: linear interpolation in Fourier space multiplies real space by
``Π_axes sinc²(π x / P)`` (``P = pad · n``, ``x`` from the centre), so the map is divided by it
before the transform.

2D: ``rotate_2d_fourier(refs, psi)[..., k] = refs_ft(R(psi)ᵀ k)`` with ``R = [[c, s], [-s, c]]``:
the 2D reference as seen by a particle with in-plane angle ``psi`` (RELION 2D classification).
In real space this turns the image by ``-psi`` (clockwise for x right, y up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vitrify.core import _interp
from vitrify.core.euler import rotation_2d
from vitrify.core.fourier import irfft2_centered
from vitrify.errors import InputError

__all__ = [
    "Projector",
    "make_projector",
    "make_projector_2d",
    "project_fourier",
    "project_real",
    "rotate_2d_fourier",
    "gridding_kernel",
    "pad_centered",
    "crop_centered",
]


@dataclass(frozen=True)
class Projector:
    """A padded, gridding-corrected Fourier map ready for slice extraction.

    Attributes
    ----------
    grid
        ``(*batch, P, P, P//2+1)`` (3D) or ``(*batch, P, P//2+1)`` (2D) complex, centred half layout.
    box_px
        Box ``n`` of the original map/images.
    pad
        Padding factor (``P = pad · n``).
    ndim
        2 or 3.
    """

    grid: torch.Tensor
    box_px: int
    pad: int
    ndim: int

    @property
    def batch_shape(self) -> torch.Size:
        """Leading (class) dims of :attr:`grid`."""
        return self.grid.shape[: self.grid.ndim - self.ndim]


def gridding_kernel(n: int, padded_px: int, ndim: int, *, device=None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Real-space footprint of linear interpolation on a ``padded_px`` grid: ``(n,)*ndim``."""
    x = torch.arange(n, device=device, dtype=torch.float64) - n // 2
    t = torch.pi * x / padded_px
    s = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, 1.0, t)) ** 2
    out = s
    for _ in range(ndim - 1):
        out = out[..., None] * s
    # axis order (z, y, x) is irrelevant: the kernel is the same along every axis
    return out.to(dtype)


def pad_centered(x: torch.Tensor, size: int, ndim: int) -> torch.Tensor:
    """Zero-pad the last ``ndim`` axes of a centred array from ``n`` to ``size`` (centre kept at size//2)."""
    n = x.shape[-1]
    lo = size // 2 - n // 2
    pads = []
    for _ in range(ndim):
        pads += [lo, size - n - lo]
    return torch.nn.functional.pad(x, pads)


def crop_centered(x: torch.Tensor, n: int, ndim: int) -> torch.Tensor:
    """Crop the last ``ndim`` axes of a centred array to ``n`` (inverse of :func:`pad_centered`)."""
    size = x.shape[-1]
    lo = size // 2 - n // 2
    sl = (Ellipsis,) + (slice(lo, lo + n),) * ndim
    return x[sl]


def _check_pad(pad: int) -> None:
    if not isinstance(pad, int) or pad < 1:
        raise InputError(f"padding factor must be a positive integer, got {pad!r}", field="pad",
                         expected="1, 2, ...")


def _make(maps: torch.Tensor, pad: int, ndim: int, gridding: bool) -> Projector:
    _check_pad(pad)
    n = maps.shape[-1]
    if any(s != n for s in maps.shape[-ndim:]):
        raise InputError(f"maps must be cubic/square, got shape {tuple(maps.shape)}", field="shape",
                         expected=f"(..., n{', n' * (ndim - 1)})")
    size = pad * n
    corrected = maps / gridding_kernel(n, size, ndim, device=maps.device, dtype=maps.dtype) \
        if gridding else maps
    padded = pad_centered(corrected, size, ndim)
    dims = tuple(range(-ndim, 0))
    f = torch.fft.rfftn(torch.fft.ifftshift(padded, dim=dims), dim=dims)
    return Projector(_interp.half_from_rfft(f, ndim), n, pad, ndim)


def make_projector(volume: torch.Tensor, pad: int = 2, *, gridding: bool = True) -> Projector:
    """Projector of a map ``(*batch, n, n, n)`` (real, centred) with padding factor ``pad``."""
    return _make(volume, pad, 3, gridding)


def make_projector_2d(images: torch.Tensor, pad: int = 2, *, gridding: bool = True) -> Projector:
    """2D projector (for in-plane rotation) of references ``(*batch, n, n)`` (real, centred)."""
    return _make(images, pad, 2, gridding)


def _pixels_in_radius(n: int, max_radius_px: float | None, device, dtype):
    """Half-plane pixels within ``max_radius_px``: flat indices ``(m,)`` and ``(kx, ky)`` ``(m, 2)``."""
    ky = torch.fft.fftfreq(n, 1.0 / n, device=device, dtype=dtype)
    kx = torch.fft.rfftfreq(n, 1.0 / n, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ky, kx, indexing="ij")
    r = n / 2 if max_radius_px is None else max_radius_px
    inside = (gx * gx + gy * gy <= r * r).reshape(-1)
    flat = torch.nonzero(inside).squeeze(-1)
    k2 = torch.stack([gx.reshape(-1)[flat], gy.reshape(-1)[flat]], -1)
    return flat, k2


def slice_coordinates(matrices: torch.Tensor, k2: torch.Tensor, pad: int) -> torch.Tensor:
    """Grid coordinates ``pad · Aᵀ (kx, ky[, 0])`` of half-plane pixels.

    ``matrices (r, d, d)``, ``k2 (m, 2)`` as ``(kx, ky)`` -> ``(r, m, d)`` ordered ``(x, y[, z])``.
    """
    rows = matrices[:, :2, :]  # A[0, :] (x row) and A[1, :] (y row)
    return pad * torch.einsum("mi,rij->rmj", k2, rows)


def _extract(projector: Projector, matrices: torch.Tensor, max_radius_px) -> torch.Tensor:
    d, n = projector.ndim, projector.box_px
    lead = matrices.shape[:-2]
    mats = matrices.reshape(-1, d, d).to(projector.grid.real.dtype)
    flat, k2 = _pixels_in_radius(n, max_radius_px, mats.device, mats.dtype)
    coords = slice_coordinates(mats, k2, projector.pad)
    index, weight, conj = _interp.corner_table(coords.reshape(-1, d), projector.grid.shape[-d:])
    batch = projector.batch_shape
    grid_flat = projector.grid.reshape(-1, math.prod(projector.grid.shape[-d:]))
    vals = _interp.gather_half(grid_flat, index, weight, conj)  # (k, r*m)
    nk, nr = grid_flat.shape[0], mats.shape[0]
    out = vals.new_zeros(nk, nr, n * (n // 2 + 1))
    out[:, :, flat] = vals.reshape(nk, nr, -1)
    return out.reshape(*batch, *lead, n, n // 2 + 1)


def project_fourier(projector: Projector, rotations: torch.Tensor,
                    max_radius_px: float | None = None) -> torch.Tensor:
    """Central slices of a 3D projector.

    Parameters
    ----------
    projector
        From :func:`make_projector`, grid ``(*batch, P, P, P//2+1)``.
    rotations
        ``(..., 3, 3)`` RELION matrices (:func:`vitrify.core.euler.euler_to_matrix`).
    max_radius_px
        Frequencies beyond this radius (pixels of the original box) are 0; default ``n/2``.

    Returns
    -------
    torch.Tensor
        ``(*batch, ..., n, n//2+1)`` complex, layout of ``rfft2_centered``.
    """
    if projector.ndim != 3:
        raise InputError("project_fourier needs a 3D projector", field="projector",
                         expected="make_projector(volume)")
    return _extract(projector, rotations, max_radius_px)


def project_real(volume: torch.Tensor, rotations: torch.Tensor, pad: int = 2) -> torch.Tensor:
    """Real-space projections ``(..., n, n)`` of a map ``(n, n, n)`` for ``rotations (..., 3, 3)``."""
    n = volume.shape[-1]
    return irfft2_centered(project_fourier(make_projector(volume, pad), rotations), n)


def rotate_2d_fourier(refs: torch.Tensor | Projector, psi_deg,
                      max_radius_px: float | None = None) -> torch.Tensor:
    """In-plane rotations of 2D references in Fourier space (every reference × every angle).

    Parameters
    ----------
    refs
        A 2D :class:`Projector` (padded, gridding-corrected: accurate), or half-plane transforms
        ``(*batch, n, n//2+1)`` (interpolated as they are: no padding, cheaper, blurrier).
    psi_deg
        ``(...)`` in-plane angles in degrees (float or tensor).
    max_radius_px
        Frequencies beyond this radius are 0; default ``n/2``.

    Returns
    -------
    torch.Tensor
        ``(*batch, ..., n, n//2+1)`` complex: output ``k`` samples the reference at ``R(psi)ᵀ k``.
    """
    if not isinstance(refs, Projector):
        refs = Projector(_interp.half_from_rfft(refs, 2), refs.shape[-2], 1, 2)
    if refs.ndim != 2:
        raise InputError("rotate_2d_fourier needs 2D references", field="refs",
                         expected="make_projector_2d(images) or (..., n, n//2+1) transforms")
    psi = torch.as_tensor(psi_deg, device=refs.grid.device, dtype=refs.grid.real.dtype)
    return _extract(refs, rotation_2d(psi), max_radius_px)

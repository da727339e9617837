"""In-plane rotated 2D templates from padded class transforms, and the adjoint scatter.

The E-step compares every particle with every class reference rotated by every psi of
the grid. Templates are bilinear samples of the class's 2x-padded Fourier transform at
the rotated window pixels; the interpolation table (four grid indices and weights per
(psi, pixel)) is built once per (psi grid, window) and reused by the M-step as its
adjoint (insertion of the accumulated data and weights back into the padded grids).

Geometry (RELION, 2D): the Fourier component of an image at ``k`` samples the
reference transform at ``A(psi)^T k`` with ``A = [[c, s], [-s, c]]``; points with a
negative x are read from the conjugate half plane.

Grids are padded rfft grids ``(K, m, m//2+1)``, ``m = pad * n``, normalised so that a
padded grid sample at ``pad * k`` equals the unpadded transform at ``k`` (both divided
by ``n**2``; see :func:`vitrify.ml.fourier2d.padded_ft`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property

import torch

from vitrify.ml.window import FourierWindow


@dataclass(frozen=True)
class RotationTable:
    """Bilinear sampling table of ``P`` window pixels at ``R`` in-plane angles.

    Attributes
    ----------
    psi_deg
        ``(R,)`` in-plane angles.
    index
        ``(R, P, 4)`` long, flat indices into a padded grid ``(m * (m//2+1))``.
    weight
        ``(R, P, 4)`` float32 bilinear weights.
    conj
        ``(R, P)`` bool, sample is read from the conjugate half plane.
    grid_shape
        ``(m, m//2+1)``.
    """

    psi_deg: torch.Tensor
    index: torch.Tensor
    weight: torch.Tensor
    conj: torch.Tensor
    grid_shape: tuple[int, int]

    @property
    def n_psi(self) -> int:
        """Number of in-plane angles R."""
        return int(self.psi_deg.shape[0])

    @cached_property
    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse CSR sampling matrix ``(R*P, grid size)`` (4 bilinear / 8 trilinear weights per row) and its
        transpose.

        Built once per table; one sparse x dense product then samples or inserts all classes.
        """
        r, p, corners = self.index.shape  # 4 corners (2D grids) or 8 (3D grids, vitrify.ml.slices)
        size = math.prod(self.grid_shape)
        rows = torch.arange(r * p, device=self.index.device).repeat_interleave(corners)
        coo = torch.sparse_coo_tensor(torch.stack([rows, self.index.reshape(-1)]), self.weight.reshape(-1),
                                      (r * p, size), check_invariants=False).coalesce()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CSR support is labelled beta
            return coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr()


def make_rotation_table(psi_deg: torch.Tensor, window: FourierWindow, pad: int = 2,
                        n_pixels: int | None = None) -> RotationTable:
    """Build the sampling table for ``psi_deg`` ``(R,)`` over the first ``n_pixels`` window pixels."""
    device = psi_deg.device
    p = window.size if n_pixels is None else int(n_pixels)
    m = pad * window.box_px
    half = m // 2 + 1
    rad = torch.deg2rad(psi_deg.to(torch.float64))[:, None]
    c, s = torch.cos(rad), torch.sin(rad)
    kx = window.kx[:p].to(device, torch.float64)[None, :]
    ky = window.ky[:p].to(device, torch.float64)[None, :]
    x = pad * (c * kx - s * ky)
    y = pad * (s * kx + c * ky)
    conj = x < 0
    x = torch.where(conj, -x, x)
    y = torch.where(conj, -y, y)
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    fx, fy = x - x0, y - y0
    ix0 = x0.long().clamp(0, half - 1)
    ix1 = (x0.long() + 1).clamp(0, half - 1)
    iy0 = torch.remainder(y0.long(), m)
    iy1 = torch.remainder(y0.long() + 1, m)
    index = torch.stack([iy0 * half + ix0, iy0 * half + ix1, iy1 * half + ix0, iy1 * half + ix1], -1)
    weight = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], -1)
    return RotationTable(psi_deg=psi_deg.to(torch.float32), index=index, weight=weight.float(),
                         conj=conj, grid_shape=(m, half))


def sample_templates(grids: torch.Tensor, table: RotationTable) -> torch.Tensor:
    """Rotated templates of every class.

    Parameters
    ----------
    grids
        ``(K, m, m//2+1)`` complex64 padded class transforms.

    Returns
    -------
    ``(K, R, P)`` complex64 templates (window pixel order).
    """
    k = grids.shape[0]
    r, p, _ = table.index.shape
    flat = grids.reshape(k, -1)
    dense = torch.cat([flat.real, flat.imag]).t().contiguous()  # (m*half, 2K)
    out = torch.sparse.mm(table.matrices[0], dense)  # (R*P, 2K)
    out = torch.complex(out[:, :k].t(), out[:, k:].t()).reshape(k, r, p).to(grids.dtype)
    return torch.where(table.conj, out.conj(), out)


def scatter_to_grids(values: torch.Tensor, weights: torch.Tensor,
                     table: RotationTable) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjoint of :func:`sample_templates`: insert template-frame sums into padded grids.

    Parameters
    ----------
    values
        ``(K, R, P)`` complex, data sums per template pixel.
    weights
        ``(K, R, P)`` real, weight sums per template pixel.

    Returns
    -------
    data ``(K, m, m//2+1)`` complex and weight ``(K, m, m//2+1)`` real grids, Hermitian
    consistent on the ``kx = 0`` column.
    """
    return scatter_stacked_to_grids(values.real, values.imag, weights, table)


def scatter_stacked_to_grids(real: torch.Tensor, imag: torch.Tensor, weights: torch.Tensor,
                             table: RotationTable) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`scatter_to_grids` of data given as real and imaginary parts, each ``(K, R, P)``.

    Views of a stacked ``[Re | Im]`` array are accepted as they are (no complex copy).
    """
    k = real.shape[0]
    m, half = table.grid_shape
    dense = torch.cat([real.reshape(k, -1), torch.where(table.conj, -imag, imag).reshape(k, -1),
                       weights.reshape(k, -1).to(real.dtype)]).t()  # (R*P, 3K) view: no transposed copy
    out = torch.sparse.mm(table.matrices[1], dense)  # (m*half, 3K)
    data = torch.complex(out[:, :k].t(), out[:, k:2 * k].t()).reshape(k, m, half)
    wgrid = out[:, 2 * k:].t().reshape(k, m, half).to(weights.dtype)
    return symmetrise_column0(data), symmetrise_column0(wgrid)


def symmetrise_column0(grid: torch.Tensor) -> torch.Tensor:
    """Fold the ``kx = 0`` column: ``g(y) + conj(g(-y))`` (what one insertion means for both halves)."""
    col = grid[..., :, 0]
    flipped = torch.roll(torch.flip(col, dims=[-1]), shifts=1, dims=-1)
    out = grid.clone()
    out[..., :, 0] = col + (flipped.conj() if col.is_complex() else flipped)
    return out

"""3D templates: central slices of class volumes, and the adjoint insertion of slice sums.

The E-step's templates in 3D are the class volumes seen at the sampled orientations
``(direction, psi)``. They are made in two linear stages, each with its own adjoint:

1. For every HEALPix direction (rotation with psi = 0) the central slice of each class's
   2x padded volume transform (``PAD = 2``; RELION's initial model uses ``--pad 1``) is read by
   trilinear interpolation onto a 2x padded 2D grid ``(m, m//2+1)``, ``m = 2 n`` (a
   :class:`SliceTable`, built once per direction set and radius);
2. the 2D slices are rotated in plane to every psi of the grid by the 2D engine's bilinear
   :class:`~vitrify.ml.templates.RotationTable` (the same tables, caches and adjoint as 2D).

The volume transform is ``rfftn`` of the centred volume divided by ``n**2``: its central slice
at ``k`` (2D grid pixel ``2 k``) equals :func:`vitrify.ml.fourier2d.image_ft` of the projection
at ``k``, the scale of the particles. The M-step runs the stages backwards: template frame sums
-> padded 2D slice grids (2D adjoint) -> 3D grids (trilinear insertion). 3D grids use torch's
rfft layout ``(g, g, g//2+1)``, ``g = PAD n``, indexed ``[z, y, x]`` (DC at 0); points with
``x < 0`` are read (written) through Friedel symmetry.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

PAD = 2  # 3D grids (RELION's initial model uses --pad 1: measured, it loses ~half the resolution here)
SLICE_PAD = 2  # 2D slice grids (in-plane rotation tables of the 2D engine)


_LAST_GRIDS: list = []  # [(volumes, version, grids)]: the transforms of the last volumes asked for


def volume_grids(volumes: torch.Tensor) -> torch.Tensor:
    """``(K, n, n, n)`` real centred volumes -> ``(K, g, g, g//2+1)`` complex64 transforms (``g = PAD n``).

    The transform of the last volumes is kept (the same tensor object, unmodified since: its
    ``_version``), so the several readers of one iteration's volumes (tau2, templates, gradient,
    update) share one 3D FFT. Callers must not modify the returned grids in place.
    """
    if _LAST_GRIDS and _LAST_GRIDS[0][0] is volumes and _LAST_GRIDS[0][1] == volumes._version:
        return _LAST_GRIDS[0][2]
    grids = _volume_grids(volumes)
    _LAST_GRIDS[:] = [(volumes, volumes._version, grids)]
    return grids


def _volume_grids(volumes: torch.Tensor) -> torch.Tensor:
    n = volumes.shape[-1]
    m = PAD * n
    lo = m // 2 - n // 2
    hi = m - n - lo
    padded = F.pad(volumes, (lo, hi, lo, hi, lo, hi))
    f = torch.fft.rfftn(torch.fft.ifftshift(padded, dim=(-3, -2, -1)), dim=(-3, -2, -1))
    return (f / float(n * n)).to(torch.complex64)


def volumes_from_grids(grids: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`volume_grids`: ``(K, g, g, g//2+1)`` -> centre crop ``(K, n, n, n)`` real."""
    m = grids.shape[-3]
    full = torch.fft.fftshift(torch.fft.irfftn(grids, s=(m, m, m), dim=(-3, -2, -1)), dim=(-3, -2, -1))
    lo = m // 2 - n // 2
    return (full[..., lo:lo + n, lo:lo + n, lo:lo + n] * float(n * n)).contiguous()


def grid_shells(m: int, device=None) -> torch.Tensor:
    """Shell ``round(|k| / PAD)`` (pixels of the unpadded box) of every voxel of a ``(g, g, g//2+1)`` grid."""
    f = torch.fft.fftfreq(m, 1.0 / m, device=device, dtype=torch.float64)
    fx = torch.arange(m // 2 + 1, device=device, dtype=torch.float64)
    r = torch.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + fx[None, None, :] ** 2)
    return torch.round(r / PAD).long()


def fold_plane0(grid: torch.Tensor) -> torch.Tensor:
    """Fold the ``x = 0`` plane of ``(..., m, m, m//2+1)`` grids: ``g(z, y) + conj(g(-z, -y))``."""
    plane = grid[..., 0]
    mirror = torch.roll(torch.flip(plane, dims=[-2, -1]), shifts=(1, 1), dims=(-2, -1))
    out = grid.clone()
    out[..., 0] = plane + (mirror.conj() if plane.is_complex() else mirror)
    return out


@dataclass(frozen=True)
class SliceTable:
    """Trilinear reading of padded 2D slice pixels from padded 3D grids, for ``D`` rotations.

    Attributes
    ----------
    flat2d
        ``(Q,)`` long, flat indices into a 2D grid ``(m * (m//2+1))`` of the pixels read.
    index
        ``(D * Q, 8)`` long, flat indices into the 3D grid ``(m * m * (m//2+1))``.
    weight
        ``(D * Q, 8)`` float32 trilinear weights (0 outside the grid).
    conj
        ``(D * Q,)`` bool, the point was mirrored (read / write the conjugate).
    m
        Size of the 2D slice grids; ``g`` of the 3D grids.
    """

    flat2d: torch.Tensor
    index: torch.Tensor
    weight: torch.Tensor
    conj: torch.Tensor
    m: int
    g: int

    @property
    def n_rotations(self) -> int:
        """D."""
        return int(self.index.shape[0] // max(self.flat2d.shape[0], 1))

    @cached_property
    def matrix(self) -> torch.Tensor:
        """Sparse CSR ``(D * Q, m * m * (m//2+1))`` of the trilinear weights (rows in order: no sort)."""
        rows, corners = self.index.shape
        crow = torch.arange(0, rows * corners + 1, corners, device=self.index.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CSR support is labelled beta
            return torch.sparse_csr_tensor(crow, self.index.reshape(-1), self.weight.reshape(-1),
                                           (rows, self.g * self.g * (self.g // 2 + 1)), check_invariants=False)


    @cached_property
    def matrix_t(self) -> torch.Tensor:
        """Sparse CSR ``(m * m * (m//2+1), D * Q)``: the transpose of :attr:`matrix`, for insertion.

        Rows sorted by 3D voxel (one stable sort of the ``8 D Q`` entries): inserting is then a
        CSR x dense product, 2-3x faster on CPU than an ``index_add_`` of every corner.
        """
        rows, corners = self.index.shape
        order = torch.sort(self.index.reshape(-1), stable=True)
        size = self.g * self.g * (self.g // 2 + 1)
        crow = torch.zeros(size + 1, dtype=torch.long, device=self.index.device)
        torch.cumsum(torch.bincount(order.values, minlength=size), 0, out=crow[1:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CSR support is labelled beta
            return torch.sparse_csr_tensor(crow, order.indices // corners, self.weight.reshape(-1)[order.indices],
                                           (size, rows), check_invariants=False)


def make_slice_table(rotations: torch.Tensor, n: int, radius_px: float) -> SliceTable:
    """Table for rotations ``(D, 3, 3)`` (RELION matrices) and the 2D pixels within ``radius_px``.

    The pixel ``(kx, ky)`` of a ``m = SLICE_PAD n`` 2D grid of rotation ``A`` reads the 3D grid
    (``g = PAD n``) at ``(PAD / SLICE_PAD) A^T (kx, ky, 0)``.
    """
    m, g = SLICE_PAD * n, PAD * n
    dev = rotations.device
    ky = torch.fft.fftfreq(m, 1.0 / m, device=dev, dtype=torch.float64)
    kx = torch.arange(m // 2 + 1, device=dev, dtype=torch.float64)
    gy, gx = torch.meshgrid(ky, kx, indexing="ij")
    flat = torch.nonzero((gx * gx + gy * gy <= radius_px * radius_px).reshape(-1)).flatten()
    k2 = torch.stack([gx.reshape(-1)[flat], gy.reshape(-1)[flat]], -1)  # (Q, 2)
    pts = torch.einsum("qi,dij->dqj", k2, rotations.double()[:, :2, :]).reshape(-1, 3) * (PAD / SLICE_PAD)
    conj = pts[:, 0] < 0
    pts = torch.where(conj[:, None], -pts, pts)
    base = torch.floor(pts)
    frac = (pts - base).float()
    base = base.long()
    half = g // 2 + 1
    indices, weights = [], []
    for bx, by, bz in itertools.product((0, 1), repeat=3):
        x, y, z = base[:, 0] + bx, base[:, 1] + by, base[:, 2] + bz
        w = ((frac[:, 0] if bx else 1 - frac[:, 0]) * (frac[:, 1] if by else 1 - frac[:, 1])
             * (frac[:, 2] if bz else 1 - frac[:, 2]))
        w = w * (x < half)
        indices.append(torch.remainder(z, g) * (g * half) + torch.remainder(y, g) * half + x.clamp(max=half - 1))
        weights.append(w)
    return SliceTable(flat, torch.stack(indices, -1), torch.stack(weights, -1), conj, m, g)


def subset_rows(table: SliceTable, rotations: torch.Tensor) -> SliceTable:
    """The table of the rotations ``rotations`` ``(D',)`` (indices) of ``table``."""
    if rotations.numel() == table.n_rotations:
        return table
    q = table.flat2d.shape[0]
    rows = (rotations[:, None] * q + torch.arange(q, device=rotations.device)).reshape(-1)
    return SliceTable(table.flat2d, table.index[rows], table.weight[rows], table.conj[rows], table.m, table.g)


def read_slices(grids: torch.Tensor, table: SliceTable) -> torch.Tensor:
    """Central slices ``(K, D, m, m//2+1)`` complex64 of volume transforms ``(K, g, g, g//2+1)``."""
    k = grids.shape[0]
    m, half = table.m, table.m // 2 + 1
    flat = grids.reshape(k, -1)
    dense = torch.cat([flat.real, flat.imag]).t().contiguous()  # (g*g*(g//2+1), 2K)
    vals = torch.sparse.mm(table.matrix, dense)  # (D*Q, 2K)
    vals = torch.complex(vals[:, :k].t(), vals[:, k:].t())  # (K, D*Q)
    vals = torch.where(table.conj, vals.conj(), vals).reshape(k, table.n_rotations, -1)
    out = torch.zeros(k, table.n_rotations, m * half, dtype=torch.complex64, device=grids.device)
    out[:, :, table.flat2d] = vals
    return out.reshape(k, table.n_rotations, m, half)


def insert_slices(data2d: torch.Tensor, weight2d: torch.Tensor, table: SliceTable
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjoint of :func:`read_slices`: 2D slice grids ``(C, D, m, m//2+1)`` -> 3D grids ``(C, g, g, g//2+1)``.

    ``data2d`` complex, ``weight2d`` real. The 2D ``kx = 0`` column holds both Friedel mates of
    each pair (:func:`~vitrify.ml.templates.scatter_stacked_to_grids` folds it), so it is halved
    here; the 3D ``x = 0`` plane is folded after insertion.
    """
    c, d, m, half = data2d.shape
    col = torch.ones(half, device=data2d.device)
    col[0] = 0.5
    d2 = (data2d * col).reshape(c, d, -1)[:, :, table.flat2d].reshape(c, -1)  # (C, D*Q)
    w2 = (weight2d * col).reshape(c, d, -1)[:, :, table.flat2d].reshape(c, -1)
    d2 = torch.where(table.conj, d2.conj(), d2)
    src = torch.cat([d2.real, d2.imag, w2.float()]).t().contiguous()  # (D*Q, 3C)
    g = table.g
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CSR support is labelled beta
        acc = torch.sparse.mm(table.matrix_t, src)  # (g*g*(g//2+1), 3C)
    data = torch.complex(acc[:, :c].t(), acc[:, c:2 * c].t()).reshape(c, g, g, g // 2 + 1)
    weight = acc[:, 2 * c:].t().reshape(c, g, g, g // 2 + 1)
    return fold_plane0(data), fold_plane0(weight)


def slice_radius(radius_shells: int) -> float:
    """Radius on the padded 2D grid that bilinear in-plane rotation reads for a window of ``radius_shells``."""
    return SLICE_PAD * (radius_shells + 1) + math.sqrt(2.0) + 1e-6

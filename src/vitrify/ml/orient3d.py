"""Orientation grids of a 3D pass: HEALPix directions x psi, and their oversampled children.

Coarse orientations of HEALPix ``order`` (NESTED pixels in the asymmetric unit of the point
group, :func:`vitrify.core.sampling.asymmetric_unit_mask`) are indexed ``o = d * n_psi + i``
(direction-major, psi fastest, as :func:`vitrify.core.sampling.orientation_grid`). With adaptive
oversampling every coarse orientation has 8 children: the 4 NESTED child pixels ``4 p + a`` of
``order + 1`` times the 2 psi children ``psi_i -+ step/4`` (:func:`vitrify.ml.finepass.fine_psi`);
child ``j = 2 a + b`` of ``o`` has fine index ``8 o + j``, the layout
:mod:`vitrify.ml.finepass` expects (``Frame.n_children = 8``).

Frames carry orientation *ids* (float32) in their ``psi_deg`` slot: coarse ids ``0 .. n_o - 1``,
fine ids ``n_o .. 9 n_o - 1``; :meth:`OrientationSet.angles` turns ids back into Euler angles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vitrify.core.euler import euler_to_matrix
from vitrify.core.sampling import angular_step_deg, asymmetric_unit_mask, healpix_directions, inplane_angles
from vitrify.ml.finepass import fine_psi

N_CHILDREN = 8


@dataclass(frozen=True)
class OrientationSet:
    """Coarse and fine orientation grids of one HEALPix order.

    Attributes
    ----------
    order
        HEALPix order of the coarse directions.
    pixels
        ``(D,)`` long NESTED pixels of the coarse directions (asymmetric unit).
    directions_deg
        ``(D, 2)`` coarse (rot, tilt); ``fine_directions_deg`` ``(4 D, 2)`` their children.
    psi_deg
        ``(n_psi,)`` coarse in-plane angles; ``fine_psi_deg`` ``(2 n_psi,)``.
    """

    order: int
    pixels: torch.Tensor
    directions_deg: torch.Tensor
    fine_directions_deg: torch.Tensor
    psi_deg: torch.Tensor
    fine_psi_deg: torch.Tensor

    @property
    def n_coarse(self) -> int:
        """Coarse orientations ``D * n_psi``."""
        return int(self.directions_deg.shape[0] * self.psi_deg.shape[0])

    @property
    def step_deg(self) -> float:
        """Coarse angular step."""
        return angular_step_deg(self.order)

    def direction_matrices(self, fine: bool) -> torch.Tensor:
        """Rotations ``(D, 3, 3)`` (``(4 D, 3, 3)`` fine) of the directions with psi = 0."""
        d = self.fine_directions_deg if fine else self.directions_deg
        return euler_to_matrix(d[:, 0], d[:, 1], torch.zeros_like(d[:, 0])).float()

    def angles(self, ids: torch.Tensor) -> torch.Tensor:
        """Euler angles ``(N, 3)`` (rot, tilt, psi) in degrees of orientation ids ``(N,)``."""
        ids = ids.long().to(self.directions_deg.device)
        n_psi, n_o = self.psi_deg.shape[0], self.n_coarse
        fine = ids >= n_o
        o = torch.where(fine, (ids - n_o) // N_CHILDREN, ids)
        j = torch.where(fine, (ids - n_o) % N_CHILDREN, torch.zeros_like(ids))
        d, i = o // n_psi, o % n_psi
        a, b = j // 2, j % 2
        coarse_dir = self.directions_deg[d]
        fine_dir = self.fine_directions_deg[4 * d + a]
        direction = torch.where(fine[:, None], fine_dir, coarse_dir)
        psi = torch.where(fine, self.fine_psi_deg[2 * i + b].double(), self.psi_deg[i].double())
        psi = torch.remainder(psi + 180.0, 360.0) - 180.0
        return torch.cat([direction.double(), psi[:, None]], 1)


def make_orientations(order: int, symmetry: str = "C1", device=None) -> OrientationSet:
    """Orientation grids of HEALPix ``order`` (psi step = the angular step) in the asymmetric unit."""
    dirs = healpix_directions(order, device=device, dtype=torch.float64)
    pixels = torch.arange(dirs.shape[0], device=device)
    if symmetry.strip().upper() != "C1":
        keep = asymmetric_unit_mask(dirs[:, 0], dirs[:, 1], symmetry)
        dirs, pixels = dirs[keep], pixels[keep]
    children = (pixels[:, None] * 4 + torch.arange(4, device=device)).reshape(-1)
    fine_dirs = healpix_directions(order + 1, children, device=device, dtype=torch.float64)
    psi = inplane_angles(angular_step_deg(order), device=device, dtype=torch.float32)
    return OrientationSet(order, pixels, dirs, fine_dirs, psi, fine_psi(psi))


def fine_layout(templates: torch.Tensor, n_dirs: int, n_psi: int) -> torch.Tensor:
    """Fine templates ``(K, 4 D, 2 n_psi, P)`` (direction, psi order) -> ``(K * 8 D n_psi, P)`` child order."""
    k, p = templates.shape[0], templates.shape[-1]
    t = templates.reshape(k, n_dirs, 4, n_psi, 2, p).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(k * n_dirs * n_psi * N_CHILDREN, p)


def grid_layout(rows: torch.Tensor, n_classes: int, n_dirs: int, n_psi: int) -> torch.Tensor:
    """Inverse of :func:`fine_layout` for frame sums ``(K * 8 D n_psi, X)`` -> ``(K, 4 D, 2 n_psi, X)``."""
    x = rows.shape[-1]
    t = rows.reshape(n_classes, n_dirs, n_psi, 4, 2, x).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(n_classes, 4 * n_dirs, 2 * n_psi, x)


def _by_direction(sums: torch.Tensor, n_classes: int, n_dirs: int, n_psi: int, fine: bool) -> torch.Tensor:
    """Frame sums ``(H, R, X)`` viewed as ``(H, K, D', n_psi, ..., X)`` without a copy (fine: ``(H, K, D, 4, n_psi,
    2, X)``, the fine direction ``4 d + a`` split in ``(d, a)`` and the fine psi ``2 i + b`` in ``(i, b)``)."""
    h, x = sums.shape[0], sums.shape[-1]
    if not fine:
        return sums.view(h, n_classes, n_dirs, n_psi, x)
    return sums.view(h, n_classes, n_dirs, n_psi, 4, 2, x).permute(0, 1, 2, 4, 3, 5, 6)


def used_directions(weight: torch.Tensor, n_classes: int, n_dirs: int, n_psi: int, fine: bool) -> torch.Tensor:
    """Directions ``(U,)`` (fine: ``4 d + a``) of a frame's weight sums ``(H, R, P)`` that received weight."""
    h, p = weight.shape[0], weight.shape[-1]
    if not fine:
        per_dir = weight.view(h, n_classes, n_dirs, -1).abs().sum(dim=(0, 1, 3))
    else:  # rows in child order: (H, K, D, n_psi, 4, 2, P)
        per_dir = weight.view(h, n_classes, n_dirs, n_psi, 4, 2, p).abs().sum(dim=(0, 1, 3, 5, 6)).reshape(-1)
    return torch.nonzero(per_dir > 0).flatten()


def select_directions(sums: torch.Tensor, used: torch.Tensor, n_classes: int, n_dirs: int, n_psi: int,
                      fine: bool) -> torch.Tensor:
    """Frame sums ``(H, R, X)`` of the directions ``used`` ``(U,)`` as ``(H, K, U, n_psi', X)`` in grid order
    (fine: directions ``4 d + a``, psi ``2 i + b``; the one copy made is of the used directions only)."""
    view = _by_direction(sums, n_classes, n_dirs, n_psi, fine)
    h, x = sums.shape[0], sums.shape[-1]
    if not fine:
        return view[:, :, used]
    return view[:, :, used // 4, used % 4].reshape(h, n_classes, used.numel(), 2 * n_psi, x)

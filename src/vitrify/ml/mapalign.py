"""Rigid alignment of 3D maps: rotation (and hand) search with FFT translation search, symmetry axes.

* :func:`align_maps` puts a map onto a reference: a global search over a HEALPix grid of
  rotations on low-passed, downsampled copies (every rotation scored by the maximum of its
  FFT cross-correlation over translations), then local refinement of the best candidates with
  halving steps at full size. With ``try_hands`` the mirror image (``z -> -z``) is searched too
  (a de novo model may come out with either hand).
* :func:`find_symmetry_axes` (``vitrify align-symmetry``) rotates a map so that the symmetry
  axes of a point group lie in RELION's standard orientation: the rotation ``R`` maximising the
  correlation of ``V o R`` with its own symmetrised copy.

Rotations act as :func:`vitrify.core.symmetry.rotate_volume`: ``out(x) = V(R x)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vitrify.core.euler import euler_to_matrix
from vitrify.core.fourier import rescale_3d
from vitrify.core.masks import soft_spherical_mask
from vitrify.core.sampling import orientation_grid
from vitrify.core.symmetry import rotate_volume, symmetrise_volume, symmetry_matrices


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align_maps`: ``aligned`` map ``(n, n, n)``, rotation ``(3, 3)``, shift
    ``(3,)`` voxels (x, y, z), ``mirrored`` (hand flipped first) and the correlation reached."""

    aligned: torch.Tensor
    rotation: torch.Tensor
    shift_px: torch.Tensor
    mirrored: bool
    correlation: float


def _normalise(v: torch.Tensor) -> torch.Tensor:
    v = v - v.mean()
    return v / v.norm().clamp_min(1e-30)


def _small(volume: torch.Tensor, box: int) -> torch.Tensor:
    n = volume.shape[-1]
    return volume if n <= box else rescale_3d(volume, box)


def _best_shift_scores(rotated: torch.Tensor, ref_ft: torch.Tensor, max_shift: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Max cross-correlation over shifts ``|s| <= max_shift`` of rotated maps ``(R, n, n, n)`` and the shifts."""
    n = rotated.shape[-1]
    cc = torch.fft.irfftn(torch.fft.rfftn(rotated, dim=(-3, -2, -1)) * ref_ft.conj(), s=(n, n, n),
                          dim=(-3, -2, -1))
    cc = torch.fft.fftshift(cc, dim=(-3, -2, -1))
    c = n // 2
    lo, hi = c - max_shift, c + max_shift + 1
    win = cc[:, lo:hi, lo:hi, lo:hi].reshape(cc.shape[0], -1)
    best, arg = win.max(dim=1)
    w = hi - lo
    z, y, x = arg // (w * w), (arg // w) % w, arg % w
    return best, torch.stack([x, y, z], 1) - max_shift


def _scores(volume: torch.Tensor, ref: torch.Tensor, rotations: torch.Tensor, max_shift: int,
            chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    ref_ft = torch.fft.rfftn(_normalise(ref), dim=(-3, -2, -1))
    best, shifts = [], []
    for s in range(0, rotations.shape[0], chunk):
        rot = rotate_volume(volume, rotations[s:s + chunk])
        rot = rot - rot.mean(dim=(-3, -2, -1), keepdim=True)
        rot = rot / rot.flatten(1).norm(dim=1).clamp_min(1e-30)[:, None, None, None]
        b, sh = _best_shift_scores(rot, ref_ft, max_shift)
        best.append(b)
        shifts.append(sh)
    return torch.cat(best), torch.cat(shifts)


def _perturbations(step_deg: float, device) -> torch.Tensor:
    """27 rotations: small rotations by ``-step, 0, +step`` about x, y and z composed."""
    a = torch.tensor([-step_deg, 0.0, step_deg], dtype=torch.float64, device=device)
    gx, gy, gz = torch.meshgrid(a, a, a, indexing="ij")
    rx, ry, rz = (torch.deg2rad(g.reshape(-1)) for g in (gx, gy, gz))
    one, zero = torch.ones_like(rx), torch.zeros_like(rx)

    def mat(c, s, axis):
        rows = {"x": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
                "y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
                "z": [[c, -s, zero], [s, c, zero], [zero, zero, one]]}[axis]
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    return mat(torch.cos(rz), torch.sin(rz), "z") @ mat(torch.cos(ry), torch.sin(ry), "y") \
        @ mat(torch.cos(rx), torch.sin(rx), "x")


def _refine(score_fn, start: torch.Tensor, step_deg: float, levels: int) -> tuple[torch.Tensor, float]:
    best = start
    best_score = float(score_fn(best[None])[0])
    for _ in range(levels):
        improved = True
        while improved:
            cands = best[None] @ _perturbations(step_deg, best.device).to(best.dtype)
            scores = score_fn(cands)
            i = int(torch.argmax(scores))
            improved = float(scores[i]) > best_score + 1e-7
            if improved:
                best, best_score = cands[i], float(scores[i])
        step_deg /= 2.0
    return best, best_score


def align_maps(volume: torch.Tensor, reference: torch.Tensor, *, try_hands: bool = True, order: int = 1,
               search_box: int = 20, max_shift_px: int = 4, top: int = 3, start: Alignment | None = None) -> Alignment:
    """Align ``volume`` ``(n, n, n)`` onto ``reference`` ``(n, n, n)`` (rotation, shift, hand).

    The ``top`` best rotations of the global search (per hand) are refined on the small copies;
    the best of them is refined again at full size. With ``start`` (the alignment of a map in the
    same frame, e.g. a refinement of this one) the global search is skipped: its hand and rotation
    are refined at full size only.
    """
    if start is not None:
        return _finish(volume, reference, start.rotation.double(), start.mirrored, max_shift_px, 4.0, 4)
    n = volume.shape[-1]
    grid = orientation_grid(order, dtype=torch.float64, device=volume.device)
    mats = euler_to_matrix(grid[:, 0], grid[:, 1], grid[:, 2]).to(volume.dtype)
    small_ref = _small(reference, search_box)
    scale = small_ref.shape[-1] / n
    shift_small = max(1, int(math.ceil(max_shift_px * scale)))
    best = None
    for mirrored in ([False, True] if try_hands else [False]):
        vol = torch.flip(volume, dims=[0]) if mirrored else volume
        small = _small(vol, search_box)
        scores, _ = _scores(small, small_ref, mats, shift_small)
        for i in torch.argsort(scores, descending=True)[:top].tolist():
            rot, score = _refine(lambda r, v=small: _scores(v, small_ref, r, shift_small)[0], mats[i].double(),
                                 angular_step(order) / 2, 4)
            if best is None or score > best[0]:
                best = (score, rot, mirrored)
    _, rot, mirrored = best
    return _finish(volume, reference, rot, mirrored, max_shift_px)


def _finish(volume: torch.Tensor, reference: torch.Tensor, rot: torch.Tensor, mirrored: bool,
            max_shift_px: int, step_deg: float = 1.0, levels: int = 2) -> Alignment:
    """Refine rotation ``(3, 3)`` float64 at full size (steps from ``step_deg``, halved ``levels`` times),
    find the shift, apply both."""
    vol = torch.flip(volume, dims=[0]) if mirrored else volume
    rot, score = _refine(lambda r: _scores(vol, reference, r, max_shift_px)[0], rot, step_deg, levels)
    _, shift = _scores(vol, reference, rot[None].to(volume.dtype), max_shift_px)
    # the correlation peaks at d where the rotated map is the reference moved by +d: move it back
    aligned = torch.roll(rotate_volume(vol, rot[None].to(volume.dtype))[0],
                         shifts=tuple(-int(v) for v in shift[0].flip(0)), dims=(0, 1, 2))
    return Alignment(aligned, rot.to(volume.dtype), shift[0].to(volume.dtype), mirrored, score)


def angular_step(order: int) -> float:
    """Angular step of a HEALPix order (degrees)."""
    return 360.0 / (6 * 2 ** order)


@dataclass(frozen=True)
class SymmetryAlignment:
    """Result of :func:`find_symmetry_axes`: the map in the group's standard orientation, the
    rotation applied, and the correlation of the aligned map with its symmetrised self
    (before: ``correlation_before``, for the map as given, centred), and the centring shift ``(z, y, x)`` px."""

    aligned: torch.Tensor
    rotation: torch.Tensor
    correlation: float
    correlation_before: float
    shift_px: tuple[float, float, float] = (0.0, 0.0, 0.0)


def centre_by_mass(volume: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """``volume`` ``(n, n, n)`` moved (Fourier shift, sub-pixel) so that the centre of mass of its positive
    density is the box centre ``n // 2``, as ``relion_align_symmetry`` does unless ``--keep_centre``; returns
    the moved map and the ``(z, y, x)`` shift applied in px. Symmetry axes pass through the box centre: a
    de novo map a pixel or two off centre otherwise shows little of its symmetry."""
    from scipy import ndimage

    v = volume.detach().cpu().double().numpy()
    com = ndimage.center_of_mass(np.clip(v, 0.0, None))
    shift = tuple(float(volume.shape[-1] // 2 - c) for c in com)
    moved = np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(v), shift)).real
    return torch.as_tensor(moved, dtype=volume.dtype, device=volume.device), shift


def symmetry_score(volume: torch.Tensor, symmetry: str, mask: torch.Tensor | None = None) -> float:
    """Correlation of a map ``(n, n, n)`` with its symmetrised copy (inside ``mask`` if given)."""
    sym = symmetrise_volume(volume, symmetry)
    a, b = (volume, sym) if mask is None else (volume * mask, sym * mask)
    return float((_normalise(a) * _normalise(b)).sum())


def _symmetry_scores(volume: torch.Tensor, rotations: torch.Tensor, symmetry: str, mask: torch.Tensor,
                     chunk: int = 16) -> torch.Tensor:
    ops = symmetry_matrices(symmetry, device=volume.device, dtype=volume.dtype)[1:]
    out = []
    for s in range(0, rotations.shape[0], chunk):
        rot = rotate_volume(volume, rotations[s:s + chunk].to(volume.dtype)) * mask
        total = rot.clone()
        for op in ops:  # V_R(op x) = V(R op x)
            total += rotate_volume(volume, rotations[s:s + chunk].to(volume.dtype) @ op) * mask
        a = rot - rot.mean(dim=(-3, -2, -1), keepdim=True)
        b = total - total.mean(dim=(-3, -2, -1), keepdim=True)
        out.append((a * b).flatten(1).sum(1) / (a.flatten(1).norm(dim=1) * b.flatten(1).norm(dim=1)).clamp_min(1e-30))
    return torch.cat(out)


def find_symmetry_axes(volume: torch.Tensor, symmetry: str, *, order: int = 1, search_box: int = 16,
                       top: int = 2, keep_centre: bool = False) -> SymmetryAlignment:
    """Rotate ``volume`` ``(n, n, n)`` so that ``symmetry``'s axes are in RELION's standard orientation
    (first centred by its centre of mass, :func:`centre_by_mass`, unless ``keep_centre``)."""
    n = volume.shape[-1]
    shift = (0.0, 0.0, 0.0)
    if not keep_centre:
        volume, shift = centre_by_mass(volume)
    small = _small(volume, search_box)
    ns = small.shape[-1]
    mask_small = soft_spherical_mask(ns, ns / 2 - 2, 2.0, device=volume.device, dtype=volume.dtype)
    mask = soft_spherical_mask(n, n / 2 - 2, 2.0 * n / ns, device=volume.device, dtype=volume.dtype)
    grid = orientation_grid(order, dtype=torch.float64, device=volume.device)
    mats = euler_to_matrix(grid[:, 0], grid[:, 1], grid[:, 2]).to(volume.dtype)
    scores = _symmetry_scores(small, mats, symmetry, mask_small)
    best = None
    for i in torch.argsort(scores, descending=True)[:top].tolist():
        rot, score = _refine(lambda r: _symmetry_scores(small, r, symmetry, mask_small), mats[i].double(),
                             angular_step(order) / 2, 4)
        if best is None or score > best[0]:
            best = (score, rot)
    rot, score = _refine(lambda r: _symmetry_scores(volume, r, symmetry, mask), best[1], 1.0, 1)
    aligned = rotate_volume(volume, rot[None].to(volume.dtype))[0]
    return SymmetryAlignment(aligned, rot.to(volume.dtype), score, symmetry_score(volume, symmetry, mask), shift)

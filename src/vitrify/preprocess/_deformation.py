"""The smooth model of local (beam-induced) motion: fit to patch trajectories, evaluate, resample.

``shift(x, y, t)`` is quadratic in the normalised position and cubic in time (MotionCor2's
model); :func:`fit_deformation` shrinks it towards zero by the patch-trajectory noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Deformation:
    """Residual local motion: ``shift(x, y, t) = Σ coeffs[d, k] · basis_k(x, y, t)``.

    ``x``, ``y`` are normalised to [-1, 1] over the frame, ``t`` = frame index / (frames-1).
    ``coeffs`` is ``(2, 24)`` for d = (x, y), basis = [1, x, x², y, y², xy] × [1, t, t², t³].
    """

    coeffs: np.ndarray
    shape: tuple[int, int]
    n_frames: int


@dataclass(frozen=True)
class PatchShifts:
    """Per-patch residual trajectories: centres ``(p, 2)`` (x, y px), shifts ``(p, f, 2)`` (x, y px)."""

    centres_px: np.ndarray
    shifts_px: np.ndarray


def _basis(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(..., 24)`` deformation basis at normalised coordinates (broadcast)."""
    one = torch.ones_like(x)
    spatial = torch.stack(torch.broadcast_tensors(one, x, x * x, y, y * y, x * y), dim=-1)
    temporal = torch.stack([torch.ones_like(t), t, t * t, t * t * t], dim=-1)
    spatial, temporal = torch.broadcast_tensors(spatial.unsqueeze(-1), temporal.unsqueeze(-2))
    return (spatial * temporal).flatten(-2)


def _normalised(coord_px: torch.Tensor, size: int) -> torch.Tensor:
    return 2.0 * coord_px / max(size - 1, 1) - 1.0


def fit_deformation(patches: PatchShifts, shape: tuple[int, int]) -> Deformation:
    """Least-squares fit of the smooth model to patch trajectories, shrunk towards zero by noise.

    Patch shifts of weak patches are noisy, and a 48-coefficient model fitted to noise
    makes the sum worse than global alignment alone. The noise variance σ² is estimated
    from each patch's jitter around its own cubic trajectory; the fitted coefficients are
    then scaled by a positive-part James-Stein factor ``max(0, 1 - 2k·σ² / SS)``, with
    ``SS`` the sum of squares the model explains and ``k`` its number of free parameters
    (the time-constant terms are excluded: trajectories have mean zero; noise alone
    explains ``k·σ²`` on average, the factor 2 is a margin). A model that explains no more
    than twice what noise would is switched off (all coefficients zero).
    """
    p, n_frames, _ = patches.shifts_px.shape
    h, w = shape
    x = _normalised(torch.tensor(patches.centres_px[:, 0], dtype=torch.float64), w).view(-1, 1)
    y = _normalised(torch.tensor(patches.centres_px[:, 1], dtype=torch.float64), h).view(-1, 1)
    t = torch.linspace(0, 1, n_frames, dtype=torch.float64).view(1, -1)
    design = _basis(x, y, t).reshape(p * n_frames, -1)
    target = torch.tensor(patches.shifts_px, dtype=torch.float64).reshape(p * n_frames, 2)
    gram = design.T @ design + 1e-6 * torch.eye(design.shape[1], dtype=torch.float64)
    coeffs = torch.linalg.solve(gram, design.T @ target).T
    explained = float(((design @ coeffs.T) ** 2).sum())
    free = 2 * 6 * 3
    factor = max(0.0, 1.0 - 2 * free * _trajectory_noise_variance(patches.shifts_px) / max(explained, 1e-12))
    return Deformation(coeffs.numpy() * factor, (h, w), n_frames)


def _trajectory_noise_variance(shifts_px: np.ndarray) -> float:
    """Per-coordinate noise variance of ``(p, f, 2)`` trajectories around per-patch cubics in time."""
    p, n_frames, _ = shifts_px.shape
    if n_frames <= 5:
        return 0.0
    t = np.linspace(0, 1, n_frames)
    basis = np.stack([np.ones_like(t), t, t * t, t ** 3], axis=1)
    values = shifts_px.transpose(1, 0, 2).reshape(n_frames, -1)
    fitted = basis @ np.linalg.lstsq(basis, values, rcond=None)[0]
    return float(((values - fitted) ** 2).sum() / (values.shape[1] * (n_frames - 4)))


def deformation_field(model: Deformation, frame: int, device=None) -> torch.Tensor:
    """``(h, w, 2)`` residual shift (x, y px) of every pixel for one frame."""
    h, w = model.shape
    y = _normalised(torch.arange(h, device=device, dtype=torch.float32), h).view(-1, 1)
    x = _normalised(torch.arange(w, device=device, dtype=torch.float32), w).view(1, -1)
    t = frame / max(model.n_frames - 1, 1)
    # fold time in first: a[d, s] = Σ_k coeffs[d, 4s + k] t^k for the 6 spatial terms
    a = (model.coeffs.reshape(2, 6, 4) @ np.array([1.0, t, t * t, t ** 3])).astype(np.float32)
    a = torch.as_tensor(a, device=device).view(2, 6, 1, 1)
    # 1, x, x², y, y², xy as row + column + outer-product terms (separable, O(h·w) per axis)
    field = (a[:, 0] + a[:, 3] * y + a[:, 4] * y * y) + (a[:, 1] * x + a[:, 2] * x * x) + a[:, 5] * (y * x)
    return field.permute(1, 2, 0).contiguous()


def _deform(frame: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Move ``frame`` ``(h, w)`` content by ``+field`` ``(h, w, 2)`` (bicubic resampling)."""
    h, w = frame.shape
    ys = torch.arange(h, device=frame.device, dtype=torch.float32).view(-1, 1)
    xs = torch.arange(w, device=frame.device, dtype=torch.float32).view(1, -1)
    src_x = (xs - field[..., 0]) * (2.0 / w) + (1.0 / w) - 1.0
    src_y = (ys - field[..., 1]) * (2.0 / h) + (1.0 / h) - 1.0
    grid = torch.stack([src_x, src_y], dim=-1).unsqueeze(0)
    out = torch.nn.functional.grid_sample(frame[None, None], grid, mode="bicubic",
                                          padding_mode="border", align_corners=False)
    return out[0, 0]


def sampling_grids(model: Deformation, shifts_px: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``(stop - start, h, w, 2)`` ``grid_sample`` grids (``align_corners=False``) that move frames
    ``start:stop`` by their global shift ``shifts_px`` ``(f, 2)`` plus the model's local field.

    Built from separable row and column terms and one outer product per coordinate.
    """
    h, w = model.shape
    device = shifts_px.device
    n = stop - start
    t = torch.arange(start, stop, dtype=torch.float64) / max(model.n_frames - 1, 1)
    powers = torch.stack([torch.ones_like(t), t, t * t, t ** 3], dim=1).numpy()             # (n, 4)
    a = np.einsum("dsk,nk->nds", model.coeffs.reshape(2, 6, 4), powers)                      # (n, 2, 6)
    a = torch.as_tensor(a, dtype=torch.float32, device=device)
    a[:, :, 0] += shifts_px[start:stop].to(torch.float32)
    y = _normalised(torch.arange(h, device=device, dtype=torch.float32), h).view(1, -1, 1)
    x = _normalised(torch.arange(w, device=device, dtype=torch.float32), w).view(1, 1, -1)
    base_y = ((torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (2.0 / h) - 1.0).view(1, -1, 1)
    base_x = ((torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (2.0 / w) - 1.0).view(1, 1, -1)
    grid = torch.empty(n, h, w, 2, device=device)
    xy = y * x
    for d, (base, size) in enumerate(((base_x, w), (base_y, h))):
        c = a[:, d].view(n, 6, 1, 1) * (-2.0 / size)
        rows = c[:, 0] + c[:, 3] * y + c[:, 4] * y * y                                         # (n, h, 1)
        cols = base + c[:, 1] * x + c[:, 2] * x * x                                            # (n, 1, w)
        grid[..., d] = torch.addcmul(rows + cols, c[:, 5], xy)
    return grid

"""Beam-induced motion correction in the spirit of MotionCor2 and RELION's own implementation.

1. :func:`fix_defects` — hot/dead pixels (from a defect mask and from outliers of the sum).
2. :func:`align_global` — whole-frame shifts: each frame (or a group of neighbours) is
   aligned to the sum of all the others, iteratively, with a B-factor filter and
   parabolic sub-pixel peaks, on a Fourier-cropped copy when the frames are large.
3. :func:`align_patches` — the same on a grid of patches (after the global shifts),
   giving residual per-patch trajectories.
4. :func:`fit_deformation` — a smooth model of the residual motion, quadratic in
   (x, y) and cubic in time, fitted by least squares (MotionCor2's model).
5. :func:`sum_frames` — shift (Fourier, exact) and deform (bicubic) every frame and sum
   them, with and without dose weighting (:func:`dose_weights`, Grant & Grigorieff 2015).

All torch, batched over patches; device follows the frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vitrify.io.errors import InputError
from vitrify.preprocess._frames import (bfactor_filter, correlation_peaks, fourier_crop_rect,
                                        group_sums, shift_spectra)


@dataclass(frozen=True)
class MotionOptions:
    """Motion-correction settings (RELION job.star names in brackets)."""

    bfactor_angst2: float = 150.0        # [bfactor]
    patches_x: int = 5                   # [patch_x]; 1 x 1 = global only
    patches_y: int = 5                   # [patch_y]
    group_frames: int = 1                # [group_frames] for the global alignment
    patch_group_frames: int = 3          # neighbours summed for patch alignment
    max_shift_angst: float = 100.0       # search radius
    iterations: int = 6
    tolerance_px: float = 0.02
    align_size_px: int = 2048            # frames larger than this are aligned Fourier-cropped

    def __post_init__(self) -> None:
        if self.patches_x < 1 or self.patches_y < 1:
            raise InputError("patch counts must be >= 1", field="patch_x/patch_y", expected=">= 1")
        if self.group_frames < 1:
            raise InputError("group_frames must be >= 1", field="group_frames", expected=">= 1")

    @property
    def local(self) -> bool:
        """Whether the motion is fitted per patch (more than one patch)."""
        return self.patches_x * self.patches_y > 1


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


def fix_defects(frames: torch.Tensor, defect_mask: torch.Tensor | None = None,
                hot_sigma: float = 8.0) -> tuple[torch.Tensor, int]:
    """Replace defective pixels by each frame's mean.

    Parameters
    ----------
    frames
        ``(f, h, w)``.
    defect_mask
        ``(h, w)`` bool, True = bad (e.g. from a defect file), or None.
    hot_sigma
        Pixels of the frame sum further than this many robust σ from the median also count.

    Returns
    -------
    (torch.Tensor, int)
        Corrected frames and the number of pixels replaced.
    """
    total = frames.sum(0)
    flat = total.flatten()[:: max(1, total.numel() // 1_000_000)]
    median = flat.median()
    sigma = 1.4826 * (flat - median).abs().median().clamp(min=1e-6)
    bad = (total - median).abs() > hot_sigma * sigma
    if defect_mask is not None:
        if tuple(defect_mask.shape) != tuple(total.shape):
            raise InputError(f"defect map is {tuple(defect_mask.shape)}, frames are {tuple(total.shape)}",
                             field="fn_defect", expected="the frame size")
        bad |= defect_mask.to(bad.device, torch.bool)
    count = int(bad.sum())
    if count:
        means = frames.mean(dim=(-2, -1), keepdim=True).expand_as(frames)
        frames = torch.where(bad, means, frames)
    return frames, count


def _align_stack(spectra: torch.Tensor, shape: tuple[int, int], weights: torch.Tensor,
                 group: int, max_shift_px: float, opts: MotionOptions) -> torch.Tensor:
    """Iterative alignment of ``(..., f, h, w2)`` spectra to the sum of the others → ``(..., f, 2)``."""
    shifts = spectra.new_zeros(*spectra.shape[:-2], 2, dtype=spectra.real.dtype)
    filtered = spectra * weights
    for _ in range(opts.iterations):
        aligned = shift_spectra(filtered, shifts, shape)
        own = group_sums(aligned, group)
        refs = aligned.sum(dim=-3, keepdim=True) - own
        delta = correlation_peaks(own, refs, shape, max_shift_px)
        delta = delta - delta.mean(dim=-2, keepdim=True)
        shifts = shifts + delta
        if float(delta.pow(2).sum(-1).mean().sqrt()) < opts.tolerance_px:
            break
    return shifts - shifts.mean(dim=-2, keepdim=True)


def align_global(frames: torch.Tensor, pixel_size_angst: float, opts: MotionOptions) -> torch.Tensor:
    """Whole-frame shifts ``(f, 2)`` (x, y px, mean zero) that align ``frames`` ``(f, h, w)``."""
    n_frames, h, w = frames.shape
    scale = max(1.0, max(h, w) / opts.align_size_px)
    shape = (2 * round(h / scale / 2), 2 * round(w / scale / 2))
    spectra = torch.stack([fourier_crop_rect(torch.fft.rfft2(f.float()), (h, w), shape) for f in frames])
    weights = bfactor_filter(shape, pixel_size_angst * h / shape[0], opts.bfactor_angst2, frames.device)
    max_shift = opts.max_shift_angst / (pixel_size_angst * h / shape[0])
    shifts = _align_stack(spectra, shape, weights, opts.group_frames, max_shift, opts)
    return shifts * torch.tensor([w / shape[1], h / shape[0]], device=shifts.device, dtype=shifts.dtype)


def _patch_windows(shape: tuple[int, int], opts: MotionOptions) -> tuple[np.ndarray, int, int]:
    """Origins ``(p, 2)`` (x0, y0) of the patch grid and the patch size (ph, pw), even."""
    h, w = shape
    ph, pw = 2 * (h // opts.patches_y // 2), 2 * (w // opts.patches_x // 2)
    ys = np.linspace(0, h - ph, opts.patches_y).round().astype(int)
    xs = np.linspace(0, w - pw, opts.patches_x).round().astype(int)
    origins = np.array([(x, y) for y in ys for x in xs])
    return origins, ph, pw


def _cut_patches(frames: torch.Tensor, shifts: torch.Tensor, origins: np.ndarray, ph: int,
                 pw: int) -> torch.Tensor:
    """Spectra ``(p, f, ph, pw//2+1)`` of globally aligned patches (integer window + phase shift)."""
    n_frames, h, w = frames.shape
    out = []
    sx, sy = shifts[:, 0].cpu().numpy().astype(float), shifts[:, 1].cpu().numpy().astype(float)
    for x0, y0 in origins:
        ox = np.clip(x0 - np.round(sx), 0, w - pw).astype(int)
        oy = np.clip(y0 - np.round(sy), 0, h - ph).astype(int)
        stack = torch.stack([frames[f, oy[f]:oy[f] + ph, ox[f]:ox[f] + pw] for f in range(n_frames)]).float()
        stack = stack - stack.mean(dim=(-2, -1), keepdim=True)
        residual = torch.as_tensor(np.stack([sx - (x0 - ox), sy - (y0 - oy)], 1), device=frames.device,
                                   dtype=torch.float32)
        out.append(shift_spectra(torch.fft.rfft2(stack), residual, (ph, pw)))
    return torch.stack(out)


def align_patches(frames: torch.Tensor, global_shifts: torch.Tensor, pixel_size_angst: float,
                  opts: MotionOptions) -> PatchShifts:
    """Residual trajectories of ``patches_y × patches_x`` patches after the global shifts.

    ``frames`` ``(f, h, w)``, ``global_shifts`` ``(f, 2)``. Each trajectory has mean zero.
    """
    origins, ph, pw = _patch_windows(tuple(frames.shape[1:]), opts)
    spectra = _cut_patches(frames, global_shifts, origins, ph, pw)
    weights = bfactor_filter((ph, pw), pixel_size_angst, opts.bfactor_angst2, frames.device)
    max_shift = min(opts.max_shift_angst / pixel_size_angst / 4, min(ph, pw) / 4)
    shifts = _align_stack(spectra, (ph, pw), weights, opts.patch_group_frames, max_shift, opts)
    centres = origins + np.array([pw / 2, ph / 2])
    return PatchShifts(centres, shifts.cpu().numpy())


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


def critical_exposure(s_per_angst: torch.Tensor, voltage_kv: float) -> torch.Tensor:
    """Grant & Grigorieff (2015) critical exposure (e/Å²) at frequency s; ×0.8 at 200 kV."""
    scale = 0.8 if voltage_kv < 250 else 1.0
    return scale * (0.245 * s_per_angst.clamp(min=1e-6) ** -1.665 + 2.81)


def dose_weights(n_frames: int, shape: tuple[int, int], pixel_size_angst: float,
                 dose_per_frame: float, pre_exposure: float = 0.0, voltage_kv: float = 300.0,
                 device=None, frame_numbers: torch.Tensor | None = None) -> torch.Tensor:
    """``(f, h, w//2+1)`` weights ``exp(-N_f / 2N_c(s))`` with N_f the exposure at mid-frame.

    ``frame_numbers`` ``(f,)`` (0-based position of each frame in the exposure) defaults to
    ``0..f-1``; pass it when frames were dropped.
    """
    ky = torch.fft.fftfreq(shape[0], d=pixel_size_angst, device=device).view(-1, 1)
    kx = torch.fft.rfftfreq(shape[1], d=pixel_size_angst, device=device).view(1, -1)
    critical = critical_exposure(torch.sqrt(kx * kx + ky * ky), voltage_kv)
    if frame_numbers is None:
        frame_numbers = torch.arange(n_frames, device=device)
    exposure = pre_exposure + dose_per_frame * (frame_numbers.to(device, torch.float32) + 0.5)
    return torch.exp(-exposure.view(-1, 1, 1) / (2 * critical))


def sum_frames(frames: torch.Tensor, shifts: torch.Tensor, model: Deformation | None,
               weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Aligned sum, and dose-weighted sum when ``weights`` ``(f, h, w//2+1)`` is given.

    The weighted sum is ``Σ w_f F_f · sqrt(f / Σ w_f²)``, which equals the plain sum at
    low frequency. Returns ``(h, w)`` images.
    """
    n_frames, h, w = frames.shape
    plain = None
    weighted = None
    for f in range(n_frames):
        spectrum = shift_spectra(torch.fft.rfft2(frames[f].float()), shifts[f], (h, w))
        if model is not None:
            moved = _deform(torch.fft.irfft2(spectrum, s=(h, w)), deformation_field(model, f, frames.device))
            spectrum = torch.fft.rfft2(moved)
        plain = spectrum if plain is None else plain + spectrum
        if weights is not None:
            term = spectrum * weights[f]
            weighted = term if weighted is None else weighted + term
    unweighted = torch.fft.irfft2(plain, s=(h, w))
    if weights is None:
        return unweighted, None
    norm = torch.sqrt(n_frames / (weights ** 2).sum(0).clamp(min=1e-12))
    return unweighted, torch.fft.irfft2(weighted * norm, s=(h, w))


def accumulated_motion(shifts_px: np.ndarray, pixel_size_angst: float, early_frames: int = 4,
                       ) -> tuple[float, float, float]:
    """RELION's total / early / late accumulated motion (Å) of a ``(f, 2)`` trajectory."""
    steps = np.hypot(*np.diff(shifts_px, axis=0).T) * pixel_size_angst
    early = float(steps[: max(early_frames - 1, 0)].sum())
    total = float(steps.sum())
    return total, early, total - early


@dataclass(frozen=True)
class MotionResult:
    """Output of :func:`correct_movie` (images binned; shifts in unbinned movie pixels).

    ``global_shifts_px`` ``(f, 2)`` are the (x, y) shifts applied to each frame, relative to
    the first frame; ``micrograph`` is the plain aligned sum, ``dose_weighted`` the weighted one.
    """

    micrograph: torch.Tensor
    dose_weighted: torch.Tensor | None
    global_shifts_px: np.ndarray
    patches: PatchShifts | None
    model: Deformation | None
    n_defects: int


def bin_image(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Fourier-crop ``(h, w)`` by ``factor`` (≥ 1) to even sizes, keeping the mean."""
    if factor <= 1.0:
        return image
    h, w = image.shape
    shape = (2 * round(h / factor / 2), 2 * round(w / factor / 2))
    cropped = fourier_crop_rect(torch.fft.rfft2(image), (h, w), shape)
    return torch.fft.irfft2(cropped, s=shape) * (shape[0] * shape[1]) / (h * w)


def correct_movie(frames: torch.Tensor, pixel_size_angst: float, opts: MotionOptions, *,
                  defect_mask: torch.Tensor | None = None, dose_per_frame: float = 0.0,
                  pre_exposure: float = 0.0, voltage_kv: float = 300.0, binning: float = 1.0,
                  frame_numbers: torch.Tensor | None = None) -> MotionResult:
    """Defects → global alignment → (patch alignment + deformation model) → sums → binning.

    Parameters
    ----------
    frames
        ``(f, h, w)`` gain-corrected frames (counts).
    dose_per_frame
        e/Å² per frame; 0 = no dose weighting.
    frame_numbers
        ``(f,)`` position of each frame in the exposure (when frames were dropped).
    """
    frames, n_defects = fix_defects(frames.float(), defect_mask)
    shifts = align_global(frames, pixel_size_angst, opts)
    patches = model = None
    if opts.local and min(frames.shape[1:]) >= 64 * max(opts.patches_x, opts.patches_y):
        patches = align_patches(frames, shifts, pixel_size_angst, opts)
        model = fit_deformation(patches, tuple(frames.shape[1:]))
    weights = None
    if dose_per_frame > 0:
        weights = dose_weights(frames.shape[0], tuple(frames.shape[1:]), pixel_size_angst, dose_per_frame,
                               pre_exposure, voltage_kv, frames.device, frame_numbers)
    plain, weighted = sum_frames(frames, shifts, model, weights)
    relative = (shifts - shifts[0]).cpu().numpy()
    return MotionResult(bin_image(plain, binning), None if weighted is None else bin_image(weighted, binning),
                        relative, patches, model, n_defects)

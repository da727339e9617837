"""Beam-induced motion correction in the spirit of MotionCor2 and RELION's own implementation.

1. :func:`fix_defects` — hot/dead pixels (from a defect mask and from outliers of the sum).
2. Every frame is Fourier transformed once; alignment works on copies of the spectra
   Fourier-cropped to ``align_resolution_angst`` (the B-factor filter leaves little above it),
   at an FFT-friendly size.
3. :func:`align_global` — whole-frame shifts: each frame (or a group of neighbours) is
   aligned to the sum of all the others, iteratively, with a B-factor filter and
   parabolic sub-pixel peaks; the first iteration searches the whole correlation map, the
   later ones (sub-pixel updates) only the 3 × 3 shifts around zero, by small DFTs.
4. :func:`align_patches` — the same on a grid of patches cut from the frames binned to the
   alignment resolution (inverse FFT of the cropped spectra), after the global shifts,
   giving residual per-patch trajectories.
5. :func:`fit_deformation` — a smooth model of the residual motion, quadratic in
   (x, y) and cubic in time, fitted by least squares (MotionCor2's model), shrunk by noise.
6. Sums (:mod:`._motion_sum`) — with and without dose weighting in one pass over the frames
   (low-rank dose weights): frames shifted exactly in Fourier space when the model is off,
   resampled once (bicubic, global + local shift) when it is on.

All torch, batched over frames and patches; device follows the frames. ``timer``
(:class:`vitrify.preprocess.timing.StageTimer`) records where the time goes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vitrify.io.errors import InputError
from vitrify.preprocess._deformation import (Deformation, PatchShifts, _deform, deformation_field,
                                             fit_deformation, sampling_grids)
from vitrify.preprocess._frames import (bfactor_filter, correlation_peaks, fourier_crop_rect, good_size,
                                        group_sums, local_peaks, shift_spectra)
from vitrify.preprocess._motion_sum import (DoseBasis, critical_exposure, dose_basis, dose_weights,
                                            frame_exposures, sum_resampled, sum_spectra)
from vitrify.preprocess.timing import StageTimer, stage

__all__ = [
    "Deformation", "MotionOptions", "MotionResult", "PatchShifts", "accumulated_motion", "align_global",
    "align_patches", "bin_image", "correct_movie", "critical_exposure", "deformation_field", "dose_weights",
    "fit_deformation", "fix_defects", "sum_frames", "_deform",
]

#: full-size spectra are kept for the sums when they take at most this much memory (a K3 movie of
#: 40 frames: 3.8 GB, as RELION keeps them); larger movies are transformed again for the sums
_KEEP_SPECTRA_BYTES = 4 << 30
_CHUNK = 4


@dataclass(frozen=True)
class MotionOptions:
    """Motion-correction settings (RELION job.star names in brackets)."""

    bfactor_px2: float = 150.0           # [bfactor] pixel² of the movie, as RELION's (_frames.bfactor_filter)
    patches_x: int = 5                   # [patch_x]; 1 x 1 = global only
    patches_y: int = 5                   # [patch_y]
    group_frames: int = 1                # [group_frames] for the global alignment
    patch_group_frames: int = 3          # neighbours summed for patch alignment
    max_shift_angst: float = 100.0       # search radius
    iterations: int = 6
    tolerance_px: float = 0.02
    align_size_px: int = 2048            # alignment spectra are at most this size
    align_resolution_angst: float = 8.0  # alignment spectra are Fourier-cropped to this resolution

    def __post_init__(self) -> None:
        if self.patches_x < 1 or self.patches_y < 1:
            raise InputError("patch counts must be >= 1", field="patch_x/patch_y", expected=">= 1")
        if self.group_frames < 1:
            raise InputError("group_frames must be >= 1", field="group_frames", expected=">= 1")

    @property
    def local(self) -> bool:
        """Whether the motion is fitted per patch (more than one patch)."""
        return self.patches_x * self.patches_y > 1


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
        Corrected frames (a copy when any pixel was replaced) and the number of pixels replaced.
    """
    total = frames.sum(0)
    flat = total.flatten()[:: max(1, total.numel() // 250_000)]
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
        rows, cols = torch.nonzero(bad, as_tuple=True)
        frames = frames.clone()
        frames[:, rows, cols] = frames.mean(dim=(-2, -1)).unsqueeze(-1)
    return frames, count


def alignment_shape(shape: tuple[int, int], pixel_size_angst: float, opts: MotionOptions) -> tuple[int, int]:
    """Even, FFT-friendly size of the spectra the alignment uses: frames ``shape`` Fourier-cropped to
    ``opts.align_resolution_angst`` (and at most ``opts.align_size_px``), never larger than ``shape``."""
    keep = min(1.0, 2.0 * pixel_size_angst / opts.align_resolution_angst) if opts.align_resolution_angst > 0 else 1.0
    keep = min(keep, opts.align_size_px / max(shape))
    return tuple(min(2 * (n // 2), max(good_size(int(np.ceil(n * keep))), 2 * (min(64, n) // 2)))
                 for n in shape)


def frame_spectra(frames: torch.Tensor, crop: tuple[int, int], keep_full: bool
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``rfft2`` of ``frames`` ``(f, h, w)`` in chunks: spectra cropped to ``crop`` ``(f, ch, cw//2+1)``
    and, with ``keep_full``, the full ones ``(f, h, w//2+1)`` (None otherwise)."""
    n_frames, h, w = frames.shape
    crops = torch.empty(n_frames, crop[0], crop[1] // 2 + 1, dtype=torch.complex64, device=frames.device)
    full = (torch.empty(n_frames, h, w // 2 + 1, dtype=torch.complex64, device=frames.device)
            if keep_full else None)
    for start in range(0, n_frames, _CHUNK):
        stop = min(start + _CHUNK, n_frames)
        if full is not None:
            spectra = torch.fft.rfft2(frames[start:stop].float(), out=full[start:stop])
        else:
            spectra = torch.fft.rfft2(frames[start:stop].float())
        crops[start:stop] = fourier_crop_rect(spectra, (h, w), crop)
    return crops, full


def _align_stack(spectra: torch.Tensor, shape: tuple[int, int], weights: torch.Tensor,
                 group: int, max_shift_px: float, opts: MotionOptions) -> torch.Tensor:
    """Iterative alignment of ``(..., f, h, w2)`` spectra to the sum of the others → ``(..., f, 2)``."""
    shifts = spectra.new_zeros(*spectra.shape[:-2], 2, dtype=spectra.real.dtype)
    filtered = spectra * weights
    for iteration in range(opts.iterations):
        aligned = shift_spectra(filtered, shifts, shape) if iteration else filtered
        own = group_sums(aligned, group)
        refs = aligned.sum(dim=-3, keepdim=True) - own
        delta = correlation_peaks(own, refs, shape, max_shift_px) if iteration == 0 else local_peaks(own, refs, shape)
        delta = delta - delta.mean(dim=-2, keepdim=True)
        shifts = shifts + delta
        if float(delta.pow(2).sum(-1).mean().sqrt()) < opts.tolerance_px:
            break
    return shifts - shifts.mean(dim=-2, keepdim=True)


def _scale(full: tuple[int, int], crop: tuple[int, int], device) -> torch.Tensor:
    """``(2,)`` (x, y) size of a cropped pixel in full pixels."""
    return torch.tensor([full[1] / crop[1], full[0] / crop[0]], device=device, dtype=torch.float32)


def align_global_spectra(crops: torch.Tensor, crop: tuple[int, int], shape: tuple[int, int],
                         pixel_size_angst: float, opts: MotionOptions) -> torch.Tensor:
    """Whole-frame shifts ``(f, 2)`` (x, y full px, mean zero) from spectra ``(f, ch, cw//2+1)``
    cropped to ``crop`` from frames of ``shape``."""
    crop_pixel = pixel_size_angst * shape[0] / crop[0]
    weights = bfactor_filter(crop, shape[0] / crop[0], opts.bfactor_px2, crops.device)
    shifts = _align_stack(crops, crop, weights, opts.group_frames, opts.max_shift_angst / crop_pixel, opts)
    return shifts * _scale(shape, crop, shifts.device)


def align_global(frames: torch.Tensor, pixel_size_angst: float, opts: MotionOptions) -> torch.Tensor:
    """Whole-frame shifts ``(f, 2)`` (x, y px, mean zero) that align ``frames`` ``(f, h, w)``."""
    shape = tuple(frames.shape[1:])
    crop = alignment_shape(shape, pixel_size_angst, opts)
    crops, _ = frame_spectra(frames, crop, keep_full=False)
    return align_global_spectra(crops, crop, shape, pixel_size_angst, opts)


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
    sx, sy = shifts[:, 0].cpu().numpy().astype(float), shifts[:, 1].cpu().numpy().astype(float)
    stack = torch.empty(len(origins), n_frames, ph, pw, device=frames.device)
    residual = np.empty((len(origins), n_frames, 2))
    for p, (x0, y0) in enumerate(origins):
        ox = np.clip(x0 - np.round(sx), 0, w - pw).astype(int)
        oy = np.clip(y0 - np.round(sy), 0, h - ph).astype(int)
        for f in range(n_frames):
            stack[p, f] = frames[f, oy[f]:oy[f] + ph, ox[f]:ox[f] + pw]
        residual[p] = np.stack([sx - (x0 - ox), sy - (y0 - oy)], 1)
    stack -= stack.mean(dim=(-2, -1), keepdim=True)
    residual = torch.as_tensor(residual, device=frames.device, dtype=torch.float32)
    return shift_spectra(torch.fft.rfft2(stack), residual, (ph, pw))


def align_patches_binned(binned: torch.Tensor, global_shifts: torch.Tensor, shape: tuple[int, int],
                         pixel_size_angst: float, opts: MotionOptions) -> PatchShifts:
    """Residual patch trajectories from frames ``binned`` ``(f, bh, bw)`` (Fourier-binned frames of
    ``shape``); ``global_shifts`` ``(f, 2)`` and the result in full pixels."""
    crop = tuple(binned.shape[1:])
    scale = _scale(shape, crop, binned.device)
    origins, ph, pw = _patch_windows(crop, opts)
    ph, pw = _good_below(ph), _good_below(pw)
    spectra = _cut_patches(binned, global_shifts / scale, origins, ph, pw)
    crop_pixel = pixel_size_angst * shape[0] / crop[0]
    weights = bfactor_filter((ph, pw), shape[0] / crop[0], opts.bfactor_px2, binned.device)
    max_shift = min(opts.max_shift_angst / crop_pixel / 4, min(ph, pw) / 4)
    shifts = _align_stack(spectra, (ph, pw), weights, opts.patch_group_frames, max_shift, opts) * scale
    centres = (origins + np.array([pw / 2, ph / 2])) * scale.cpu().numpy()
    return PatchShifts(centres, shifts.cpu().numpy())


def _good_below(n: int) -> int:
    """The largest even 2-3-5-smooth size ≤ ``n`` (``n`` itself when none is within 10 %)."""
    for m in range(2 * (n // 2), int(0.9 * n) - 1, -2):
        if good_size(m) == m:
            return m
    return 2 * (n // 2)


def _binned_frames(crops: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """``(f, ch, cw)`` real frames from their cropped spectra (Fourier binning)."""
    return torch.fft.irfft2(crops, s=crop)


def align_patches(frames: torch.Tensor, global_shifts: torch.Tensor, pixel_size_angst: float,
                  opts: MotionOptions) -> PatchShifts:
    """Residual trajectories of ``patches_y × patches_x`` patches after the global shifts.

    ``frames`` ``(f, h, w)``, ``global_shifts`` ``(f, 2)``. Each trajectory has mean zero.
    """
    shape = tuple(frames.shape[1:])
    crop = alignment_shape(shape, pixel_size_angst, opts)
    crops, _ = frame_spectra(frames, crop, keep_full=False)
    return align_patches_binned(_binned_frames(crops, crop), global_shifts, shape, pixel_size_angst, opts)


def _active(model: Deformation | None) -> bool:
    return model is not None and bool(np.any(model.coeffs != 0))


def sum_frames(frames: torch.Tensor, shifts: torch.Tensor, model: Deformation | None,
               weights: torch.Tensor | DoseBasis | None, spectra: torch.Tensor | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Aligned sum, and dose-weighted sum when ``weights`` is given.

    ``frames`` ``(f, h, w)``; ``shifts`` ``(f, 2)``; ``weights`` ``(f, h, w//2+1)`` or a
    :class:`DoseBasis`; ``spectra`` the frames' rfft2 ``(f, h, w//2+1)`` if already computed.
    The weighted sum is ``Σ w_f F_f · sqrt(f / Σ w_f²)``, which equals the plain sum at
    low frequency. Returns ``(h, w)`` images.
    """
    n_frames, h, w = frames.shape
    dose = DoseBasis.exact(weights) if isinstance(weights, torch.Tensor) else weights
    if _active(model):
        return sum_resampled(frames, lambda a, b: sampling_grids(model, shifts, a, b), dose)

    def spectra_of(start: int, stop: int) -> torch.Tensor:
        return spectra[start:stop] if spectra is not None else torch.fft.rfft2(frames[start:stop].float())

    return sum_spectra(spectra_of, n_frames, (h, w), shifts, dose)


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
                  frame_numbers: torch.Tensor | None = None, timer: StageTimer | None = None) -> MotionResult:
    """Defects → FFT → global alignment → (patch alignment + deformation model) → sums → binning.

    Parameters
    ----------
    frames
        ``(f, h, w)`` gain-corrected frames (counts).
    dose_per_frame
        e/Å² per frame; 0 = no dose weighting.
    frame_numbers
        ``(f,)`` position of each frame in the exposure (when frames were dropped).
    timer
        Records the stages (defects, FFT, global alignment, patch alignment, sums, binning).
    """
    with stage(timer, "defects"):
        frames, n_defects = fix_defects(frames.float(), defect_mask)
    n_frames, h, w = frames.shape
    shape = (h, w)
    crop = alignment_shape(shape, pixel_size_angst, opts)
    with stage(timer, "FFT frames"):
        keep = n_frames * h * (w // 2 + 1) * 8 <= _KEEP_SPECTRA_BYTES
        crops, spectra = frame_spectra(frames, crop, keep_full=keep)
    with stage(timer, "global alignment"):
        shifts = align_global_spectra(crops, crop, shape, pixel_size_angst, opts)
    patches = model = None
    if opts.local and min(shape) >= 64 * max(opts.patches_x, opts.patches_y):
        with stage(timer, "patch alignment"):
            patches = align_patches_binned(_binned_frames(crops, crop), shifts, shape, pixel_size_angst, opts)
            model = fit_deformation(patches, shape)
    del crops
    with stage(timer, "sums + dose weighting"):
        dose = None
        if dose_per_frame > 0:
            exposures = frame_exposures(n_frames, dose_per_frame, pre_exposure, frame_numbers)
            dose = dose_basis(exposures, shape, pixel_size_angst, voltage_kv, frames.device)
        plain, weighted = sum_frames(frames, shifts, model, dose, spectra)
    with stage(timer, "binning"):
        relative = (shifts - shifts[0]).cpu().numpy()
        result = MotionResult(bin_image(plain, binning), None if weighted is None else bin_image(weighted, binning),
                              relative, patches, model, n_defects)
    return result

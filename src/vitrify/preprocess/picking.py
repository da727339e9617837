"""Laplacian-of-Gaussian particle picking, in the spirit of RELION's LoG picker.

The micrograph is binned (Fourier cropping) to a working pixel size where the smallest
particle spans ~10 pixels, mirror-padded (an ice gradient must not become a step where the
FFT wraps the image round), low-pass filtered and filtered with scale-normalised LoG kernels
for diameters between the minimum and maximum. Each scale's response is divided by the σ that
the micrograph's *noise* alone would give it: the white-noise level is measured at high
frequency (0.5-0.9 Nyquist, where particles hardly contribute), so the threshold means the same
in a sparse and in a crowded field (statistics of the map itself are set by the particles when
they are many). The figure of merit (FOM) is the best scale's response in those σ units.
Peaks above ``baseline + adjust`` and below ``upper`` are kept if they are round (the smaller
over the larger Hessian eigenvalue at least ``min_roundness``: edges and lines are not
particles) and not on the darker side of a micrograph split in two (carbon, when it darkens an
area by more than ``dark_area_contrast`` of the mean), at least ``min_distance`` apart.
RELION's meaning of the threshold adjustment is kept (σ units, negative picks more); our
baseline (4 σ of noise: pure noise gives no picks) replaces RELION's internal default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from vitrify.io.errors import InputError


@dataclass(frozen=True)
class LogPickOptions:
    """LoG picker settings (RELION job.star names in brackets)."""

    diameter_min_angst: float                 # [log_diam_min]
    diameter_max_angst: float                 # [log_diam_max]
    lowpass_angst: float = 20.0               # [log_maxres]
    invert: bool = False                      # [log_invert]: particles brighter than background
    threshold_adjust: float = 0.0             # [log_adjust_thr] in noise σ of the LoG response
    upper_threshold: float = 999.0            # [log_upper_thr] in σ (drops ice/contamination)
    baseline_sigma: float = 4.0               # threshold (noise σ) at adjust 0
    min_distance_fraction: float = 0.5        # of the minimum diameter (crowded fields: < 1)
    n_scales: int = 5
    min_roundness: float = 0.2                # smaller / larger Hessian eigenvalue of a pick
    dark_area_contrast: float = 0.015         # no picks on a darker area (carbon); 0: off
    crowded_coverage: float = 0.55            # picks' discs cover more of the free area: pick again smaller
    crowded_scale: float = 0.55               # diameters × this in a crowded field (same NMS distance)

    def __post_init__(self) -> None:
        if not 0 < self.diameter_min_angst <= self.diameter_max_angst:
            raise InputError("LoG diameters must satisfy 0 < min <= max",
                             field="log_diam_min/log_diam_max", expected="positive Å, min <= max")
        if self.n_scales < 1:
            raise InputError("need at least one LoG scale", field="n_scales", expected=">= 1")


@dataclass(frozen=True)
class Picks:
    """Picked coordinates in micrograph pixels (0-based, x = column) with their FOM (all ``(k,)``)."""

    x_px: np.ndarray
    y_px: np.ndarray
    figure_of_merit: np.ndarray
    diameter_angst: np.ndarray
    class_number: np.ndarray | None = None    # 1-based reference of template picks
    psi_deg: np.ndarray | None = None         # in-plane angle of template picks

    def __len__(self) -> int:
        return len(self.x_px)


def fourier_bin(image: torch.Tensor, shape_out: tuple[int, int]) -> torch.Tensor:
    """Resample ``(ny, nx)`` to ``shape_out`` by cropping its Fourier transform.

    Pixel 0 stays at pixel 0, so a coordinate scales by ``n_in / n_out`` per axis.
    """
    ny, nx = image.shape
    my, mx = shape_out
    if my > ny or mx > nx:
        raise InputError(f"cannot bin {nx}x{ny} up to {mx}x{my}", field="shape",
                         expected="a smaller output")
    f = torch.fft.rfft2(image.float())
    rows = torch.cat([torch.arange(0, (my + 1) // 2), torch.arange(ny - my // 2, ny)]).to(image.device)
    cropped = f[rows][:, : mx // 2 + 1]
    return torch.fft.irfft2(cropped, s=(my, mx)) * (my * mx) / (ny * nx)


def _working_shape(shape: tuple[int, int], pixel_size_angst: float, opts: LogPickOptions,
                   ) -> tuple[tuple[int, int], float]:
    target = max(pixel_size_angst, min(opts.lowpass_angst / 2, opts.diameter_min_angst / 10))
    factor = target / pixel_size_angst
    ny, nx = shape
    out = (max(2 * round(ny / factor / 2), 16), max(2 * round(nx / factor / 2), 16))
    out = (min(out[0], ny), min(out[1], nx))
    return out, pixel_size_angst * ny / out[0]


def _frequency_squared(shape: tuple[int, int], device) -> torch.Tensor:
    fy = torch.fft.fftfreq(shape[0], device=device).view(-1, 1)
    fx = torch.fft.rfftfreq(shape[1], device=device).view(1, -1)
    return fy * fy + fx * fx


def noise_variance(image: torch.Tensor, band: tuple[float, float] = (0.5, 0.9)) -> float:
    """Per-pixel variance of the white noise in ``image`` ``(ny, nx)``, from a high-frequency annulus.

    Between ``band`` (fractions of Nyquist) a micrograph holds almost only noise (the particles'
    signal there is faint), so the median power there, divided by ln 2 (the median of an
    exponential variable), measures the noise without being swayed by the particles, however
    many there are. Returns 0 for an image without noise.
    """
    f = torch.fft.rfft2(image.float() - image.float().mean())
    k = torch.sqrt(_frequency_squared(tuple(image.shape), image.device)) / 0.5
    ring = (k >= band[0]) & (k < band[1])
    power = f.real[ring] ** 2 + f.imag[ring] ** 2
    if not power.numel():
        return 0.0
    return float(power.median()) / math.log(2.0) / (image.shape[0] * image.shape[1])


def _plane_design(shape: tuple[int, int], device) -> torch.Tensor:
    """``(ny * nx, 3)`` columns 1, x, y (x and y from -1 to 1)."""
    ny, nx = shape
    y = torch.linspace(-1, 1, ny, device=device, dtype=torch.float64).view(-1, 1).expand(ny, nx)
    x = torch.linspace(-1, 1, nx, device=device, dtype=torch.float64).view(1, -1).expand(ny, nx)
    return torch.stack([torch.ones_like(x), x, y], -1).reshape(-1, 3)


def _less_plane(image: torch.Tensor, fit_on: torch.Tensor | None = None) -> torch.Tensor:
    """``image`` ``(ny, nx)`` less the plane that best fits it (on the pixels of ``fit_on`` only)."""
    design = _plane_design(tuple(image.shape), image.device)
    values = image.reshape(-1, 1).double()
    rows = slice(None) if fit_on is None else fit_on.flatten()
    coef = torch.linalg.lstsq(design[rows], values[rows]).solution
    return (values - design @ coef).reshape(image.shape).float()


def reflect_pad(image: torch.Tensor, pad_px: int) -> torch.Tensor:
    """``image`` ``(ny, nx)`` less its mean, mirror-padded by ``pad_px`` on every side.

    The FFT wraps an image round: an ice-thickness gradient would become a step between opposite
    edges, and the filters would answer it along the micrograph's borders. Mirrored, the image
    continues without a step (a fitted plane is not subtracted: on a micrograph with carbon it
    would tilt, and its kinks at the borders and corners look like particles to the filters).
    """
    ny, nx = image.shape
    pad_px = min(pad_px, ny - 1, nx - 1)
    centred = image - image.mean()
    return torch.nn.functional.pad(centred[None, None], (pad_px,) * 4, mode="reflect")[0, 0]


def _otsu(values: torch.Tensor) -> tuple[float, float]:
    """Otsu's split of ``values``: (threshold, upper class mean − lower class mean)."""
    values = torch.sort(values.flatten()).values.double()
    n = values.numel()
    below = torch.arange(1, n, device=values.device, dtype=torch.float64)
    cumulative = torch.cumsum(values, 0)[:-1]
    low_mean = cumulative / below
    high_mean = (values.sum() - cumulative) / (n - below)
    split = int((below * (n - below) * (high_mean - low_mean) ** 2).argmax())
    return float(values[split]), float(high_mean[split] - low_mean[split])


def dark_area(padded: torch.Tensor, pad_px: int, smooth_px: float, mean_level: float,
              min_contrast: float) -> torch.Tensor:
    """``(ny, nx)`` True on the darker part of a micrograph split in two, such as a carbon film.

    ``padded`` is :func:`reflect_pad`'s output; it is smoothed by a Gaussian of ``smooth_px``
    (about a particle diameter, so particles wash out) and split in two by Otsu's rule, the plane
    (ice gradient) being fitted again on the brighter part only, so that a carbon step does not
    tilt it. When the darker part is darker than the rest by at least ``min_contrast`` of
    ``mean_level`` (the image mean), it is returned; particles and an ice gradient never darken a
    whole area that much (< 0.5 %), while carbon does (3-5 % in our simulations). All False otherwise.
    """
    shape = tuple(padded.shape)
    k2 = _frequency_squared(shape, padded.device)
    smooth = torch.fft.irfft2(torch.fft.rfft2(padded) * torch.exp(-2 * math.pi ** 2 * smooth_px ** 2 * k2), s=shape)
    smooth = smooth[pad_px: shape[0] - pad_px, pad_px: shape[1] - pad_px]
    flat = _less_plane(smooth)
    for _ in range(3):
        threshold, contrast = _otsu(flat)
        if contrast < min_contrast * abs(mean_level):
            return torch.zeros_like(smooth, dtype=torch.bool)
        flat = _less_plane(smooth, fit_on=flat > threshold)
    threshold, contrast = _otsu(flat)
    if contrast < min_contrast * abs(mean_level):
        return torch.zeros_like(smooth, dtype=torch.bool)
    return flat <= threshold


def _kernels(shape: tuple[int, int], sigmas_px: torch.Tensor, lowpass_px: float, device):
    """``(s, ny, nx//2+1)`` Gaussian × low-pass transfer functions and the frequencies ``(fy, fx)``."""
    fy = torch.fft.fftfreq(shape[0], device=device).view(1, -1, 1)
    fx = torch.fft.rfftfreq(shape[1], device=device).view(1, 1, -1)
    k2 = fy * fy + fx * fx
    sig2 = (sigmas_px.to(device) ** 2).view(-1, 1, 1)
    gauss = sig2 * torch.exp(-2 * math.pi ** 2 * sig2 * k2 - math.log(2.0) * k2 * lowpass_px ** 2)
    return gauss, fy, fx


def log_responses(image: torch.Tensor, sigmas_px: torch.Tensor, lowpass_px: float,
                  noise_variance_px: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale-normalised LoG responses, positive on *dark* blobs, and how round each blob is.

    Parameters
    ----------
    image
        ``(ny, nx)`` working-resolution micrograph (padded: the FFT wraps it round).
    sigmas_px
        ``(s,)`` Gaussian widths in working pixels.
    lowpass_px
        Low-pass resolution in working pixels (a Gaussian filter at half height there).
    noise_variance_px
        Per-pixel variance of white noise in ``image``: each response is divided by the σ that
        noise alone would give it. None: by each response's own std over the image.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        ``(s, ny, nx)`` responses, and ``(s, ny, nx)`` roundness: the smaller over the larger
        eigenvalue of the (sign-flipped) Hessian, 1 for a round blob, near 0 or negative along an
        edge or a line (a carbon edge, a crack) that the Laplacian alone would take for particles.
    """
    shape = tuple(image.shape)
    f = torch.fft.rfft2(image - image.mean())
    gauss, fy, fx = _kernels(shape, sigmas_px, lowpass_px, image.device)
    c = 4 * math.pi ** 2
    # second derivatives (transfer functions -4π² fy², fy fx, fx²): positive definite on dark blobs
    hyy, hxy, hxx = (torch.fft.irfft2(f * gauss * (-c * a * b), s=shape)
                     for a, b in ((fy, fy), (fy, fx), (fx, fx)))
    responses = hxx + hyy
    half_diff = torch.sqrt(((hxx - hyy) / 2) ** 2 + hxy ** 2)
    big = responses / 2 + half_diff
    roundness = (responses / 2 - half_diff) / big.abs().clamp(min=1e-30)
    if noise_variance_px is None:
        std = responses.std(dim=(-2, -1), keepdim=True)
    else:  # Parseval over the full plane: the rfft half counts twice except its first/last columns
        weight = torch.full((1, 1, gauss.shape[-1]), 2.0, device=image.device)
        weight[..., 0] = 1.0
        if shape[1] % 2 == 0:
            weight[..., -1] = 1.0
        energy = ((gauss * c * (fy * fy + fx * fx)) ** 2 * weight).sum(dim=(-2, -1), keepdim=True)
        std = torch.sqrt(noise_variance_px * energy / (shape[0] * shape[1]))
    return (responses - responses.mean(dim=(-2, -1), keepdim=True)) / std.clamp(min=1e-12), roundness


def robust_stats(values: torch.Tensor) -> tuple[float, float]:
    """Median and MAD-based σ: particles are a minority of the pixels and must not set the scale."""
    flat = values.flatten()
    if flat.numel() > 1_000_000:
        flat = flat[:: flat.numel() // 1_000_000 + 1]
    median = flat.median()
    mad = (flat - median).abs().median()
    return float(median), max(float(1.4826 * mad), 1e-12)


def local_peaks(fom: torch.Tensor, window_px: int, lower: float, upper: float,
                 edge_px: int) -> torch.Tensor:
    """``(k, 2)`` (row, col) of local maxima of ``fom`` within (lower, upper), away from edges."""
    window_px = max(3, window_px | 1)
    pooled = torch.nn.functional.max_pool2d(fom[None, None], window_px, stride=1,
                                            padding=window_px // 2)[0, 0]
    peak = (fom == pooled) & (fom > lower) & (fom < upper)
    if edge_px > 0:
        peak[:edge_px] = False
        peak[-edge_px:] = False
        peak[:, :edge_px] = False
        peak[:, -edge_px:] = False
    return peak.nonzero()


def suppress_close(points: np.ndarray, scores: np.ndarray, min_distance: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of kept points, best first.

    ``points`` is ``(k, 2)``; a point is dropped if a better one lies closer than ``min_distance``.
    """
    order = np.argsort(-scores)
    kept: list[int] = []
    for i in order:
        if kept:
            d2 = ((points[kept] - points[i]) ** 2).sum(1)
            if d2.min() < min_distance ** 2:
                continue
        kept.append(int(i))
    return np.asarray(kept, dtype=int)


def pick_log(micrograph: torch.Tensor, pixel_size_angst: float, opts: LogPickOptions) -> Picks:
    """Pick particles on one micrograph; in a crowded field, again at smaller scales.

    When the picks' discs (at the largest diameter) cover more than ``opts.crowded_coverage`` of
    the area left free of carbon, neighbouring particles touch or overlap and blobs of the given
    diameters merge two or three of them into one: the micrograph is picked again with the
    diameters scaled by ``opts.crowded_scale`` (a particle's own dense core still answers the
    smaller kernels) but the same suppression distance in Å (two picks that close are one particle
    twice), and the second picks are kept when there are more of them.

    Parameters
    ----------
    micrograph
        ``(ny, nx)`` image, particles dark ("black protein") unless ``opts.invert``.

    Returns
    -------
    Picks
        Coordinates in the input micrograph's pixels, best FOM first. An empty
        micrograph (no peak above threshold) gives empty arrays.
    """
    picks, free_fraction = _pick_once(micrograph, pixel_size_angst, opts)
    area = free_fraction * micrograph.shape[0] * micrograph.shape[1] * pixel_size_angst ** 2
    disc = math.pi * (0.5 * opts.diameter_max_angst) ** 2
    if opts.crowded_scale >= 1.0 or len(picks) * disc <= opts.crowded_coverage * max(area, 1e-30):
        return picks
    smaller = replace(opts, diameter_min_angst=opts.diameter_min_angst * opts.crowded_scale,
                      diameter_max_angst=opts.diameter_max_angst * opts.crowded_scale, crowded_scale=1.0,
                      min_distance_fraction=opts.min_distance_fraction / opts.crowded_scale)
    again, _ = _pick_once(micrograph, pixel_size_angst, smaller)
    return again if len(again) > len(picks) else picks


def _pick_once(micrograph: torch.Tensor, pixel_size_angst: float, opts: LogPickOptions) -> tuple[Picks, float]:
    """One pass of LoG picking at ``opts``' diameters on ``micrograph (ny, nx)``; also the fraction of
    the micrograph not on carbon (1 where no dark area is found)."""
    if not torch.isfinite(micrograph).all():
        raise InputError("micrograph has non-finite pixels", field="pixel values",
                         expected="finite numbers")
    shape, work_px = _working_shape(tuple(micrograph.shape), pixel_size_angst, opts)
    image = fourier_bin(micrograph, shape)
    if opts.invert:
        image = -image
    diameters = torch.linspace(opts.diameter_min_angst, opts.diameter_max_angst, opts.n_scales)
    sigmas = diameters / work_px / (2 * math.sqrt(2))
    pad = min(int(math.ceil(3 * float(sigmas.max()) + opts.lowpass_angst / work_px)), shape[0] - 1, shape[1] - 1)
    noise_in = noise_variance(micrograph)
    noise = noise_in * (shape[0] * shape[1]) / (micrograph.shape[0] * micrograph.shape[1])
    padded = reflect_pad(image, pad)
    responses, roundness = log_responses(padded, sigmas, opts.lowpass_angst / work_px, noise if noise > 0 else None)
    crop = (slice(None), slice(pad, pad + shape[0]), slice(pad, pad + shape[1]))
    fom, scale = responses[crop].max(dim=0)
    round_at_best = roundness[crop].gather(0, scale[None])[0]
    free = 1.0
    lower = opts.baseline_sigma + opts.threshold_adjust
    upper = opts.upper_threshold
    min_dist = opts.min_distance_fraction * opts.diameter_min_angst / work_px
    edge = int(math.ceil(0.5 * opts.diameter_min_angst / work_px))
    peaks = local_peaks(fom, int(round(min_dist)), lower, upper, edge)
    keep = round_at_best[peaks[:, 0], peaks[:, 1]] >= opts.min_roundness
    level = abs(float(micrograph.mean()))   # counts: a darker area is a fraction of it (not if normalised)
    if opts.dark_area_contrast > 0 and level > 2 * math.sqrt(noise_in):
        dark = dark_area(padded, pad, opts.diameter_max_angst / work_px, level, opts.dark_area_contrast)
        keep &= ~dark[peaks[:, 0], peaks[:, 1]]
        free = 1.0 - float(dark.float().mean())
    peaks = peaks[keep].cpu().numpy()
    values = fom[peaks[:, 0], peaks[:, 1]].cpu().numpy() if len(peaks) else np.zeros(0)
    kept = suppress_close(peaks.astype(float), values, min_dist) if len(peaks) else np.zeros(0, int)
    peaks, values = peaks[kept], values[kept]
    factor_y = micrograph.shape[0] / shape[0]
    factor_x = micrograph.shape[1] / shape[1]
    size = diameters[scale[peaks[:, 0], peaks[:, 1]].cpu()].numpy() if len(peaks) else np.zeros(0)
    return Picks(x_px=peaks[:, 1] * factor_x, y_px=peaks[:, 0] * factor_y,
                 figure_of_merit=values.astype(np.float64), diameter_angst=np.asarray(size, float)), free


def match_picks(picked_xy: np.ndarray, true_xy: np.ndarray, tolerance_px: float) -> tuple[float, float]:
    """Precision and recall of picks against true coordinates (one-to-one, greedy by distance).

    ``picked_xy`` ``(k, 2)``, ``true_xy`` ``(t, 2)``; a pick matches an unused truth within
    ``tolerance_px``.
    """
    if len(picked_xy) == 0 or len(true_xy) == 0:
        return (1.0 if len(picked_xy) == 0 else 0.0), (1.0 if len(true_xy) == 0 else 0.0)
    d = np.sqrt(((picked_xy[:, None, :] - true_xy[None, :, :]) ** 2).sum(-1))
    pairs = np.argwhere(d <= tolerance_px)
    pairs = pairs[np.argsort(d[pairs[:, 0], pairs[:, 1]])]
    used_p, used_t = set(), set()
    for p, t in pairs:
        if p not in used_p and t not in used_t:
            used_p.add(int(p))
            used_t.add(int(t))
    return len(used_p) / len(picked_xy), len(used_t) / len(true_xy)

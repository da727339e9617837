"""CTF estimation from a micrograph, in the spirit of CTFFIND4 (design notes: docs/preprocess.md).

Steps (each a function below or in :mod:`._ctf_search`):

1. :func:`measure_spectrum` — amplitude spectrum: root mean power of half-overlapping tiles
   (torch, on the job's device), then its rotational average on the CPU.
2. :func:`search_mean_defocus` — exhaustive 1D search of the mean defocus (and phase shift) on
   the rotational average. Each candidate's own one-period moving average is the background
   of both data and model (:func:`._ctf_search.ring_residual_1d`), so faint rings need no
   background model and the best of all candidates cannot be a local minimum. Against locking
   onto about twice the defocus (few, faint rings), the best candidate at 0.4-0.65 × it is
   refined in 2D too (:func:`_half_defocus_fit`); the better 2D correlation wins.
3. :func:`._ctf_search.refine_astigmatism_2d` — 2D refinement of (mean, astig_x, astig_y) on
   the spectrum relative to its ring-free radial background (:func:`build_band`), whitened per
   radius, the model weighted by √(ring envelope): a coarse grid, L-BFGS
   with the analytic gradient, then once more with the envelope of the astigmatic fit. The
   figure of merit is this weighted correlation (≈ 0 on pure noise).
4. :func:`fit_resolution` — the resolution to which the rings fit: equi-phase averages in
   windows of two CTF periods must correlate with the model *and* carry a ring amplitude 4
   standard errors above noise; no rings → the band's low end.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from vitrify.core.ctf import CtfParams
from vitrify.io.errors import InputError
from vitrify.preprocess import _ctf_search as cs
from vitrify.preprocess._ctf_model import from_uv_angle, rfft_frequency_grid, to_uv_angle


@dataclass(frozen=True)
class CtfSearch:
    """What to search, in RELION's CtfFind terms (job.star names in brackets)."""

    tile_px: int = 512                      # [box] FFT box
    resolution_min_angst: float = 30.0      # [resmin]
    resolution_max_angst: float = 5.0       # [resmax]
    defocus_min_angst: float = 5000.0       # [dfmin]
    defocus_max_angst: float = 50000.0      # [dfmax]
    defocus_step_angst: float = 500.0       # [dfstep]
    astigmatism_max_angst: float = 3000.0   # search range of |U - V|
    do_phase_shift: bool = False            # [do_phaseshift]
    phase_min_deg: float = 0.0              # [phase_min]
    phase_max_deg: float = 180.0            # [phase_max]
    phase_step_deg: float = 10.0            # [phase_step]
    fit_threshold: float = 0.3              # correlation defining rlnCtfMaxResolution

    def __post_init__(self) -> None:
        if self.tile_px < 32 or self.tile_px % 2:
            raise InputError(f"FFT box {self.tile_px} too small or odd", field="box",
                             expected="an even size >= 32")
        if not 0 < self.resolution_max_angst < self.resolution_min_angst:
            raise InputError("resolution range is empty", field="resmin/resmax",
                             expected="resmax < resmin, both > 0")
        if not 0 < self.defocus_min_angst < self.defocus_max_angst or self.defocus_step_angst <= 0:
            raise InputError("defocus range is empty", field="dfmin/dfmax/dfstep",
                             expected="0 < dfmin < dfmax and dfstep > 0")


@dataclass(frozen=True)
class CtfFit:
    """The estimated CTF of one micrograph (RELION's micrographs_ctf.star columns)."""

    defocus_u_angst: float
    defocus_v_angst: float
    defocus_angle_deg: float
    phase_shift_deg: float
    figure_of_merit: float
    max_resolution_angst: float

    @property
    def astigmatism_angst(self) -> float:
        """``|defocus_u - defocus_v|`` in Å."""
        return abs(self.defocus_u_angst - self.defocus_v_angst)


def tile_amplitude_spectrum(micrograph: torch.Tensor, tile_px: int) -> torch.Tensor:
    """Mean amplitude spectrum of half-overlapping tiles.

    Parameters
    ----------
    micrograph
        ``(ny, nx)`` real image, both sides ≥ ``tile_px``.

    Returns
    -------
    torch.Tensor
        ``(tile_px, tile_px//2+1)`` in torch's rfft2 layout (DC at index 0).
    """
    ny, nx = micrograph.shape
    if min(ny, nx) < tile_px:
        raise InputError(f"micrograph {nx}x{ny} is smaller than the FFT box {tile_px}",
                         field="box", expected=f"a box <= {min(ny, nx)}")
    image = micrograph.float()
    step = tile_px // 2
    total = torch.zeros(tile_px, tile_px // 2 + 1, dtype=image.dtype, device=image.device)
    count = 0
    rows = image.unfold(0, tile_px, step)  # (ty, nx, tile)
    for row in rows:  # chunk by tile rows to bound memory
        tiles = row.unfold(0, tile_px, step)  # (tx, tile_y, tile_x); a tile's mean only changes the DC term
        total += torch.view_as_real(torch.fft.rfft2(tiles)).square().sum(dim=(0, -1))
        count += tiles.shape[0]
    total[0, 0] = 0.0  # as if each tile's mean had been subtracted
    return (total / count).sqrt()


@dataclass(frozen=True)
class Spectrum:
    """A tile-averaged amplitude spectrum on the CPU with its radial bookkeeping.

    ``values``, ``radius`` (rounded, px), ``s2`` (Å⁻²), ``cos2``, ``sin2`` are ``(n, n//2+1)`` in
    rfft layout; ``profile`` (rotational average), ``counts`` (pixels) and ``s`` (Å⁻¹) are
    ``(n//2+1,)`` over the integer radii; ``px_per`` = radius px per Å⁻¹ (``n · pixel``).
    """

    values: np.ndarray
    radius: np.ndarray
    s2: np.ndarray
    cos2: np.ndarray
    sin2: np.ndarray
    profile: np.ndarray
    counts: np.ndarray
    s: np.ndarray
    px_per: float


@functools.lru_cache(maxsize=4)
def _frequency_grid(box_px: int, pixel_size_angst: float) -> tuple[np.ndarray, ...]:
    """``s2``, ``cos 2θ``, ``sin 2θ`` (float64) and the rounded radius (px) on the rfft grid (cached, read-only)."""
    s2, cos2, sin2 = (t.double().numpy() for t in rfft_frequency_grid(box_px, pixel_size_angst, dtype=torch.float64))
    radius = np.rint(np.sqrt(s2) * box_px * pixel_size_angst).astype(np.int64)
    for a in (s2, cos2, sin2, radius):
        a.flags.writeable = False
    return s2, cos2, sin2, radius


def measure_spectrum(micrograph: torch.Tensor, pixel_size_angst: float, tile_px: int) -> Spectrum:
    """The amplitude spectrum of ``micrograph (ny, nx)`` (:func:`tile_amplitude_spectrum`), on the CPU."""
    return spectrum_of(tile_amplitude_spectrum(micrograph, tile_px).double().cpu().numpy(), pixel_size_angst)


def spectrum_of(values: np.ndarray, pixel_size_angst: float) -> Spectrum:
    """The :class:`Spectrum` of amplitudes ``values`` ``(n, n//2+1)`` (rfft layout, DC at index 0)."""
    n = values.shape[0]
    s2, cos2, sin2, radius = _frequency_grid(n, pixel_size_angst)
    px_per = n * pixel_size_angst
    keep = radius <= n // 2
    counts = np.bincount(radius[keep], minlength=n // 2 + 1).astype(np.float64)
    profile = np.bincount(radius[keep], values[keep], minlength=n // 2 + 1) / np.maximum(counts, 1)
    return Spectrum(values, radius, s2, cos2, sin2, profile, counts, np.arange(n // 2 + 1) / px_per, px_per)


def _phase_grid(search: CtfSearch) -> list[float]:
    if not search.do_phase_shift:
        return [0.0]
    return list(np.arange(search.phase_min_deg, search.phase_max_deg + 1e-6, search.phase_step_deg))


def _band_limits(spectrum: Spectrum, search: CtfSearch, pixel_size_angst: float) -> tuple[float, float]:
    s_hi = min(1.0 / search.resolution_max_angst, 0.5 / pixel_size_angst, float(spectrum.s[-2]))
    s_lo = 1.0 / search.resolution_min_angst
    if (s_hi - s_lo) * spectrum.px_per < 12:
        raise InputError("too few spectrum samples in the resolution band",
                         field="resmin/resmax/box", expected="a larger FFT box or a wider band")
    return s_lo, s_hi


def search_mean_defocus(spectrum: Spectrum, optics: CtfParams, search: CtfSearch) -> tuple[float, float, float]:
    """Step 2: mean defocus (Å), phase shift (°) and 1D score, over every candidate (and phase)."""
    s_lo, s_hi = _band_limits(spectrum, search, optics.pixel_size_angst)
    band = (spectrum.s >= s_lo) & (spectrum.s <= s_hi)
    ranges = (search.defocus_min_angst, search.defocus_max_angst, search.defocus_step_angst)
    best = (0.0, 0.0, -np.inf)
    for phase in _phase_grid(search):
        mean, score = cs.search_defocus_1d(spectrum.profile, spectrum.counts, spectrum.s, band,
                                           cs.Optics.of(optics, phase), spectrum.px_per, ranges)
        if score > best[2]:
            best = (mean, phase, score)
    if search.do_phase_shift:  # the phase between grid steps, at the best defocus
        fine = best[1] + np.arange(-0.5, 0.51, 0.125) * search.phase_step_deg
        for phase in fine:
            mean, score = cs.search_defocus_1d(spectrum.profile, spectrum.counts, spectrum.s, band,
                                               cs.Optics.of(optics, phase), spectrum.px_per,
                                               (best[0] - search.defocus_step_angst,
                                                best[0] + search.defocus_step_angst, search.defocus_step_angst))
            if score > best[2]:
                best = (mean, float(phase), score)
    return best


def _relative_rings(spectrum: Spectrum, mean_angst: float, opt: cs.Optics, mask: np.ndarray) -> np.ndarray:
    """``(p,)`` spectrum over its ring-free radial background − 1 at the ``mask`` pixels.

    The background at radius r is the rotational average over two CTF² periods (of the mean
    defocus) around r: whole periods average the rings away whatever the astigmatism.
    """
    half = cs._half_window(opt, spectrum.s, np.array([mean_angst]), spectrum.px_per, 2.0)[0]
    background = cs.moving_average(spectrum.profile, half, spectrum.counts)
    return spectrum.values[mask] / np.maximum(background[spectrum.radius[mask]], 1e-30) - 1.0


def _per_radius(radius: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(radius, values, minlength=size)


def _ring_envelope(spectrum: Spectrum, band: cs.Band2d, rel: np.ndarray, params: np.ndarray, opt: cs.Optics,
                   ) -> np.ndarray:
    """``(p,)`` ring amplitude (fraction of the background) at each band sample, for the model ``params``.

    Least-squares amplitude of ``sin²γ − ½`` in the relative spectrum over windows of two periods
    around each radius, clipped to ≥ 1 % of its maximum (radii without rings still weigh a little).
    """
    size = len(spectrum.s)
    m = np.sin(opt.gamma(band.s2, params[0] + params[1] * band.cos2 + params[2] * band.sin2)) ** 2 - 0.5
    half = cs._half_window(opt, spectrum.s, np.array([params[0]]), spectrum.px_per, 2.0)[0]
    ones = np.ones(size)
    xm = cs.moving_average(_per_radius(band.radius, rel * m, size), half, ones)
    mm = cs.moving_average(_per_radius(band.radius, m * m, size), half, ones)
    envelope = np.clip(xm / np.maximum(mm, 1e-30), 0.0, None)
    top = float(envelope[np.unique(band.radius)].max())
    return np.maximum(envelope, 0.01 * top if top > 0 else 1.0)[band.radius]


def build_band(spectrum: Spectrum, mean_angst: float, opt: cs.Optics, s_lo: float, s_hi: float,
               ) -> tuple[cs.Band2d, np.ndarray, np.ndarray]:
    """The 2D band: relative rings whitened by the noise σ of each radius; weights set to 1/σ.

    Returns the band, the unwhitened relative rings and σ, both ``(p,)``.
    """
    mask = (spectrum.s2 >= s_lo ** 2) & (spectrum.s2 <= s_hi ** 2)
    radius = spectrum.radius[mask]
    rel = _relative_rings(spectrum, mean_angst, opt, mask)
    size = len(spectrum.s)
    count = np.maximum(np.bincount(radius, minlength=size), 1)
    mean = _per_radius(radius, rel, size) / count
    sigma = np.sqrt(np.maximum(_per_radius(radius, rel * rel, size) / count - mean ** 2, 1e-30))[radius]
    f32 = [a.astype(np.float32) for a in (spectrum.s2[mask], spectrum.cos2[mask], spectrum.sin2[mask],
                                          rel / sigma, 1.0 / sigma)]
    band = cs.Band2d(f32[0], f32[1], f32[2], radius, f32[3], f32[4])
    return band, rel, sigma


def _with_envelope(spectrum: Spectrum, band: cs.Band2d, rel: np.ndarray, sigma: np.ndarray, params: np.ndarray,
                   opt: cs.Optics) -> cs.Band2d:
    """The band with model weights √(ring envelope) / σ (between whitening and a matched filter)."""
    # √envelope: the full matched filter (envelope / σ) let the strong, wide low-resolution rings pull the
    # mean defocus by ~130 Å on 4096² micrographs (noisy envelope); 1/σ alone fits worse on weak rings
    weight = np.sqrt(_ring_envelope(spectrum, band, rel, params, opt)) / sigma
    return replace(band, w=weight.astype(np.float32))


def _equiphase_average(values: np.ndarray, gamma: np.ndarray, s: np.ndarray, bins_per_pi: int,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per bin of ``|γ|`` (π/bins_per_pi wide): mean of ``values``, its variance (squared standard
    error), mean of ``sin² γ`` and the largest ``s``.

    Averaging samples of equal CTF phase (CTFFIND4's equi-phase average) follows an astigmatic
    ring pattern exactly and averages the noise of a whole ring. Returns the non-empty bins
    (≥ 5 samples), in order of increasing phase.
    """
    index = np.floor(np.abs(gamma) / (math.pi / bins_per_pi)).astype(np.int64)
    index -= index.min()
    count = np.maximum(np.bincount(index), 1)
    mean = np.bincount(index, values) / count
    variance = np.maximum(np.bincount(index, values * values) / count - mean ** 2, 0.0) / count
    model = np.bincount(index, np.sin(gamma) ** 2) / count
    top = np.zeros(len(count))
    np.maximum.at(top, index, s)
    keep = np.bincount(index) >= 5
    return mean[keep], variance[keep], model[keep], top[keep]


def _window_passes(data: np.ndarray, variance: np.ndarray, model: np.ndarray, threshold: float,
                   z_min: float) -> bool:
    """Rings in one window: correlation with the model ≥ ``threshold`` and a ring amplitude
    ``z_min`` standard errors above 0 (pure noise passes the correlation alone too often)."""
    a, b = data - data.mean(), model - model.mean()
    bb = float(b @ b)
    corr = float(a @ b) / max(math.sqrt(float(a @ a) * bb), 1e-30)
    amplitude = float(a @ b) / max(bb, 1e-30)
    error = math.sqrt(float((b * b) @ variance)) / max(bb, 1e-30)
    return corr >= threshold and amplitude >= z_min * error


def fit_resolution(spectrum: Spectrum, params: np.ndarray, optics: CtfParams, search: CtfSearch,
                   phase_shift_deg: float = 0.0, bins_per_pi: int = 8, z_min: float = 4.0) -> float:
    """Step 4: the resolution (Å) to which the Thon rings of the model ``params`` fit.

    From the fitting band's low end to Nyquist, the relative spectrum is averaged over equal
    fitted CTF phase and compared with the model's average in windows of two CTF² periods
    (:func:`_window_passes`). The run of passing windows must begin within the first three
    windows and ends at two failing windows in a row; the answer is the highest frequency of
    its last passing window. No run: the band's low end (no rings found).
    """
    opt = cs.Optics.of(optics, phase_shift_deg)
    s_lo = 1.0 / max(search.resolution_min_angst, 2.5 * optics.pixel_size_angst)
    s_hi = min(0.5 / optics.pixel_size_angst, float(spectrum.s[-2]))
    mask = (spectrum.s2 >= s_lo ** 2) & (spectrum.s2 <= s_hi ** 2)
    rel = _relative_rings(spectrum, params[0], opt, mask)
    gamma = opt.gamma(spectrum.s2[mask], params[0] + params[1] * spectrum.cos2[mask]
                      + params[2] * spectrum.sin2[mask])
    data, variance, model, top = _equiphase_average(rel, gamma, np.sqrt(spectrum.s2[mask]), bins_per_pi)
    width = 2 * bins_per_pi
    best_s, fails, passed = s_lo, 0, False
    for k, start in enumerate(range(0, len(data) - width // 2, width)):
        window = slice(start, start + width)
        if _window_passes(data[window], variance[window], model[window], search.fit_threshold, z_min) \
                and (passed or k < 3):
            best_s, fails, passed = float(top[window].max()), 0, True
        elif passed:
            fails += 1
            if fails == 2:
                break
    return 1.0 / best_s


def check_micrograph(micrograph: torch.Tensor) -> None:
    """Raise :class:`InputError` for an empty, constant or non-finite micrograph."""
    if not torch.isfinite(micrograph).all() or float(micrograph.std()) == 0.0:
        raise InputError("micrograph is empty, constant or not finite", field="pixel values",
                         expected="an image with signal")


#: the fit is compared with one started from the best 1D candidate at these fractions of its mean
#: defocus: with few, faint rings (low defocus, weak signal) the 1D search can lock onto about twice
#: the true defocus, whose rings include every true zero (grid benchmark, 120 micrographs of 1024²:
#: 5 fits off by 5,000-9,400 Å came back to within 130-1,050 Å; no other fit changed)
HALF_DEFOCUS_RANGE = (0.4, 0.65)


def _refine_2d(spectrum: Spectrum, mean_angst: float, opt: cs.Optics, search: CtfSearch, s_lo: float,
               s_hi: float) -> tuple[np.ndarray, float]:
    """Step 3 from the 1D mean defocus: ``(3,)`` (mean, astig_x, astig_y) in Å and the 2D correlation."""
    band, rel, sigma = build_band(spectrum, mean_angst, opt, s_lo, s_hi)
    band = _with_envelope(spectrum, band, rel, sigma, np.array([mean_angst, 0.0, 0.0]), opt)
    params, _ = cs.refine_astigmatism_2d(band, mean_angst, opt, search.astigmatism_max_angst,
                                         search.defocus_step_angst)
    # the ring envelope of the astigmatic fit (the rotational average blurs astigmatic rings), refit
    band = _with_envelope(spectrum, band, rel, sigma, params, opt)
    return cs.polish(band, params, opt, search.astigmatism_max_angst, search.defocus_step_angst, max_iterations=15)


def _half_defocus_fit(spectrum: Spectrum, mean_angst: float, opt: cs.Optics, search: CtfSearch, s_lo: float,
                      s_hi: float) -> tuple[np.ndarray, float] | None:
    """The 2D fit from the best 1D candidate in :data:`HALF_DEFOCUS_RANGE` × ``mean_angst`` (within the
    search range), or None when that range is outside it."""
    lo = max(HALF_DEFOCUS_RANGE[0] * mean_angst, search.defocus_min_angst)
    hi = HALF_DEFOCUS_RANGE[1] * mean_angst
    if hi - lo < search.defocus_step_angst:
        return None
    band = (spectrum.s >= s_lo) & (spectrum.s <= s_hi)
    half_mean, _ = cs.search_defocus_1d(spectrum.profile, spectrum.counts, spectrum.s, band, opt, spectrum.px_per,
                                        (lo, hi, search.defocus_step_angst))
    return _refine_2d(spectrum, half_mean, opt, search, s_lo, s_hi)


def fit_spectrum(spectrum: Spectrum, optics: CtfParams, search: CtfSearch = CtfSearch()) -> CtfFit:
    """Steps 2-4 on a measured spectrum: defocus U/V/angle, (phase shift), figure of merit, fit resolution."""
    mean, phase, _ = search_mean_defocus(spectrum, optics, search)
    opt = cs.Optics.of(optics, phase)
    s_lo, s_hi = _band_limits(spectrum, search, optics.pixel_size_angst)
    params, score = _refine_2d(spectrum, mean, opt, search, s_lo, s_hi)
    alternative = _half_defocus_fit(spectrum, mean, opt, search, s_lo, s_hi)
    if alternative is not None and alternative[1] > score:
        params, score = alternative
    resolution = fit_resolution(spectrum, params, optics, search, phase)
    u, v, angle = to_uv_angle(float(params[0]), float(params[1]), float(params[2]))
    return CtfFit(u, v, angle % 180.0, phase, score, resolution)


def estimate_ctf(micrograph: torch.Tensor, optics: CtfParams, search: CtfSearch = CtfSearch()) -> CtfFit:
    """Estimate defocus, astigmatism, (phase shift), figure of merit and fit resolution.

    Parameters
    ----------
    micrograph
        ``(ny, nx)`` non-dose-weighted micrograph (any device).
    """
    check_micrograph(micrograph)
    return fit_spectrum(measure_spectrum(micrograph, optics.pixel_size_angst, search.tile_px), optics, search)


def _full_centred(half: np.ndarray) -> np.ndarray:
    """``(n, n//2+1)`` rfft-layout Hermitian-symmetric real values → ``(n, n)`` with DC at n//2."""
    n = half.shape[0]
    mirrored = half[(-np.arange(n)) % n][:, 1:n - n // 2][:, ::-1]  # columns n//2+1 … n-1 from n-j
    return np.fft.fftshift(np.concatenate([half, mirrored], axis=1))


def diagnostic_image(spectrum: Spectrum, fit: CtfFit, optics: CtfParams) -> np.ndarray:
    """A ``(n, n)`` float32 picture in [0, 1]: measured spectrum over its rotational average left, fitted
    CTF² right (DC centred)."""
    n = spectrum.values.shape[0]
    # the spectrum over its rotational average: rings visible from the centre to the edge
    flat = spectrum.values / np.maximum(spectrum.profile[np.minimum(spectrum.radius, n // 2)], 1e-30)
    from scipy.ndimage import uniform_filter

    measured = uniform_filter(_full_centred(flat), 3)  # 3 × 3 mean: faint rings show through the noise
    mean, ax, ay = from_uv_angle(fit.defocus_u_angst, fit.defocus_v_angst, fit.defocus_angle_deg)
    opt = cs.Optics.of(optics, fit.phase_shift_deg)
    model = _full_centred(np.sin(opt.gamma(spectrum.s2, mean + ax * spectrum.cos2 + ay * spectrum.sin2)) ** 2)
    lo, hi = np.percentile(measured[::3, ::3], [2.0, 98.0])
    picture = np.clip((measured - lo) / max(hi - lo, 1e-20), 0.0, 1.0)
    picture[:, n // 2:] = model[:, n // 2:]
    return picture.astype(np.float32)


def fit_diagnostic_image(micrograph: torch.Tensor, fit: CtfFit, optics: CtfParams,
                         search: CtfSearch = CtfSearch()) -> np.ndarray:
    """:func:`diagnostic_image` of ``micrograph (ny, nx)``'s spectrum."""
    return diagnostic_image(measure_spectrum(micrograph, optics.pixel_size_angst, search.tile_px), fit, optics)

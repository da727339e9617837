"""CTF estimation from a micrograph, in the spirit of CTFFIND4.

Steps (each a function below):

1. :func:`tile_amplitude_spectrum` — average amplitude spectrum of overlapping tiles.
2. :func:`fit_radial_profile` — on the rotational average, a 1D search over the mean
   defocus where, for each candidate, the profile is modelled *linearly* as
   ``background(s) + envelope(s)·CTF²(s)`` (both smooth Chebyshev series), solved by
   least squares. The best candidate gives the defocus, the trend and the ring envelope ``E``.
3. :func:`search_astigmatism` — on the 2D spectrum minus a ring-free background (the
   rotational average over two CTF periods, :func:`_normalised_band`), whitened by the noise
   σ of each radius with the model weighted by ``E/σ`` (:func:`_weighted`, a matched
   filter), a grid over mean defocus × astigmatism × angle (× phase shift) scored by the
   correlation with CTF² in the resolution band, then a Nelder-Mead refinement;
   :func:`keep_significant_astigmatism` falls back to a stigmatic fit when the
   astigmatism does not improve the correlation significantly (weak Thon rings).
4. :func:`fit_resolution` — the resolution to which the Thon rings fit: the spectrum is
   averaged over equal CTF phase (as CTFFIND4 does), then correlated with CTF² in windows of
   two CTF periods; the first window below a threshold ends the fit.

Everything is torch, batched over candidates; CPU and CUDA follow the input device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from vitrify.core.ctf import CtfParams, electron_wavelength_angst
from vitrify.io.errors import InputError
from vitrify.preprocess._ctf_model import ctf_phase, from_uv_angle, rfft_frequency_grid, to_uv_angle


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


@dataclass(frozen=True)
class _Band:
    """Samples of the rfft grid inside the fitting band (all ``(p,)``)."""

    index: torch.Tensor
    s2: torch.Tensor
    cos2: torch.Tensor
    sin2: torch.Tensor
    weight: torch.Tensor | None = None  # expected ring amplitude / noise sigma (see _weighted)


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
        tiles = row.unfold(0, tile_px, step)  # (tx, tile_y, tile_x)
        tiles = tiles - tiles.mean(dim=(-2, -1), keepdim=True)
        total += torch.fft.rfft2(tiles).abs().pow(2).sum(0)
        count += tiles.shape[0]
    return (total / count).sqrt()


def _band(spectrum_shape: tuple[int, int], optics: CtfParams, search: CtfSearch,
          device: torch.device) -> _Band:
    box = spectrum_shape[0]
    s2, cos2, sin2 = rfft_frequency_grid(box, optics.pixel_size_angst, device=device)
    s_max = min(1.0 / search.resolution_max_angst, 0.5 / optics.pixel_size_angst)
    inside = (s2 >= search.resolution_min_angst ** -2) & (s2 <= s_max ** 2)
    index = inside.flatten().nonzero().squeeze(1)
    return _Band(index, s2.flatten()[index], cos2.flatten()[index], sin2.flatten()[index])


def _chebyshev(x: torch.Tensor, degree: int) -> torch.Tensor:
    """``(p, degree+1)`` Chebyshev polynomials of ``x`` in [-1, 1]."""
    cols = [torch.ones_like(x), x]
    for _ in range(degree - 1):
        cols.append(2 * x * cols[-1] - cols[-2])
    return torch.stack(cols[: degree + 1], dim=1)


def radial_profile(spectrum: torch.Tensor, pixel_size_angst: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotational average of an rfft-layout spectrum ``(n, n//2+1)``.

    Returns ``(s_per_angst (n//2,), profile (n//2,))`` on integer radii 0..n/2-1.
    """
    n = spectrum.shape[0]
    s2, _, _ = rfft_frequency_grid(n, 1.0, device=spectrum.device)
    radius = torch.round(s2.sqrt() * n).long().flatten()
    keep = radius < n // 2
    sums = torch.zeros(n // 2, dtype=spectrum.dtype, device=spectrum.device)
    counts = torch.zeros_like(sums)
    sums.index_add_(0, radius[keep], spectrum.flatten()[keep])
    counts.index_add_(0, radius[keep], torch.ones_like(spectrum.flatten()[keep]))
    s = torch.arange(n // 2, dtype=spectrum.dtype, device=spectrum.device) / (n * pixel_size_angst)
    return s, sums / counts.clamp(min=1)


def _detrend_log(s: torch.Tensor, values: torch.Tensor, degree: int = 3) -> torch.Tensor:
    """Coefficients of a low-order polynomial fit of ``log(values)`` against ``s``."""
    design = torch.stack([s ** k for k in range(degree + 1)], dim=1).double()
    target = values.clamp(min=1e-20).log().double().unsqueeze(1)
    return torch.linalg.lstsq(design, target).solution.squeeze(1)


def _trend(s: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    powers = torch.stack([s.double() ** k for k in range(coeffs.numel())], dim=1)
    return (powers @ coeffs).exp().to(s.dtype)


def _profile_design(s: torch.Tensor, profile: torch.Tensor, search: CtfSearch, s_max: float, degrees: tuple[int, int],
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Band frequencies ``sb``, trend-normalised profile, log-trend and the Chebyshev bases (background, envelope)."""
    keep = (s >= 1.0 / search.resolution_min_angst) & (s <= s_max)
    if int(keep.sum()) < sum(degrees) + 4:
        raise InputError("too few spectrum samples in the resolution band",
                         field="resmin/resmax/box", expected="a larger FFT box or a wider band")
    sb, pb = s[keep].double(), profile[keep].double()
    trend = _detrend_log(sb, pb)
    pb = pb / _trend(sb, trend).double()
    x = 2 * (sb - sb[0]) / (sb[-1] - sb[0]) - 1
    return sb, pb, trend, _chebyshev(x, degrees[0]), _chebyshev(x, degrees[1])


def fit_radial_profile(s: torch.Tensor, profile: torch.Tensor, optics: CtfParams, search: CtfSearch,
                       degree_background: int = 6, degree_envelope: int = 3,
                       ) -> tuple[float, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """1D search of the mean defocus on a rotational average.

    For each candidate defocus ``d`` the normalised profile ``p(s)`` is fitted as
    ``B(s) + E(s)·CTF²(s; d)`` with Chebyshev series ``B``, ``E`` (linear least
    squares); the candidate with the smallest residual wins.

    Parameters
    ----------
    s, profile
        ``(r,)`` frequencies (Å⁻¹) and the profile there.

    Returns
    -------
    (float, torch.Tensor, (torch.Tensor, torch.Tensor))
        Best mean defocus (Å), the log-trend coefficients used to normalise, and the ring
        envelope ``E ≥ 0`` of the best candidate as ``(s (b,), E (b,))`` over the band.
    """
    s_max = min(1.0 / search.resolution_max_angst, 0.5 / optics.pixel_size_angst)
    sb, pb, trend, basis_b, basis_e = _profile_design(s, profile, search, s_max,
                                                      (degree_background, degree_envelope))
    defoci = torch.arange(search.defocus_min_angst, search.defocus_max_angst + 0.5 * search.defocus_step_angst,
                          search.defocus_step_angst / 4, dtype=torch.float64, device=s.device)
    best = (math.inf, float(defoci[0]), None)
    for phase in _phase_grid(search):
        gamma = ctf_phase(sb * sb, torch.ones_like(sb), torch.zeros_like(sb), defoci, 0.0, 0.0, optics,
                          phase_shift_deg=phase)
        ctf2 = torch.sin(gamma) ** 2  # (d, r)
        design = torch.cat([basis_b.expand(len(defoci), -1, -1),
                            basis_e.unsqueeze(0) * ctf2.unsqueeze(2)], dim=2)
        target = pb.expand(len(defoci), -1).unsqueeze(2)
        solution = torch.linalg.lstsq(design, target).solution
        residual = ((design @ solution - target) ** 2).sum(dim=(1, 2))
        k = int(torch.argmin(residual))
        if float(residual[k]) < best[0]:
            envelope = (basis_e @ solution[k, degree_background + 1:, 0]).clamp(min=0)
            best = (float(residual[k]), float(defoci[k]), envelope)
    return best[1], trend, (sb, best[2])


def _phase_grid(search: CtfSearch) -> list[float]:
    if not search.do_phase_shift:
        return [0.0]
    return list(np.arange(search.phase_min_deg, search.phase_max_deg + 1e-6, search.phase_step_deg))


def _ring_half_window_px(radius_px: torch.Tensor, n: int, optics: CtfParams, mean_defocus_angst: float,
                         ) -> torch.Tensor:
    """Half-width (px) of a window of two CTF² periods at each radius of an ``n`` box, capped at r/2.

    ``|dγ/ds| = 2π|λ·Δf·s − Cs·λ³·s³|``; one period of ``sin²γ`` spans ``π / |dγ/ds|``.
    """
    s = (radius_px / (n * optics.pixel_size_angst)).clamp(min=1e-6)
    lam = electron_wavelength_angst(optics.voltage_kv)
    slope = (lam * mean_defocus_angst * s - optics.cs_mm * 1e7 * lam ** 3 * s ** 3).abs()
    half = n * optics.pixel_size_angst / (2 * slope.clamp(min=1e-12))
    return half.clamp(min=1.5).minimum(0.5 * radius_px + 1.5)


def _normalised_band(spectrum: torch.Tensor, band: _Band, trend: torch.Tensor, optics: CtfParams,
                     mean_defocus_angst: float) -> torch.Tensor:
    """Band samples of the spectrum divided by the trend, minus the local ring-free background.

    The background at radius ``r`` is the rotational average of the normalised spectrum over
    a window of two CTF² periods around ``r`` (periods from the 1D mean defocus): ``sin²``
    averages to ½ over whole periods whatever its phase, so the rings leave the background
    and stay in the data (a fixed narrow window keeps the wide low-resolution rings in the
    background and subtracts them). Returns ``(p,)`` zero-mean Thon rings plus noise.
    """
    n = spectrum.shape[0]
    pix = optics.pixel_size_angst
    s2, _, _ = rfft_frequency_grid(n, pix, device=spectrum.device)
    s = s2.flatten().double().sqrt()
    values = spectrum.flatten().double() / _trend(s.clamp(min=0.5 * float(band.s2.min().sqrt())), trend).double()
    radius = torch.round(s * n * pix).long()
    keep = radius <= n // 2
    sums = torch.zeros(n // 2 + 1, dtype=values.dtype, device=values.device).index_add_(0, radius[keep], values[keep])
    counts = torch.zeros_like(sums).index_add_(0, radius[keep], torch.ones_like(values[keep]))
    zero = torch.zeros(1, dtype=values.dtype, device=values.device)
    sums, counts = torch.cat([zero, sums.cumsum(0)]), torch.cat([zero, counts.cumsum(0)])
    r = torch.arange(n // 2 + 1, dtype=values.dtype, device=values.device)
    half = _ring_half_window_px(r, n, optics, mean_defocus_angst)
    lo = (r - half).round().long().clamp(0, n // 2)
    hi = (r + half).round().long().clamp(0, n // 2)
    background = (sums[hi + 1] - sums[lo]) / (counts[hi + 1] - counts[lo]).clamp(min=1)
    return (values[band.index] - background[radius[band.index]]).float()


def _weighted(normalised: torch.Tensor, band: _Band, envelope: tuple[torch.Tensor, torch.Tensor],
              pixel_size_angst: float, n: int) -> tuple[torch.Tensor, _Band]:
    """Whitened band and per-sample model weights (matched filter).

    Each sample is divided by the noise σ of its radius (spread of the normalised spectrum
    around the ring), and the model ``sin²γ`` is scaled by ``E(s)/σ`` with the 1D fit's
    ring envelope ``E``: radii without rings (high resolution, noise only) weigh little.
    Returns the whitened ``(p,)`` band and the band with ``weight`` set.
    """
    radius = torch.round(band.s2.double().sqrt() * n * pixel_size_angst).long()
    values = normalised.double()
    count = torch.zeros(n // 2 + 1, dtype=values.dtype, device=values.device).index_add_(
        0, radius, torch.ones_like(values)).clamp(min=1)
    mean = torch.zeros_like(count).index_add_(0, radius, values) / count
    var = torch.zeros_like(count).index_add_(0, radius, values ** 2) / count - mean ** 2
    sigma = var.clamp(min=1e-20).sqrt()[radius]
    s_env, env = envelope
    ring = torch.zeros_like(count)
    if env is not None and float(env.max()) > 0:
        ring[torch.round(s_env * n * pixel_size_angst).long()] = env.clamp(min=0.05 * float(env.max()))
    else:
        ring += 1.0
    weight = ring[radius] / sigma
    return (values / sigma).to(normalised.dtype), replace(band, weight=weight.to(normalised.dtype))


def _scores(normalised: torch.Tensor, band: _Band, models: torch.Tensor, optics: CtfParams,
            chunk: int = 256) -> torch.Tensor:
    """Pearson correlation of the band with CTF² for each model.

    ``models`` is ``(m, 4)``: mean defocus, astig_x, astig_y (Å), phase shift (°). With
    ``band.weight`` the model is ``(sin²γ − ½)·weight`` (``normalised`` then whitened, see
    :func:`_weighted`). Returns ``(m,)``.
    """
    target = normalised - normalised.mean()
    target = target / target.norm().clamp(min=1e-20)
    out = []
    for block in models.split(chunk):
        gamma = ctf_phase(band.s2, band.cos2, band.sin2, block[:, 0], block[:, 1], block[:, 2], optics,
                          phase_shift_deg=block[:, 3])
        ctf2 = torch.sin(gamma) ** 2
        if band.weight is not None:
            ctf2 = (ctf2 - 0.5) * band.weight
        ctf2 = ctf2 - ctf2.mean(dim=1, keepdim=True)
        out.append((ctf2 @ target) / ctf2.norm(dim=1).clamp(min=1e-20))
    return torch.cat(out)


def search_astigmatism(normalised: torch.Tensor, band: _Band, mean_angst: float, optics: CtfParams,
                       search: CtfSearch) -> tuple[np.ndarray, float]:
    """Grid search then Nelder-Mead of (mean, astig_x, astig_y, phase) around ``mean_angst``.

    Returns the best ``(4,)`` parameters and their correlation score.
    """
    from scipy.optimize import minimize

    step = search.defocus_step_angst
    means = mean_angst + step * torch.arange(-2.0, 2.01, 0.5, dtype=torch.float32)
    halves = torch.linspace(0, search.astigmatism_max_angst / 2, 7)
    angles = torch.deg2rad(torch.arange(0.0, 180.0, 15.0))
    phases = torch.tensor(_phase_grid(search), dtype=torch.float32)
    grid = torch.cartesian_prod(means, halves, angles, phases)
    models = torch.stack([grid[:, 0], grid[:, 1] * torch.cos(2 * grid[:, 2]),
                          grid[:, 1] * torch.sin(2 * grid[:, 2]), grid[:, 3]], dim=1)
    models = models.to(normalised.device, normalised.dtype)
    scores = _scores(normalised, band, models, optics)
    start = models[int(torch.argmax(scores))].double().cpu().numpy()
    free = 4 if search.do_phase_shift else 3

    def cost(params: np.ndarray) -> float:
        full = np.concatenate([params, start[free:]])
        model = torch.as_tensor(full, dtype=normalised.dtype, device=normalised.device).unsqueeze(0)
        return -float(_scores(normalised, band, model, optics)[0])

    scale = np.array([step / 2, step / 2, step / 2, search.phase_step_deg])[:free]
    simplex = np.vstack([start[:free]] + [start[:free] + np.diag(scale)[i] for i in range(free)])
    result = minimize(cost, start[:free], method="Nelder-Mead",
                      options={"initial_simplex": simplex, "xatol": 1.0, "fatol": 1e-6, "maxiter": 400})
    best = np.concatenate([result.x, start[free:]])
    return best, -float(result.fun)


def keep_significant_astigmatism(normalised: torch.Tensor, band: _Band, params: np.ndarray, score: float,
                                 optics: CtfParams, search: CtfSearch, chi2_threshold: float = 13.8,
                                 ) -> tuple[np.ndarray, float]:
    """The astigmatic fit if it beats the best stigmatic one significantly, else the stigmatic fit.

    With weak Thon rings the two astigmatism parameters fit noise. The gain in correlation
    over ``N`` independent spectrum samples is tested as ``N (r_a² - r_0²) / (1 - r_a²)``
    against χ² with 2 degrees of freedom (13.8: p = 0.001).
    """
    from scipy.optimize import minimize_scalar

    fixed = params.copy()
    fixed[1:3] = 0.0

    def cost(mean: float) -> float:
        model = torch.as_tensor(np.array([mean, 0.0, 0.0, fixed[3]]), dtype=normalised.dtype,
                                device=normalised.device).unsqueeze(0)
        return -float(_scores(normalised, band, model, optics)[0])

    step = search.defocus_step_angst
    result = minimize_scalar(cost, bounds=(params[0] - step, params[0] + step), method="bounded",
                             options={"xatol": 1.0})
    r0 = -float(result.fun)
    statistic = normalised.numel() * (score ** 2 - r0 ** 2) / max(1.0 - score ** 2, 1e-6)
    if score > r0 and statistic > chi2_threshold:
        return params, score
    fixed[0] = float(result.x)
    return fixed, r0


def _equiphase_average(values: torch.Tensor, phase: torch.Tensor, s: torch.Tensor, bins_per_pi: int,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean of ``values``, of ``sin² phase`` and the largest ``s`` in bins of ``|phase|`` (π/bins_per_pi wide).

    Averaging the samples of equal CTF phase (CTFFIND4's equi-phase average) follows an
    astigmatic ring pattern exactly and averages the noise of a whole ring. Returns ``(b,)``
    arrays of the non-empty bins (≥ 5 samples), in order of increasing phase.
    """
    index = torch.floor(phase.abs() / (math.pi / bins_per_pi)).long()
    index = index - index.min()
    n_bins = int(index.max()) + 1
    count = torch.zeros(n_bins, dtype=values.dtype, device=values.device).index_add_(0, index, torch.ones_like(values))
    mean = torch.zeros_like(count).index_add_(0, index, values) / count.clamp(min=1)
    model = torch.zeros_like(count).index_add_(0, index, torch.sin(phase) ** 2) / count.clamp(min=1)
    top = torch.zeros_like(count).scatter_reduce_(0, index, s.to(values.dtype), reduce="amax")
    keep = count >= 5
    return mean[keep], model[keep], top[keep]


def fit_resolution(normalised: torch.Tensor, band: _Band, params: np.ndarray, optics: CtfParams,
                   threshold: float, bins_per_pi: int = 8) -> float:
    """Resolution (Å) to which the Thon rings fit.

    The band is averaged over equal fitted CTF phase (:func:`_equiphase_average`); the
    correlation between that profile and CTF² is computed in windows of two CTF² periods,
    from low to high frequency; the answer is the resolution of the last window before the
    first one that falls below ``threshold`` (failing windows at the low-frequency end,
    where particles and ice dominate the spectrum, are passed over).
    """
    model = torch.as_tensor(params, dtype=normalised.dtype, device=normalised.device)
    gamma = ctf_phase(band.s2, band.cos2, band.sin2, model[0], model[1], model[2], optics,
                      phase_shift_deg=model[3])[0]
    data, ctf2, top = _equiphase_average(normalised, gamma, band.s2.sqrt(), bins_per_pi)
    best_s = float(band.s2.min().sqrt())
    passed = False
    width = 2 * bins_per_pi
    for start in range(0, len(data) - width // 2, width):
        a, b = data[start:start + width], ctf2[start:start + width]
        if len(a) < bins_per_pi:
            continue
        a, b = a - a.mean(), b - b.mean()
        corr = float((a @ b) / (a.norm() * b.norm()).clamp(min=1e-20))
        if corr >= threshold:
            best_s = float(top[start:start + width].max())
            passed = True
        elif passed:
            break
    return 1.0 / best_s


def estimate_ctf(micrograph: torch.Tensor, optics: CtfParams, search: CtfSearch = CtfSearch()) -> CtfFit:
    """Estimate defocus, astigmatism, (phase shift), fit score and fit resolution.

    Parameters
    ----------
    micrograph
        ``(ny, nx)`` non-dose-weighted micrograph (any device).
    """
    if not torch.isfinite(micrograph).all() or float(micrograph.std()) == 0.0:
        raise InputError("micrograph is empty, constant or not finite", field="pixel values",
                         expected="an image with signal")
    spectrum = tile_amplitude_spectrum(micrograph, search.tile_px)
    s, profile = radial_profile(spectrum, optics.pixel_size_angst)
    mean_angst, trend, envelope = fit_radial_profile(s, profile, optics, search)
    band = _band(tuple(spectrum.shape), optics, search, spectrum.device)
    normalised = _normalised_band(spectrum, band, trend, optics, mean_angst)
    whitened, weighted = _weighted(normalised, band, envelope, optics.pixel_size_angst, spectrum.shape[0])
    params, score = search_astigmatism(whitened, weighted, mean_angst, optics, search)
    params, score = keep_significant_astigmatism(whitened, weighted, params, score, optics, search)
    # like CTFFIND4, the fit resolution is looked for up to Nyquist, not only inside the fitting band
    nyquist = replace(search, resolution_max_angst=2.0 * optics.pixel_size_angst,
                      resolution_min_angst=max(search.resolution_min_angst, 2.5 * optics.pixel_size_angst))
    full = _band(tuple(spectrum.shape), optics, nyquist, spectrum.device)
    resolution = fit_resolution(_normalised_band(spectrum, full, trend, optics, mean_angst), full, params, optics,
                                search.fit_threshold)
    u, v, angle = to_uv_angle(float(params[0]), float(params[1]), float(params[2]))
    return CtfFit(u, v, angle % 180.0, float(params[3]), score, resolution)


def _full_centred(half: torch.Tensor) -> torch.Tensor:
    """``(n, n//2+1)`` rfft-layout Hermitian-symmetric real values → ``(n, n)`` with DC at n//2."""
    n = half.shape[0]
    rows = torch.arange(n, device=half.device).view(-1, 1)
    cols = torch.arange(n, device=half.device).view(1, -1)
    mirrored = cols > n // 2
    src_rows = torch.where(mirrored, (-rows) % n, rows)
    src_cols = torch.where(mirrored, n - cols, cols)
    return torch.fft.fftshift(half[src_rows, src_cols], dim=(0, 1))


def fit_diagnostic_image(micrograph: torch.Tensor, fit: CtfFit, optics: CtfParams,
                         search: CtfSearch = CtfSearch()) -> np.ndarray:
    """A ``(n, n)`` picture in [0, 1]: measured log spectrum left, fitted CTF² right (DC centred)."""
    spectrum = tile_amplitude_spectrum(micrograph, search.tile_px)
    n = spectrum.shape[0]
    measured = _full_centred(spectrum.clamp(min=1e-20).log())
    s2, cos2, sin2 = rfft_frequency_grid(n, optics.pixel_size_angst, device=spectrum.device)
    mean, ax, ay = from_uv_angle(fit.defocus_u_angst, fit.defocus_v_angst, fit.defocus_angle_deg)
    gamma = ctf_phase(s2.flatten(), cos2.flatten(), sin2.flatten(), mean, ax, ay, optics,
                      phase_shift_deg=fit.phase_shift_deg)[0].reshape(s2.shape)
    model = _full_centred(torch.sin(gamma) ** 2)
    lo, hi = torch.quantile(measured.flatten().float().cpu(), torch.tensor([0.05, 0.995]))
    picture = ((measured.float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    picture[:, n // 2:] = model.float().cpu()[:, n // 2:]
    return picture.numpy()

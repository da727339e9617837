"""Cramér-Rao bound of CTF fits on simulated micrographs: how well *any* unbiased fit could do.

For a micrograph with a noise-free twin (the simulator's expected counts), the Thon-ring power
``S(k)`` comes from the twin's spectrum and the noise from the noisy one; the fit's data are the
noisy amplitude spectrum over its ring-free background, ``rel(k) ≈ S(k) (sin²γ(k) − ½) / (2 P̄(r))``
with independent noise of standard deviation σ(r) per pixel (tile-averaged periodograms). The Fisher
information of (mean defocus, astig_x, astig_y) is ``Σ_k ∂rel/∂θ ∂rel/∂θᵀ / σ²``; its inverse bounds
the covariance of any unbiased estimate. Returned as the median |error| a Gaussian estimate at the
bound would have (0.674 σ) for the mean defocus and for |U − V| (the astigmatism along its own
direction). Used by ``preprocess_grid.py --bound``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vitrify.core.ctf import CtfParams
from vitrify.preprocess import _ctf_search as cs
from vitrify.preprocess import ctf_fit as cf
from vitrify.preprocess._ctf_model import from_uv_angle

#: median |x| of a zero-mean Gaussian in units of its standard deviation
HALF_NORMAL_MEDIAN = 0.6745


def _radial_mean(spectrum: cf.Spectrum, values: np.ndarray) -> np.ndarray:
    n = spectrum.values.shape[0]
    keep = spectrum.radius <= n // 2
    return np.bincount(spectrum.radius[keep], values[keep], minlength=n // 2 + 1) / np.maximum(spectrum.counts, 1)


def bound_median_errors(noisy: cf.Spectrum, clean: cf.Spectrum, optics: CtfParams, u_angst: float, v_angst: float,
                        angle_deg: float, search: cf.CtfSearch = cf.CtfSearch()) -> tuple[float, float]:
    """(mean defocus, astigmatism) median |error| in Å of an unbiased fit at the Cramér-Rao bound.

    ``noisy`` and ``clean`` are the spectra (:func:`vitrify.preprocess.ctf_fit.measure_spectrum`) of a
    micrograph and of its noise-free twin; the band is the fit's (``search``).
    """
    opt = cs.Optics.of(optics, 0.0)
    s_lo, s_hi = cf._band_limits(noisy, search, optics.pixel_size_angst)
    truth = np.array(from_uv_angle(u_angst, v_angst, angle_deg))
    power_clean = clean.values ** 2
    as_power = replace(clean, values=power_clean, profile=_radial_mean(clean, power_clean))
    band_c, rel_c, _ = cf.build_band(as_power, truth[0], opt, s_lo, s_hi)
    ring_power = cf._ring_envelope(as_power, band_c, rel_c, truth, opt) * as_power.profile[band_c.radius]
    band, _, sigma = cf.build_band(noisy, truth[0], opt, s_lo, s_hi)
    mean_power = _radial_mean(noisy, noisy.values ** 2)[band.radius]
    gamma = opt.gamma(band.s2, truth[0] + truth[1] * band.cos2 + truth[2] * band.sin2)
    d_rel = ring_power / (2 * mean_power) * np.sin(2 * gamma) * (-np.pi * opt.lam * band.s2)  # ∂rel/∂defocus
    design = np.stack([d_rel, d_rel * band.cos2, d_rel * band.sin2], axis=1) / sigma[:, None]
    covariance = np.linalg.inv(design.T @ design)
    half = float(np.hypot(truth[1], truth[2]))
    along = np.array([0.0, truth[1], truth[2]]) / half if half > 0 else np.array([0.0, 1.0, 0.0])
    sd_mean = float(np.sqrt(covariance[0, 0]))
    sd_astig = 2.0 * float(np.sqrt(along @ covariance @ along))  # |U − V| = 2 |(astig_x, astig_y)|
    return HALF_NORMAL_MEDIAN * sd_mean, HALF_NORMAL_MEDIAN * sd_astig

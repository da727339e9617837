"""Expected accuracy of the in-plane angle and of the offset, per class (``rlnAccuracyRotations``,
``rlnAccuracyTranslationsAngst``).

A noise-free image ``c F_k`` of class ``k`` loses log-likelihood

    D(delta) = sum_p h_p c_p^2 |F_k(g_delta k_p) - F_k(k_p)|^2 / (2 sigma2(s_p))

when it is compared with the reference rotated by ``delta`` degrees (``g_delta``) or shifted by
``delta`` pixels (``|dF|^2 = |F|^2 4 sin^2(pi k.d / n)``, averaged over the x and y directions).
The accuracy is the smallest ``delta`` with ``D(delta) >= 1`` (RELION's expected angular and
translational errors use the same criterion; it draws 10 trial particles in 2D, as here, for their
CTFs and noise spectra). For small ``delta``, ``D = delta^2 I / 2`` with ``I`` the Fisher
information of the parameter, so the accuracy is ``sqrt(2)`` times the Cramer-Rao standard
deviation of a maximum-likelihood estimate (the test checks this against simulated alignments).
"""

from __future__ import annotations

import math

import torch

from vitrify.ml.fourier2d import padded_ft
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.templates import make_rotation_table, sample_templates
from vitrify.ml.window import FourierWindow

N_TRIAL = 10


def trial_weights(model: MlModel, particles: ParticleSet, window: FourierWindow, n_pixels: int,
                  n_trial: int = N_TRIAL, seed: int = 0) -> torch.Tensor:
    """Mean ``h c^2 / (2 sigma2)`` over ``n_trial`` random particles -> ``(P,)`` float64."""
    dev = particles.ctf.device
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(particles.n_particles, generator=g)[:n_trial].to(dev)
    shell = window.shell[:n_pixels].to(dev)
    inv_s2 = 1.0 / model.sigma2.to(dev)[particles.group[idx]][:, shell].clamp_min(1e-30)  # (B, P)
    ctf2 = particles.ctf[idx, :n_pixels].double() ** 2
    hw = window.half_weight[:n_pixels].to(dev).double()
    return (ctf2 * inv_s2).mean(0) * hw / 2.0


def rotation_drop(model: MlModel, window: FourierWindow, weight: torch.Tensor,
                  angles_deg: torch.Tensor) -> torch.Tensor:
    """``D`` ``(K, A)`` for in-plane rotations ``angles_deg`` ``(A,)`` of every reference.

    ``weight`` ``(P,)`` is :func:`trial_weights`; templates are sampled from the 2x padded grids
    as in the E-step (the angle 0 sample lands on grid points, so it is the exact transform).
    """
    p = weight.shape[0]
    grids = padded_ft(model.refs, model.pad).to(torch.complex64)
    psi = torch.cat([torch.zeros(1), angles_deg.float().cpu()]).to(grids.device)
    t = sample_templates(grids, make_rotation_table(psi, window.to(grids.device), model.pad, p))
    diff = (t[:, 1:] - t[:, :1]).to(torch.complex128)
    return ((diff.real ** 2 + diff.imag ** 2) * weight.to(diff.device)).sum(-1)


def shift_drop(model: MlModel, window: FourierWindow, weight: torch.Tensor,
               shifts_px: torch.Tensor) -> torch.Tensor:
    """``D`` ``(K, A)`` for shifts ``shifts_px`` ``(A,)``, mean of the x and y directions."""
    p = weight.shape[0]
    grids = padded_ft(model.refs, model.pad).to(torch.complex64)
    f = sample_templates(grids, make_rotation_table(torch.zeros(1, device=grids.device),
                                                    window.to(grids.device), model.pad, p))[:, 0]
    power = (f.real.double() ** 2 + f.imag.double() ** 2) * weight.to(f.device)  # (K, P)
    n = model.box_px
    d = shifts_px.double().to(f.device)[:, None]
    kx, ky = window.kx[:p].double().to(f.device), window.ky[:p].double().to(f.device)
    ramp = 2.0 * (torch.sin(math.pi * d * kx / n) ** 2 + torch.sin(math.pi * d * ky / n) ** 2)  # (A, P)
    return power @ ramp.t()


def first_crossing(drop: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Smallest grid value where ``drop`` ``(K, A)`` reaches 1 (log-log interpolation) -> ``(K,)``.

    ``grid`` ``(A,)`` is increasing and positive; classes that never reach 1 get ``inf``.
    """
    grid = grid.double().to(drop.device)
    above = drop >= 1.0
    first = torch.where(above.any(1), above.double().argmax(1), torch.full_like(above[:, 0], -1, dtype=torch.long))
    out = torch.full((drop.shape[0],), math.inf, dtype=torch.float64, device=drop.device)
    for k, j in enumerate(first.tolist()):
        if j == 0:
            out[k] = grid[0]
        elif j > 0:
            d0, d1 = drop[k, j - 1].clamp_min(1e-300).log(), drop[k, j].log()
            g0, g1 = grid[j - 1].log(), grid[j].log()
            frac = (0.0 - d0) / (d1 - d0).clamp_min(1e-12)
            out[k] = torch.exp(g0 + frac * (g1 - g0))
    return out


def expected_accuracy(model: MlModel, particles: ParticleSet, window: FourierWindow,
                      n_trial: int = N_TRIAL, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class accuracy of the in-plane angle (degrees) and of the offset (pixels), ``(K,)`` each.

    Computed in the current window (``model.current_radius``); ``inf`` where even a 180 degree
    rotation or a half-box shift loses less than 1 in log-likelihood (an empty class).
    """
    p = window.pixels_within(model.current_radius)
    w = trial_weights(model, particles, window, p, n_trial, seed)
    angles = torch.logspace(math.log10(0.02), math.log10(180.0), 96, dtype=torch.float64)
    shifts = torch.logspace(math.log10(0.002), math.log10(model.box_px / 2.0), 96, dtype=torch.float64)
    rot = first_crossing(rotation_drop(model, window, w, angles), angles)
    trans = first_crossing(shift_drop(model, window, w, shifts), shifts)
    return rot.cpu(), trans.cpu()

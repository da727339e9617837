"""Junk in 2D classification: which particles the model fails to explain, and a class for them.

* :func:`noise_scale`: a particle's own noise level over the noise model, from its outer shells
  (RELION's norm correction as a statistic): images normalised over a carbon or ice background come
  out with less noise than the others, so their residuals must be measured against their own noise;
* :func:`misfit`: the low-resolution residual of each particle at its current class, psi and
  offset, over its own noise, minus 1 (about 0 for a particle the model explains, up to a few
  tenths for a box with density beyond the particle's: a neighbour, an ice blob, a carbon edge);
* :func:`aligned_average_grids` / :func:`average_from_grids`: the CTF-weighted average of chosen
  particles at their poses, to start a class from (``--replace-from worst``,
  :mod:`vitrify.ml.optimiser`).
"""

from __future__ import annotations

import torch

from vitrify.ml.estep import phase_table
from vitrify.ml.fourier2d import images_from_padded, padded_ft
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.starts import lowpass
from vitrify.ml.templates import make_rotation_table, sample_templates, scatter_to_grids
from vitrify.ml.window import FourierWindow


def noise_scale(particles: ParticleSet, rows: torch.Tensor, window: FourierWindow, sigma2: torch.Tensor,
                band_from: float = 0.75) -> torch.Tensor:
    """``(n,)`` power of ``particles[rows]`` per pixel over the noise model ``sigma2`` ``(G, n//2+1)``
    in the shells from ``band_from`` x Nyquist on, where a particle carries next to no signal
    (1 on average)."""
    dev = particles.ft.device
    shells = window.shell.to(dev)
    band = shells >= band_from * window.box_px / 2
    x = particles.ft[rows][:, band]
    s2 = sigma2.to(dev)[particles.group[rows]][:, shells[band]]
    hw = window.half_weight.to(dev)[band]
    return ((x.real.double() ** 2 + x.imag.double() ** 2) * hw / (2 * s2)).sum(1) / hw.sum()


def misfit(model: MlModel, particles: ParticleSet, rows: torch.Tensor, window: FourierWindow,
           resolution_angst: float = 25.0) -> torch.Tensor:
    """``(n,)`` low-resolution residual of ``particles[rows]`` at their current class, psi and offset.

    ``sum h |x s - c P|^2 / (2 sigma2)`` over the shells up to ``resolution_angst`` (at least 2),
    divided by the particle's :func:`noise_scale` and by ``sum h``, minus 1: about 0 (spread
    ~1/sqrt(pixels)) when the class explains the particle, larger when the box holds low-resolution
    density the class lacks.
    """
    dev = particles.ft.device
    win = window.to(dev)
    shell = max(2, min(int(model.box_px * model.pixel_size_angst / resolution_angst), window.radius))
    p = window.pixels_within(shell)
    grids = padded_ft(model.refs, model.pad).to(torch.complex64)
    cls = particles.class_index[rows]
    resid = torch.zeros(rows.shape[0], dtype=torch.float64, device=dev)
    hw = win.half_weight[:p].double()
    for k in torch.unique(cls).tolist():
        sel = torch.nonzero(cls == k).flatten()
        r = rows[sel]
        table = make_rotation_table(particles.psi_deg[r], window, model.pad, p)
        templates = sample_templates(grids[k:k + 1], table)[0]  # (n_k, p)
        x = particles.ft[r, :p] * phase_table(particles.offset_px[r], win.kx[:p], win.ky[:p], window.box_px)
        diff = x - particles.ctf[r, :p] * templates
        s2 = model.sigma2.to(dev)[particles.group[r]][:, win.shell[:p]]
        resid[sel] = ((diff.real.double() ** 2 + diff.imag.double() ** 2) * hw / (2 * s2)).sum(1) / hw.sum()
    return resid / noise_scale(particles, rows, window, model.sigma2).clamp_min(1e-12) - 1.0


def aligned_average_grids(particles: ParticleSet, rows: torch.Tensor, window: FourierWindow, pad: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """CTF-weighted sums of ``particles[rows]`` at their current psi and offset on a padded grid.

    Returns data ``(m, m//2+1)`` complex (``sum h c x s``) and weight ``(m, m//2+1)``
    (``sum h c^2``), ``m = pad n``: :func:`average_from_grids` turns them into an image.
    """
    dev = particles.ft.device
    win = window.to(dev)
    c = particles.ctf[rows]
    shift = phase_table(particles.offset_px[rows], win.kx, win.ky, window.box_px)
    table = make_rotation_table(particles.psi_deg[rows], window, pad)
    d, w = scatter_to_grids((particles.ft[rows] * shift * c * win.half_weight)[None],
                            (c * c * win.half_weight)[None], table)
    return d[0], w[0]


def average_from_grids(data: torch.Tensor, weight: torch.Tensor, n: int, shell: int) -> torch.Tensor:
    """``(n, n)`` image ``data / weight`` (weights floored at 1/1000 of their mean), low-passed at ``shell``."""
    floor = (weight.mean() * 1e-3).clamp_min(1e-30)
    return lowpass(images_from_padded((data / torch.maximum(weight, floor))[None], n), shell)[0]



"""One E-step pass over a subset of particles: templates, blocking, per-particle results.

:func:`expectation` builds the rotated templates of the current references inside the
current Fourier window, then runs :func:`vitrify.ml.estep.run_block` over blocks of
particles of one optics group at a time, the block size chosen so that the score
arrays stay within a memory budget. It updates the particles' assignments in place and
returns the M-step sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vitrify.ml.estep import EStepSums, Hypotheses, phase_table, run_block
from vitrify.ml.fourier2d import padded_ft
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.templates import RotationTable, make_rotation_table, sample_templates
from vitrify.ml.window import FourierWindow


@dataclass(frozen=True)
class Sampling:
    """In-plane angle and translation grid of the search.

    ``psi_deg`` ``(R,)`` in-plane angles; ``shifts_px`` ``(T, 2)`` (x, y) offset steps
    around each particle's previous offset.
    """

    psi_deg: torch.Tensor
    shifts_px: torch.Tensor


def make_sampling(psi_step_deg: float, offset_range_px: float, offset_step_px: float,
                  device: torch.device | None = None) -> Sampling:
    """RELION's 2D grid: ``ceil(360/step)`` psi values; a disc of offsets of radius ``range``.

    Examples
    --------
    >>> s = make_sampling(12.0, 5.0, 2.0)
    >>> s.psi_deg.shape[0], s.shifts_px.shape[0]
    (30, 21)
    """
    n_psi = max(1, int(-(-360.0 // psi_step_deg)))
    psi = torch.arange(n_psi, dtype=torch.float32, device=device) * (360.0 / n_psi)
    if offset_range_px <= 0 or offset_step_px <= 0:
        return Sampling(psi, torch.zeros(1, 2, device=device))
    m = int(-(-offset_range_px // offset_step_px))
    steps = torch.arange(-m, m + 1, dtype=torch.float32, device=device) * offset_step_px
    gy, gx = torch.meshgrid(steps, steps, indexing="ij")
    keep = gx * gx + gy * gy <= offset_range_px ** 2 + 1e-6
    return Sampling(psi, torch.stack([gx[keep], gy[keep]], -1))


@dataclass(frozen=True)
class EStepSettings:
    """Knobs of a pass: significance rule, half-sets and memory budget for the scores."""

    adaptive_fraction: float = 0.999
    max_significant: int = 0
    halves: int = 1
    budget_bytes: int = 64 * 2 ** 20


class TemplateCache:
    """Rotation tables keyed by (number of window pixels, psi grid)."""

    def __init__(self) -> None:
        self._tables: dict[tuple, RotationTable] = {}

    def table(self, psi_deg: torch.Tensor, window: FourierWindow, n_pixels: int, pad: int) -> RotationTable:
        """The table for the first ``n_pixels`` window pixels (built on first use)."""
        key = (n_pixels, pad, tuple(psi_deg.tolist()), str(psi_deg.device))
        if key not in self._tables:
            if len(self._tables) > 4:
                self._tables.clear()
            self._tables[key] = make_rotation_table(psi_deg, window, pad, n_pixels)
        return self._tables[key]


def build_hypotheses(model: MlModel, sampling: Sampling, window: FourierWindow, n_pixels: int,
                     sigma_offset_px: float, cache: TemplateCache) -> Hypotheses:
    """Rotated templates ``(K * R, P)`` of the current references in the window prefix."""
    grids = padded_ft(model.refs, model.pad).to(torch.complex64)
    table = cache.table(sampling.psi_deg, window, n_pixels, model.pad)
    templates = sample_templates(grids, table)  # (K, R, P)
    k, r, p = templates.shape
    pdf = model.pdf_class.to(templates.device).clamp_min(1e-30)
    log_prior = torch.log(pdf).float().repeat_interleave(r)
    return Hypotheses(templates=templates.reshape(k * r, p), log_prior_class=log_prior,
                      shifts_px=sampling.shifts_px, n_classes=k, n_psi=r,
                      sigma_offset_px=float(sigma_offset_px))


def block_size(n_shifts: int, n_templates: int, budget_bytes: int) -> int:
    """Particles per block so that ~3 float32 score-sized arrays fit the budget."""
    per_particle = 3 * 4 * n_shifts * n_templates
    return max(1, int(budget_bytes // max(per_particle, 1)))


def expectation(model: MlModel, particles: ParticleSet, indices: torch.Tensor, sampling: Sampling,
                window: FourierWindow, settings: EStepSettings, cache: TemplateCache) -> EStepSums:
    """E-step over ``particles[indices]``; updates their assignments in place.

    Half-sets (VDAM) are the parity of the particle's row index.
    """
    p = window.pixels_within(model.current_radius)
    dev = particles.ft.device
    win = window.to(dev)
    kx, ky, hw = win.kx[:p], win.ky[:p], win.half_weight[:p]
    hyp = build_hypotheses(model, sampling, window, p, max(model.sigma2_offset_px, 1e-6) ** 0.5, cache)
    stacked = torch.cat([hyp.templates.real, hyp.templates.imag], 1).t().contiguous().float()
    power = (hyp.templates.real ** 2 + hyp.templates.imag ** 2).t().contiguous().float()
    table = phase_table(hyp.shifts_px, kx, ky, window.box_px)
    sums = EStepSums.zeros(settings.halves, hyp.templates.shape[0], model.n_classes,
                           particles.n_groups, win.shell[:p], window.radius + 1)
    inv_sigma2 = 1.0 / model.sigma2.to(dev).clamp_min(1e-30)
    bsize = block_size(table.shape[0], hyp.templates.shape[0], settings.budget_bytes)
    indices = indices.to(dev)
    groups = particles.group[indices]
    for g in torch.unique(groups).tolist():
        sel = indices[groups == g]
        inv_s2 = inv_sigma2[g][win.shell[:p]].float()
        for start in range(0, sel.shape[0], bsize):
            idx = sel[start:start + bsize]
            half = (idx % 2) if settings.halves == 2 else torch.zeros_like(idx)
            res = run_block(particles.ft[idx, :p], particles.ctf[idx, :p], particles.offset_px[idx],
                            half, g, inv_s2, hw, kx, ky, window.box_px, hyp, stacked, power, table,
                            sums, settings.adaptive_fraction, settings.max_significant)
            particles.class_index[idx] = res.best_class
            particles.psi_deg[idx] = sampling.psi_deg[res.best_psi_index]
            particles.offset_px[idx] = res.best_offset_px
            particles.pmax[idx] = res.pmax
            particles.n_significant[idx] = res.n_significant
            particles.log_likelihood[idx] = res.log_likelihood
    return sums

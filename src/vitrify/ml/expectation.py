"""One E-step pass over a subset of particles: templates, blocking, per-particle results.

:func:`expectation` builds the rotated templates of the current references inside the
current Fourier window (and, with adaptive oversampling, the fine psi grid and the
coarse window, RELION's ``coarse_size``), then runs :func:`vitrify.ml.block.run_block`
over blocks of particles of one optics group at a time, the block size chosen so that
the score arrays stay within a memory budget. It updates the particles' assignments in
place and returns the M-step sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vitrify.ml.block import run_block
from vitrify.ml.estep import Batch, EStepSums, Hypotheses, PassGrid, StageClock, make_frame
from vitrify.ml.finepass import fine_psi, fine_shifts
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
    offset_step_px: float = 1.0


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
        return Sampling(psi, torch.zeros(1, 2, device=device), 0.0)
    m = int(-(-offset_range_px // offset_step_px))
    steps = torch.arange(-m, m + 1, dtype=torch.float32, device=device) * offset_step_px
    gy, gx = torch.meshgrid(steps, steps, indexing="ij")
    keep = gx * gx + gy * gy <= offset_range_px ** 2 + 1e-6
    return Sampling(psi, torch.stack([gx[keep], gy[keep]], -1), float(offset_step_px))


def coarse_radius(box_px: int, psi_step_deg: float, diameter_px: float, oversampling: int) -> int:
    """RELION's coarse window radius (``coarse_size / 2``) for the first pass.

    The in-plane step moves a point at the particle's rim by ``step * pi * D / 360``; the
    coarse window keeps frequencies up to 1.5 times finer than that arc:
    ``ceil(n * 1.5 * 360 / (step * pi * D))`` shells (no limit without oversampling).

    Examples
    --------
    >>> coarse_radius(64, 12.0, 38.4, 1)
    24
    """
    if oversampling <= 0:
        return box_px // 2
    return int(math.ceil(box_px * 1.5 * 360.0 / (psi_step_deg * math.pi * diameter_px) - 1e-9))


@dataclass(frozen=True)
class EStepSettings:
    """Knobs of a pass: significance rule, half-sets, oversampling and memory budget.

    ``coarse_radius`` limits the coarse pass window (0: the current window);
    ``oversampling`` 1 adds the fine pass for particles with at most ``fine_cap``
    significant coarse poses (``<= 0``: ``max_significant`` if set, else 5 K);
    ``posterior_power`` < 1 tempers the posterior (weights as (likelihood x prior)^power).
    """

    adaptive_fraction: float = 0.999
    max_significant: int = 0
    halves: int = 1
    budget_bytes: int = 64 * 2 ** 20
    oversampling: int = 0
    coarse_radius: int = 0
    fine_cap: int = -1
    profile: bool = False
    posterior_power: float = 1.0


class TemplateCache:
    """Rotation tables keyed by (number of window pixels, psi grid)."""

    def __init__(self) -> None:
        self._tables: dict[tuple, RotationTable] = {}

    def table(self, psi_deg: torch.Tensor, window: FourierWindow, n_pixels: int, pad: int) -> RotationTable:
        """The table for the first ``n_pixels`` window pixels (built on first use)."""
        key = (n_pixels, pad, tuple(psi_deg.tolist()), str(psi_deg.device))
        if key not in self._tables:
            if len(self._tables) >= 12:
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
                      shifts_px=sampling.shifts_px, psi_deg=sampling.psi_deg, n_classes=k, n_psi=r,
                      sigma_offset_px=float(sigma_offset_px))


def block_size(n_shifts: int, n_templates: int, n_pixels: int, budget_bytes: int) -> int:
    """Particles per block so that the scores (~3 copies) and shifted particles fit the budget."""
    per_particle = 4 * n_shifts * (3 * n_templates + 2 * 2 * n_pixels)
    return max(1, int(budget_bytes // max(per_particle, 1)))


def build_pass_grid(model: MlModel, sampling: Sampling, window: FourierWindow, settings: EStepSettings,
                    cache: TemplateCache) -> PassGrid:
    """Coarse (and fine) template frames of the pass in the current window."""
    p = window.pixels_within(model.current_radius)
    dev = model.refs.device
    win = window.to(dev)
    kx, ky, n = win.kx[:p], win.ky[:p], window.box_px
    sigma = max(model.sigma2_offset_px, 1e-6) ** 0.5
    hyp = build_hypotheses(model, sampling, window, p, sigma, cache)
    radius_c = settings.coarse_radius if settings.coarse_radius > 0 else model.current_radius
    pc = window.pixels_within(min(radius_c, model.current_radius))
    shifts = sampling.shifts_px.to(dev)

    def frame(h: Hypotheses, n_pixels: int, shifts_px: torch.Tensor):
        return make_frame(h.templates, n_pixels, shifts_px, kx, ky, n, h.log_prior_class, h.psi_deg)

    coarse_full = frame(hyp, p, shifts)
    fine = None
    if settings.oversampling > 0:
        fine_sampling = Sampling(fine_psi(sampling.psi_deg), fine_shifts(shifts, sampling.offset_step_px))
        fine = frame(build_hypotheses(model, fine_sampling, window, p, sigma, cache), p,
                     fine_sampling.shifts_px)
    cap = settings.fine_cap if settings.fine_cap > 0 else (
        settings.max_significant if settings.max_significant > 0 else 5 * model.n_classes)
    return PassGrid(coarse=frame(hyp, pc, shifts) if pc < p else coarse_full, coarse_full=coarse_full,
                    fine=fine, n_classes=model.n_classes, sigma_offset_px=sigma,
                    fraction=settings.adaptive_fraction, max_significant=settings.max_significant,
                    fine_cap=cap, budget_bytes=settings.budget_bytes, posterior_power=settings.posterior_power)


def expectation(model: MlModel, particles: ParticleSet, indices: torch.Tensor, sampling: Sampling,
                window: FourierWindow, settings: EStepSettings, cache: TemplateCache) -> EStepSums:
    """E-step over ``particles[indices]``; updates their assignments in place.

    Half-sets (VDAM) are the parity of the particle's row index.
    """
    clock = StageClock(enabled=settings.profile)
    clock.start()
    grid = build_pass_grid(model, sampling, window, settings, cache)
    clock.lap("templates", grid.coarse.rows)
    return run_pass(grid, model.sigma2, particles, indices, window, model.current_radius, settings, clock)


def run_pass(grid: PassGrid, sigma2: torch.Tensor, particles: ParticleSet, indices: torch.Tensor,
             window: FourierWindow, radius: int, settings: EStepSettings, clock: StageClock,
             half_of: torch.Tensor | None = None) -> EStepSums:
    """Blocks of ``particles[indices]`` (one optics group at a time) through a pass's ``grid``.

    ``sigma2`` ``(G, n//2+1)`` noise spectra; ``radius`` the current window radius. The same loop
    serves 2D (templates = rotated class images) and 3D (templates = central slices of class
    volumes, :mod:`vitrify.ml.inimodel`). Particles' assignments are updated in place.
    ``half_of`` ``(N,)`` long gives each particle's half-set in ``0..settings.halves-1`` (default:
    index parity for 2 halves, else 0); 3D classification seeds K classes with K random subsets.
    """
    p = window.pixels_within(radius)
    dev = particles.ft.device
    win = window.to(dev)
    sums = EStepSums.zeros(settings.halves, grid, particles.n_groups, win.shell[:p], window.radius + 1)
    sums.clock = clock
    inv_sigma2 = 1.0 / sigma2.to(dev).clamp_min(1e-30)
    bsize = block_size(grid.coarse.table.shape[0], grid.coarse.rows.shape[0], p, settings.budget_bytes)
    indices = indices.to(dev)
    groups = particles.group[indices]
    for g in torch.unique(groups).tolist():
        sel = indices[groups == g]
        inv_s2 = inv_sigma2[g][win.shell[:p]].float()
        for start in range(0, sel.shape[0], bsize):
            idx = sel[start:start + bsize]
            if half_of is not None:
                half = half_of.to(dev)[idx]
            else:
                half = (idx % 2) if settings.halves == 2 else torch.zeros_like(idx)
            batch = Batch(particles.ft[idx, :p], particles.ctf[idx, :p], particles.offset_px[idx], half, g,
                          inv_s2, win.half_weight[:p], win.kx[:p], win.ky[:p], window.box_px,
                          None if particles.allowed is None else particles.allowed[idx])
            res = run_block(batch, grid, sums)
            particles.class_index[idx] = res.best_class
            particles.psi_deg[idx] = res.best_psi_deg
            particles.offset_px[idx] = res.best_offset_px
            particles.pmax[idx] = res.pmax
            particles.n_significant[idx] = res.n_significant
            particles.log_likelihood[idx] = res.log_likelihood
    return sums

"""The 3D likelihood engine and de novo initial models (VDAM in 3D, EM as the baseline).

:class:`Refiner3D` owns K class volumes, the particles and (VDAM) the moments. An iteration
picks its particles (all for EM; a reshuffled mini-batch for VDAM, seeded by ``seed + it``),
builds the pass's templates, central slices of the volumes at the coarse orientations (and at
their 8 oversampled children: :mod:`vitrify.ml.slices`, :mod:`vitrify.ml.orient3d`), runs the
2D engine's blocked E-step over them (:func:`vitrify.ml.expectation.run_pass`: the same GEMM
coarse pass, posterior and fine pass; orientations x particles never exist at once), inserts
the template-frame sums into 3D grids and applies the algorithm's M-step
(:mod:`vitrify.ml.vdam3d`), the point-group average, solvent flattening and the next window.

Data-parallel (``ranks``, a :class:`vitrify.ml.optimiser.Ranks`, as 2D classification): each rank
holds the shard ``ranks.rows`` of the particles, selections are drawn over all ``n_total``
particles and each rank runs the E-step of those it holds; the E-step sums and the 3D grids are
all-reduced (:meth:`Refiner3D.reduce`), so every rank does the same M-step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vitrify.core.sampling import angular_step_deg
from vitrify.ml.estep import PassGrid, StageClock, make_frame
from vitrify.ml.expectation import EStepSettings, Sampling, TemplateCache, run_pass
from vitrify.ml.finepass import fine_shifts
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.mstep import next_radius, update_class_stats, update_sigma2
from vitrify.ml.orient3d import N_CHILDREN, fine_layout, make_orientations
from vitrify.ml.schedules import VdamSchedule, auto_subsets_inimodel
from vitrify.ml.slices import PAD, SLICE_PAD, grid_shells, insert_slices, make_slice_table, read_slices, slice_radius, \
    volume_grids, volumes_from_grids
from vitrify.ml.templates import sample_templates, symmetrise_column0
from vitrify.ml.vdam import choose_replacement, preconditioned_gradient
from vitrify.ml.vdam3d import (data_vs_prior, flatten_solvent, gradient_step, map_reconstruct, reference_tau2,
                               symmetrise, update_moments_inside, zero_moments)
from vitrify.ml.window import FourierWindow

AUTO_ORDER = -1
MAX_AUTO_ORDER = 3


@dataclass(frozen=True)
class Settings3D:
    """Algorithm settings of a 3D run (validated by the job's Options).

    ``healpix_order`` -1 chooses the order from the resolution every 10 iterations (auto-sampling).
    """

    algorithm: str = "vdam"
    nr_iter: int = 200
    tau2_fudge: float = 4.0
    particle_diameter_px: float = 40.0
    symmetry: str = "C1"
    healpix_order: int = 1
    adaptive_fraction: float = 0.999
    max_significant: int = -1
    class_inactivity_threshold: float = 0.1
    mu: float = 0.9
    minres_map: int = 5
    incr_size: int = 10
    seed: int = 1
    budget_bytes: int = 64 * 2 ** 20
    flatten_solvent: bool = True
    ini_subset: int = -1
    fin_subset: int = -1
    stepsize: float = 0.5
    stepsize_start: float = 0.9
    oversampling: int = 1
    fine_cap: int = 8


@dataclass
class Iteration3D:
    """What one iteration did (for logs and outputs)."""

    iteration: int
    n_particles: int
    full_pass: bool
    stepsize: float = 0.0
    tau2_fudge: float = 1.0
    healpix_order: int = 1
    replaced: tuple[int, int] | None = None
    extra: dict = field(default_factory=dict)


def coarse_radius_3d(box_px: int, step_deg: float, diameter_px: float) -> int:
    """RELION's 3D coarse window radius: ``ceil(n * 1.2 * 360 / (step * pi * D))`` shells."""
    return int(math.ceil(box_px * 1.2 * 360.0 / (step_deg * math.pi * diameter_px) - 1e-9))


def default_max_significant(settings: Settings3D) -> int:
    """Coarse poses kept per particle: ``max_significant`` if given, else ``fine_cap``.

    RELION keeps up to 100 K significant coarse poses in VDAM and refines all of them; here every
    particle's fine pass refines its ``fine_cap`` (8) most probable ones, so that every particle
    is scored at the current resolution at a bounded cost.
    """
    return settings.max_significant if settings.max_significant > 0 else settings.fine_cap


def auto_order(resolution_angst: float, diameter_angst: float, start: int) -> int:
    """Smallest order >= ``start`` whose fine step (half the coarse) is below the arc of one
    resolution element at the particle's radius (at most :data:`MAX_AUTO_ORDER`)."""
    needed = math.degrees(resolution_angst / (diameter_angst / 2.0))
    order = start
    while order < MAX_AUTO_ORDER and angular_step_deg(order) / 2.0 > needed:
        order += 1
    return order


class Refiner3D:
    """EM / VDAM on K 3D classes from prepared particles (initial model; the engine of 3D jobs)."""

    def __init__(self, settings: Settings3D, model: MlModel, particles: ParticleSet, window: FourierWindow,
                 sampling: Sampling, ranks=None) -> None:
        self.settings, self.model, self.particles, self.window, self.sampling = \
            settings, model, particles, window, sampling
        self.ranks = ranks
        n = self.n_total
        ini, fin = auto_subsets_inimodel(n)
        self.schedule = VdamSchedule(nr_iter=settings.nr_iter, n_particles=n, n_classes=model.n_classes,
                                     stepsize=settings.stepsize, stepsize_start=settings.stepsize_start,
                                     tau2_fudge=settings.tau2_fudge,
                                     ini_subset=settings.ini_subset if settings.ini_subset > 0 else ini,
                                     fin_subset=settings.fin_subset if settings.fin_subset > 0 else fin)
        dev = model.refs.device
        self.m, self.g = SLICE_PAD * model.box_px, PAD * model.box_px  # 2D slice grids, 3D grids
        self.shells = grid_shells(self.g, dev)
        self.moments = zero_moments(model.n_classes, self.g, dev) if settings.algorithm == "vdam" else None
        order = settings.healpix_order if settings.healpix_order >= 0 else 1
        self.orientations = make_orientations(order, settings.symmetry, dev)
        self.angles_deg = torch.zeros(particles.n_particles, 3, dtype=torch.float64, device=dev)
        self.cache = TemplateCache()
        self._slice_tables: dict[tuple, object] = {}

    # -- ranks -----------------------------------------------------------------------------
    @property
    def n_total(self) -> int:
        """Particles of the run (of every rank)."""
        return self.particles.n_particles if self.ranks is None else self.ranks.n_total

    def held(self, indices: torch.Tensor) -> torch.Tensor:
        """The local indices of the particles of ``indices`` (rows of all particles) this rank holds."""
        if self.ranks is None:
            return indices
        start, stop = self.ranks.rows
        return indices[(indices >= start) & (indices < stop)] - start

    def reduce(self, sums, data: torch.Tensor, weight: torch.Tensor):
        """``(sums, data, weight)`` of this rank's particles summed over the ranks (in place)."""
        if self.ranks is not None:
            from vitrify.ml.optimiser import all_reduce_pass

            all_reduce_pass(sums, self.ranks, frames=False)
            self.ranks.all_reduce(data)
            self.ranks.all_reduce(weight)
        return sums, data, weight

    def totals(self, values: list[float]) -> list[float]:
        """``values`` (sums over this rank's particles) summed over the ranks."""
        return values if self.ranks is None else self.ranks.sum_values(values, self.model.refs.device)

    # -- templates and sums ----------------------------------------------------------------
    def _slice_table(self, fine: bool, radius: int):
        """Slice table of the coarse or fine directions covering ``radius`` (rounded up to a multiple
        of 4 shells, so that a growing window rebuilds it a few times per run, not at every step)."""
        radius = min(self.model.box_px // 2 - 1, 4 * -(-(radius + 1) // 4))
        key = (fine, radius, self.orientations.order)
        if key not in self._slice_tables:
            if len(self._slice_tables) >= 4:
                self._slice_tables.clear()
            mats = self.orientations.direction_matrices(fine).to(self.model.refs.device)
            self._slice_tables[key] = make_slice_table(mats, self.model.box_px, slice_radius(radius))
        return self._slice_tables[key]

    def _templates(self, grids: torch.Tensor, fine: bool, p: int) -> torch.Tensor:
        """``(K * R, P)`` templates (class-major; fine ones in child order)."""
        o, k = self.orientations, self.model.n_classes
        slices = read_slices(grids, self._slice_table(fine, self.model.current_radius))
        psi = o.fine_psi_deg if fine else o.psi_deg
        table = self.cache.table(psi.to(grids.device), self.window, p, SLICE_PAD)
        d = slices.shape[1]
        t = sample_templates(slices.reshape(k * d, self.m, self.m // 2 + 1), table)  # (K D, n_psi, P)
        if fine:
            return fine_layout(t.reshape(k, d, -1, p), o.directions_deg.shape[0], o.psi_deg.shape[0])
        return t.reshape(-1, p)

    def pass_grid(self, settings: EStepSettings, grids: torch.Tensor | None = None) -> PassGrid:
        """Coarse (and fine) frames of the current volumes (or of their padded transforms ``grids``,
        :func:`~vitrify.ml.slices.volume_grids`) in the current window."""
        model, win, o = self.model, self.window.to(self.model.refs.device), self.orientations
        p = win.pixels_within(model.current_radius)
        kx, ky, n = win.kx[:p], win.ky[:p], win.box_px
        grids = volume_grids(model.refs) if grids is None else grids
        n_o = o.n_coarse
        log_pdf = torch.log(model.pdf_class.to(grids.device).clamp_min(1e-30)).float()
        shifts = self.sampling.shifts_px.to(grids.device)
        ids = torch.arange(n_o, device=grids.device, dtype=torch.float32)
        tc = self._templates(grids, False, p)
        coarse_full = make_frame(tc, p, shifts, kx, ky, n, log_pdf.repeat_interleave(n_o), ids, N_CHILDREN)
        pc = win.pixels_within(min(settings.coarse_radius, model.current_radius))
        coarse = make_frame(tc, pc, shifts, kx, ky, n, log_pdf.repeat_interleave(n_o), ids, N_CHILDREN) \
            if pc < p else coarse_full
        fine = None
        if settings.oversampling > 0:
            tf = self._templates(grids, True, p)
            fshifts = fine_shifts(shifts, self.sampling.offset_step_px)
            fids = n_o + torch.arange(N_CHILDREN * n_o, device=grids.device, dtype=torch.float32)
            fine = make_frame(tf, p, fshifts, kx, ky, n, log_pdf.repeat_interleave(N_CHILDREN * n_o), fids,
                              N_CHILDREN)
        sigma = max(model.sigma2_offset_px, 1e-6) ** 0.5
        cap = settings.fine_cap if settings.fine_cap > 0 else 100 * model.n_classes
        return PassGrid(coarse=coarse, coarse_full=coarse_full, fine=fine, n_classes=model.n_classes,
                        sigma_offset_px=sigma, fraction=settings.adaptive_fraction,
                        max_significant=settings.max_significant, fine_cap=cap, budget_bytes=settings.budget_bytes)

    def sums_to_grids(self, sums) -> tuple[torch.Tensor, torch.Tensor]:
        """Template-frame sums -> 3D grids ``(H, K, g, g, g//2+1)`` (complex data, real weight)."""
        o, k, m, g = self.orientations, self.model.n_classes, self.m, self.g
        half = m // 2 + 1
        data = weight = None
        for name, frame in sums.frames.items():
            if not bool((frame.weight != 0).any()):
                continue
            fine = name == "fine"
            h, r, p = frame.weight.shape
            psi = o.fine_psi_deg if fine else o.psi_deg
            table = self.cache.table(psi.to(frame.data.device), self.window, p, SLICE_PAD)
            dd, ww = frame_to_slices(frame.data, frame.weight, k, o.directions_deg.shape[0], fine, table)
            table3 = self._slice_table(fine, self.model.current_radius)  # all directions: its insertion matrix is kept
            dg, wg = insert_slices(dd.reshape(h * k, -1, m, half), ww.reshape(h * k, -1, m, half), table3)
            dg, wg = dg.reshape(h, k, g, g, g // 2 + 1), wg.reshape(h, k, g, g, g // 2 + 1)
            data = dg if data is None else data + dg
            weight = wg if weight is None else weight + wg
        if data is None:
            data = torch.zeros(sums.frames["coarse"].weight.shape[0], k, g, g, g // 2 + 1, dtype=torch.complex64,
                               device=self.model.refs.device)
            weight = data.real.clone()
        return data, weight

    # -- one pass ------------------------------------------------------------------------------
    def estep(self, indices: torch.Tensor, halves: int, max_sig: int, half_of: torch.Tensor | None = None,
              grids: torch.Tensor | None = None):
        """E-step over ``particles[indices]``: sums, 3D data and weight grids (``half_of``: see
        :func:`vitrify.ml.expectation.run_pass`; ``grids``: the volumes' padded transforms when the caller
        has them)."""
        s, model = self.settings, self.model
        grids = volume_grids(model.refs) if grids is None else grids
        model.tau2 = reference_tau2(grids, self.shells, model.current_radius, model.box_px)
        settings = EStepSettings(adaptive_fraction=s.adaptive_fraction, max_significant=max_sig, halves=halves,
                                 budget_bytes=s.budget_bytes, oversampling=s.oversampling, fine_cap=s.fine_cap,
                                 coarse_radius=coarse_radius_3d(model.box_px, self.orientations.step_deg,
                                                                s.particle_diameter_px))
        grid = self.pass_grid(settings, grids)
        sums = run_pass(grid, model.sigma2, self.particles, indices, self.window, model.current_radius, settings,
                        StageClock(), half_of)
        self.angles_deg[indices] = self.orientations.angles(self.particles.psi_deg[indices]).to(
            self.angles_deg.device)
        data, weight = self.sums_to_grids(sums)
        return self.reduce(sums, data, weight)

    def finish(self, sums, weight: torch.Tensor, mu: float, indices: torch.Tensor) -> None:
        """Noise, class fractions, SSNR, solvent flattening and the next window."""
        model, s = self.model, self.settings
        update_sigma2(model, sums, self.window, mu)
        update_class_stats(model, sums, mu)
        model.data_vs_prior = data_vs_prior(weight.sum(0), model.tau2, model.tau2_fudge, self.shells,
                                            model.box_px // 2 + 1)
        model.refs = symmetrise(model.refs, s.symmetry)
        if s.flatten_solvent:
            model.refs = flatten_solvent(model.refs, s.particle_diameter_px / 2.0)
        model.current_radius = next_radius(model.data_vs_prior, model.box_px, s.incr_size, s.minres_map)
        ll, pmax, count = self.totals([float(self.particles.log_likelihood[indices].sum()),
                                       float(self.particles.pmax[indices].double().sum()), float(indices.numel())])
        model.log_likelihood, model.ave_pmax = ll, pmax / max(count, 1.0)

    def update_sampling(self, it: int) -> None:
        """Auto-sampling: every 10 iterations, the order the current resolution needs."""
        if self.settings.healpix_order != AUTO_ORDER or it % 10 != 1 or it == 1:
            return
        model = self.model
        shell = max(1, model.current_radius - self.settings.incr_size)
        self.set_order(auto_order(model.resolution_angst(shell),
                                  self.settings.particle_diameter_px * model.pixel_size_angst, self.orientations.order))

    def set_order(self, order: int) -> None:
        """Search orientations of HEALPix ``order`` from the next E-step on (caches rebuilt on change)."""
        if order != self.orientations.order:
            self.orientations = make_orientations(order, self.settings.symmetry, self.model.refs.device)
            self.cache = TemplateCache()
            self._slice_tables.clear()

    def run(self, start_iteration: int = 1, on_iteration: Callable[[Iteration3D], None] | None = None) -> None:
        """Iterate from ``start_iteration`` to ``nr_iter``, calling ``on_iteration`` after each."""
        for it in range(start_iteration, self.settings.nr_iter + 1):
            self.update_sampling(it)
            info = STEPS[self.settings.algorithm](self, it)
            if on_iteration is not None:
                on_iteration(info)


def frame_to_slices(data: torch.Tensor, weight: torch.Tensor, n_classes: int, n_dirs: int, fine: bool,
                    table) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame sums -> padded 2D slice grids of every direction, by the in-plane adjoint.

    ``data`` ``(H, R, 2P)`` stacked ``[Re | Im]`` and ``weight`` ``(H, R, P)`` in the frame's row order
    (coarse: ``(K, D, n_psi)``; fine: child order ``(K, D, n_psi, 4, 2)``, :mod:`vitrify.ml.orient3d`);
    ``table`` the :class:`~vitrify.ml.templates.RotationTable` of the frame's psi grid. Returns
    ``(H K D', m, m//2+1)`` complex data and real weight grids (``D' = D``, fine ``4 D`` directions
    ``4 d + a``), as :func:`~vitrify.ml.templates.scatter_stacked_to_grids` of the directions one by one,
    but with one strided copy into the product's ``(n_psi' P, 3 C)`` operand (no selection, no concatenation).
    """
    h, r, p = weight.shape
    n_psi = r // (n_classes * n_dirs * (N_CHILDREN if fine else 1))
    dirs, n_rows = (4 * n_dirs, 2 * n_psi) if fine else (n_dirs, n_psi)
    c = h * n_classes * dirs
    dense = torch.empty(n_rows * p, 3 * c, device=data.device, dtype=torch.float32)
    view = dense.view(n_rows, p, 3, c)
    if fine:  # rows (i, b, P) <- (H, K, D, i, a, b, [Re|Im], P); columns (H, K, D, a)
        view[:, :, :2].unflatten(3, (h, n_classes, n_dirs, 4)).unflatten(0, (n_psi, 2)).copy_(
            data.view(h, n_classes, n_dirs, n_psi, 4, 2, 2, p).permute(3, 5, 7, 6, 0, 1, 2, 4))
        view[:, :, 2].unflatten(2, (h, n_classes, n_dirs, 4)).unflatten(0, (n_psi, 2)).copy_(
            weight.view(h, n_classes, n_dirs, n_psi, 4, 2, p).permute(3, 5, 6, 0, 1, 2, 4))
    else:  # rows (i, P) <- (H, K, D, i, [Re|Im], P); columns (H, K, D)
        view[:, :, :2].unflatten(3, (h, n_classes, n_dirs)).copy_(
            data.view(h, n_classes, n_dirs, n_psi, 2, p).permute(3, 5, 4, 0, 1, 2))
        view[:, :, 2].unflatten(2, (h, n_classes, n_dirs)).copy_(
            weight.view(h, n_classes, n_dirs, n_psi, p).permute(3, 4, 0, 1, 2))
    view[:, :, 1].mul_(torch.where(table.conj, -1.0, 1.0).reshape(n_rows, p, 1))
    out = torch.sparse.mm(table.matrices[1], dense)  # (m*half, 3C)
    m, half = table.grid_shape
    grids = torch.complex(out[:, :c].t(), out[:, c:2 * c].t()).reshape(c, m, half)
    return symmetrise_column0(grids), symmetrise_column0(out[:, 2 * c:].t().reshape(c, m, half).contiguous())


def em_iteration(ref: Refiner3D, it: int) -> Iteration3D:
    """One EM iteration over all particles: MAP volumes, then every other parameter."""
    model = ref.model
    model.tau2_fudge = ref.settings.tau2_fudge
    idx = torch.arange(ref.particles.n_particles, device=ref.particles.ft.device)
    sums, data, weight = ref.estep(idx, 1, default_max_significant(ref.settings))
    grids = map_reconstruct(data[0], weight[0], model.tau2, model.tau2_fudge, model.current_radius, ref.shells,
                            ref.settings.minres_map)
    vols = volumes_from_grids(grids, model.box_px)
    empty = (sums.class_weight <= 0).to(vols.device)
    model.refs = torch.where(empty[:, None, None, None], model.refs, vols)
    ref.finish(sums, weight, 0.0, idx)
    return Iteration3D(it, ref.n_total, True, tau2_fudge=model.tau2_fudge, healpix_order=ref.orientations.order)


def vdam_iteration(ref: Refiner3D, it: int) -> Iteration3D:
    """One VDAM iteration: mini-batch E-step, moments, regularised gradient step, moving averages."""
    model, sched, s = ref.model, ref.schedule, ref.settings
    model.tau2_fudge = sched.tau2_fudge_at(it)
    size = sched.subset_size(it)
    n, dev = ref.n_total, ref.particles.ft.device
    if size < 0:
        idx = torch.arange(n, device=dev)
    else:
        gen = torch.Generator().manual_seed(int(s.seed) + it)
        idx = torch.randperm(n, generator=gen)[:size].sort().values.to(dev)
    n_selected, idx = idx.numel(), ref.held(idx)  # under ranks: those of the selection this rank holds
    sums, data, weight = ref.estep(idx, 2, default_max_significant(s))
    active = sums.class_weight > 0
    update_moments_inside(ref.moments, data, weight, volume_grids(model.refs), model.current_radius, ref.shells,
                          active)
    skip = ~active.clone()
    replaced = None
    if sched.replaces_classes(it) and model.n_classes > 1:
        err = (preconditioned_gradient(ref.moments).abs() ** 2).mean(dim=(-2, -1)).double()
        replaced = choose_replacement(err, model.pdf_class.to(err.device), s.class_inactivity_threshold)
        if replaced is not None:
            _replace_class(ref, *replaced)
            skip[replaced[0]] = True
    steps = torch.tensor([sched.effective_stepsize(it, float(p)) for p in model.pdf_class])
    model.refs = gradient_step(model.refs, ref.moments, steps, model.tau2_fudge, model.current_radius, skip,
                               ref.shells)
    ref.finish(sums, weight, s.mu if size > 0 else 0.0, idx)
    return Iteration3D(it, n_selected, size < 0, stepsize=sched.stepsize_at(it), tau2_fudge=model.tau2_fudge,
                       healpix_order=ref.orientations.order, replaced=replaced)


def _replace_class(ref: Refiner3D, a: int, b: int) -> None:
    """Copy class ``b`` into the inactive class ``a`` (volume, moments, fraction, spectra)."""
    model, mom = ref.model, ref.moments
    model.refs[a] = model.refs[b]
    mom.m1[:, a] = 0.9 * mom.m1[:, b]
    mom.m2[a] = mom.m2[b]
    pdf = model.pdf_class.clone()
    pdf[a] = pdf[b]
    model.pdf_class = pdf / pdf.sum()
    model.tau2[a] = model.tau2[b]
    model.data_vs_prior[a] = model.data_vs_prior[b]


STEPS: dict[str, Callable[[Refiner3D, int], Iteration3D]] = {"em": em_iteration, "vdam": vdam_iteration}

"""The iteration loop of 2D classification, with EM and VDAM M-steps as a dispatch table.

:class:`Classifier2D` owns the model, the particles and (VDAM) the moments; each
iteration picks the particles (all for EM; a reshuffled mini-batch for VDAM, seeded by
``seed + it``), runs the E-step pass and the algorithm's M-step, then flattens the
solvent and moves the Fourier window. A callback receives every finished iteration
(the job writes RELION's files there and checks for abort requests).

Data-parallel (:class:`Ranks`, under ``torchrun``): each rank holds one contiguous shard of
the particles (:func:`shard_rows`; images, CTFs and assignments of those rows only) and runs the
same loop on the same model; each iteration's selection is drawn over all particles, each rank
runs the E-step of the selected particles it holds, then the E-step sums (and two numbers: the
log-likelihood and pmax totals) are all-reduced (torch.distributed), so every rank does the same
M-step and holds the same model. Assignments stay on their rank; :meth:`Classifier2D.all_particles`
gathers them to rank 0 when the job writes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vitrify.core.fourier import shell_index_2d
from vitrify.ml.expectation import EStepSettings, Sampling, TemplateCache, coarse_radius, expectation
from vitrify.ml.fourier2d import images_from_padded, padded_ft
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.mstep import (data_vs_prior, map_reconstruct, next_radius,
                              reference_tau2, sums_to_grids, update_class_stats, update_sigma2)
from vitrify.ml.schedules import VdamSchedule
from vitrify.ml.junk2d import aligned_average_grids, average_from_grids, misfit
from vitrify.ml.starts import flatten_solvent
from vitrify.ml.vdam import (Moments, choose_replacement, gradient_step, half_gradients,
                             preconditioned_gradient, update_moments)
from vitrify.ml.window import FourierWindow


@dataclass(frozen=True)
class EngineSettings:
    """Algorithm settings of a 2D classification run (validated by the job's Options)."""

    algorithm: str = "vdam"
    nr_iter: int = 200
    tau2_fudge: float = 2.0
    particle_diameter_px: float = 40.0
    adaptive_fraction: float = 0.999
    max_significant: int = -1
    class_inactivity_threshold: float = 0.1
    replacement_source: str = "largest"
    mu: float = 0.9
    minres_map: int = 5
    incr_size: int = 10
    seed: int = 1
    budget_bytes: int = 64 * 2 ** 20
    flatten_solvent: bool = True
    ini_subset: int = -1
    fin_subset: int = -1
    grad_em_iters: int = 0
    oversampling: int = 1
    posterior_power: float = 1.0
    outlier_z: float = 0.0


def shard_rows(n_particles: int, world: int, rank: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of the particles that ``rank`` of ``world`` holds.

    Contiguous shards (reading whole stretches of the stacks), sizes within 2 of each other; every
    start is even, so a particle's local index has the parity of its row, which picks its half set
    in VDAM (the E-step's ``index % 2``).

    >>> [shard_rows(61, 3, r) for r in range(3)]
    [(0, 20), (20, 40), (40, 61)]
    """
    def start(r: int) -> int:
        return n_particles if r >= world else 2 * ((r * n_particles) // (2 * world))

    return start(rank), start(rank + 1)


@dataclass
class Ranks:
    """The ``rank`` of this process among ``world`` data-parallel ranks (an initialised torch.distributed
    group) over ``n_total`` particles; ``reduced_bytes`` counts the bytes this rank has all-reduced,
    ``gathered_bytes`` those rank 0 has received from the others."""

    rank: int
    world: int
    n_total: int
    reduced_bytes: int = 0
    gathered_bytes: int = 0

    @property
    def rows(self) -> tuple[int, int]:
        """The rows ``[start, stop)`` of the particles this rank holds."""
        return shard_rows(self.n_total, self.world, self.rank)

    def part(self, n_total: int) -> "Ranks":
        """The same ranks over another set of ``n_total`` particles (one half set of a gold-standard
        refinement: each rank holds the shard :func:`shard_rows` of that set); counters start at 0."""
        return Ranks(self.rank, self.world, n_total)

    def all_reduce(self, tensor: torch.Tensor) -> None:
        """Sum ``tensor`` (real or complex, contiguous) over the ranks, in place."""
        import torch.distributed as dist

        flat = tensor if tensor.is_contiguous() else tensor.contiguous()
        dist.all_reduce(torch.view_as_real(flat) if flat.is_complex() else flat, op=dist.ReduceOp.SUM)
        if flat is not tensor:
            tensor.copy_(flat)
        self.reduced_bytes += tensor.numel() * tensor.element_size()

    def sum_values(self, values: list[float], device: torch.device) -> list[float]:
        """``values`` summed over the ranks (float64; one collective)."""
        totals = torch.tensor(values, dtype=torch.float64, device=device)
        self.all_reduce(totals)
        return totals.tolist()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on any rank (one collective)."""
        value = torch.tensor([int(flag)], dtype=torch.int32, device=device)
        self.all_reduce(value)
        return bool(value.item() > 0)

    def all_gather_values(self, values: list[float], device: torch.device) -> list[list[float]]:
        """``values`` of every rank, in rank order, on every rank (a few numbers each)."""
        import torch.distributed as dist

        mine = torch.tensor(values, dtype=torch.float64, device=device)
        out = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(out, mine)
        return [t.tolist() for t in out]

    def all_gather_text(self, text: str) -> list[str]:
        """``text`` of every rank, in rank order, on every rank (a message, an error)."""
        import torch.distributed as dist

        out: list[object] = [None] * self.world
        dist.all_gather_object(out, text)
        return [str(t) for t in out]

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """Gather every rank's rows ``tensor`` ``(rows, ...)``, concatenated in row order, on
        rank 0 ``(n_total, ...)``; None on the other ranks. Shards are padded to the largest."""
        import torch.distributed as dist

        sizes = [shard_rows(self.n_total, self.world, r) for r in range(self.world)]
        longest = max(stop - start for start, stop in sizes)
        padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.world)] if self.rank == 0 else None
        dist.gather(padded, parts, dst=0)
        if self.rank > 0:
            return None
        self.gathered_bytes += (self.world - 1) * padded.numel() * padded.element_size()
        return torch.cat([part[: stop - start] for part, (start, stop) in zip(parts, sizes)])


#: fields of the E-step sums that are not sums (indices, scratch, timing); FrameSums' psi grid
_NOT_SUMS = {"shell_of", "pending_model_term", "clock", "psi_deg"}
#: per-particle state of the particles (what the job writes and a continued run reads back)
PARTICLE_FIELDS = ("offset_px", "class_index", "psi_deg", "pmax", "n_significant", "log_likelihood", "group")


def _sum_tensors(obj) -> list[torch.Tensor]:
    """The summed tensors of E-step sums ``obj`` (frames included), in field order."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in _NOT_SUMS:
            continue
        if isinstance(value, torch.Tensor):
            out.append(value)
        elif isinstance(value, dict):
            for frame in value.values():
                out += _sum_tensors(frame)
    return out


def all_reduce_pass(sums, ranks: Ranks, frames: bool = True) -> None:
    """After each rank's E-step on the selected particles it holds: every rank gets the sums of
    the whole selection (``frames`` False: all but the template-frame sums, which the 3D engine
    all-reduces after inserting them into its 3D grids, a smaller array)."""
    for tensor in _sum_tensors(sums if frames else dataclasses.replace(sums, frames={})):
        ranks.all_reduce(tensor)
    counts = [f.name for f in dataclasses.fields(sums) if isinstance(getattr(sums, f.name), int)]
    totals = torch.tensor([getattr(sums, name) for name in counts], dtype=torch.float64,
                          device=sums.class_weight.device)
    ranks.all_reduce(totals)
    for name, total in zip(counts, totals.tolist()):
        setattr(sums, name, int(round(total)))


@dataclass
class IterationInfo:
    """What one iteration did (for logs and outputs)."""

    iteration: int
    n_particles: int
    full_pass: bool
    stepsize: float = 0.0
    tau2_fudge: float = 1.0
    replaced: tuple[int, int] | None = None
    extra: dict = field(default_factory=dict)


class Classifier2D:
    """EM / VDAM 2D classification on prepared particles."""

    def __init__(self, settings: EngineSettings, model: MlModel, particles: ParticleSet,
                 window: FourierWindow, sampling: Sampling, moments: Moments | None = None,
                 ranks: Ranks | None = None) -> None:
        self.settings = settings
        self.ranks = ranks
        self.model = model
        self.particles = particles
        self.window = window
        self.sampling = sampling
        self.cache = TemplateCache()
        self.n_total = particles.n_particles if ranks is None else ranks.n_total
        self.schedule = VdamSchedule(nr_iter=settings.nr_iter, n_particles=self.n_total,
                                     n_classes=model.n_classes, tau2_fudge=settings.tau2_fudge,
                                     ini_subset=settings.ini_subset, fin_subset=settings.fin_subset,
                                     grad_em_iters=settings.grad_em_iters)
        m = model.pad * model.box_px
        self.moments = moments if moments is not None else (
            Moments.zeros(model.n_classes, m, model.refs.device) if settings.algorithm == "vdam" else None)

    def run(self, start_iteration: int = 1,
            on_iteration: Callable[[IterationInfo], None] | None = None) -> None:
        """Iterate from ``start_iteration`` to ``nr_iter``, calling ``on_iteration`` after each."""
        for it in range(start_iteration, self.settings.nr_iter + 1):
            info = STEPS[self.settings.algorithm](self, it)
            if on_iteration is not None:
                on_iteration(info)

    # -- shared pieces -------------------------------------------------------------
    def held(self, indices: torch.Tensor) -> torch.Tensor:
        """The local indices of the particles of ``indices`` (rows of all particles) this rank holds."""
        if self.ranks is None:
            return indices
        start, stop = self.ranks.rows
        return indices[(indices >= start) & (indices < stop)] - start

    def all_particles(self) -> ParticleSet | None:
        """Every particle's state (:data:`PARTICLE_FIELDS`; no images or CTFs under ranks): this
        rank's particles alone, or gathered to rank 0 under ranks (None on the others; a collective)."""
        if self.ranks is None:
            return self.particles
        full = {name: self.ranks.gather_rows(getattr(self.particles, name)) for name in PARTICLE_FIELDS}
        if self.ranks.rank > 0:
            return None
        n, dev = self.n_total, self.particles.ft.device
        return ParticleSet(ft=torch.zeros(n, 0, dtype=torch.complex64, device=dev),
                           ctf=torch.zeros(n, 0, device=dev), n_groups=self.particles.n_groups, **full)

    def _estep(self, indices: torch.Tensor, halves: int, max_sig: int):
        s, model = self.settings, self.model
        psi_step = 360.0 / self.sampling.psi_deg.shape[0]
        settings = EStepSettings(adaptive_fraction=s.adaptive_fraction, max_significant=max_sig,
                                 halves=halves, budget_bytes=s.budget_bytes, oversampling=s.oversampling,
                                 posterior_power=s.posterior_power,
                                 coarse_radius=coarse_radius(model.box_px, psi_step, s.particle_diameter_px,
                                                             s.oversampling))
        model.tau2 = reference_tau2(model.refs, self.window)
        if self.settings.outlier_z > 0:
            restrict_outliers(self, self.held(indices))
        sums = expectation(model, self.particles, self.held(indices), self.sampling, self.window, settings,
                           self.cache)
        if self.ranks is not None:
            all_reduce_pass(sums, self.ranks)
        p = self.window.pixels_within(model.current_radius)
        data, weight = sums_to_grids(sums, lambda psi: self.cache.table(psi, self.window, p, model.pad),
                                     model.n_classes)
        return sums, data, weight

    def _finish(self, sums, weight: torch.Tensor, mu: float, indices: torch.Tensor) -> None:
        model = self.model
        update_sigma2(model, sums, self.window, mu)
        update_class_stats(model, sums, mu)
        model.data_vs_prior = data_vs_prior(weight.sum(0), model.tau2, model.tau2_fudge, model.pad,
                                            model.box_px // 2 + 1)
        if self.settings.flatten_solvent:
            model.refs = flatten_solvent(model.refs, self.settings.particle_diameter_px / 2.0)
        model.current_radius = next_radius(model.data_vs_prior, model.box_px, self.settings.incr_size,
                                           self.settings.minres_map)
        if self.ranks is None:
            model.log_likelihood = float(self.particles.log_likelihood[indices].sum())
            model.ave_pmax = float(self.particles.pmax[indices].mean())
            return
        mine = self.held(indices)
        totals = torch.stack([self.particles.log_likelihood[mine].sum(),
                              self.particles.pmax[mine].double().sum()])
        self.ranks.all_reduce(totals)
        model.log_likelihood = float(totals[0])
        model.ave_pmax = float(totals[1]) / max(int(indices.numel()), 1)


def em_iteration(clf: Classifier2D, it: int) -> IterationInfo:
    """One EM iteration over all particles: MAP references, then every other parameter."""
    model = clf.model
    model.tau2_fudge = clf.settings.tau2_fudge
    idx = torch.arange(clf.n_total, device=clf.particles.ft.device)
    sums, data, weight = clf._estep(idx, 1, max(clf.settings.max_significant, 0))
    grids = map_reconstruct(data[0], weight[0], model.tau2, model.tau2_fudge, model.pad,
                            model.current_radius, clf.settings.minres_map)
    refs = images_from_padded(grids, model.box_px)
    empty = (sums.class_weight <= 0).to(refs.device)
    model.refs = torch.where(empty[:, None, None], torch.zeros_like(refs), refs)
    clf._finish(sums, weight, 0.0, idx)
    return IterationInfo(it, idx.numel(), True, tau2_fudge=model.tau2_fudge)


def vdam_iteration(clf: Classifier2D, it: int) -> IterationInfo:
    """One VDAM iteration: mini-batch E-step, moments, regularised gradient step, EMAs."""
    model, sched, s = clf.model, clf.schedule, clf.settings
    if not sched.is_grad(it):
        return em_iteration(clf, it)
    model.tau2_fudge = sched.tau2_fudge_at(it)
    size = sched.subset_size(it)
    n = clf.n_total
    dev = clf.particles.ft.device
    if size < 0:
        idx = torch.arange(n, device=dev)
    else:
        gen = torch.Generator().manual_seed(int(s.seed) + it)
        idx = torch.randperm(n, generator=gen)[:size].sort().values.to(dev)
    max_sig = s.max_significant if s.max_significant >= 0 else 5 * model.n_classes
    sums, data, weight = clf._estep(idx, 2, max_sig)
    f_pad = padded_ft(model.refs, model.pad).to(torch.complex64)
    grads = half_gradients(data, weight, f_pad)
    m = f_pad.shape[-2]
    inside = shell_index_2d(m, oversampling=model.pad, device=dev) <= model.current_radius
    active = sums.class_weight > 0
    update_moments(clf.moments, grads, inside, active)
    skip = ~active.clone()
    learned = model.n_classes - int(s.outlier_z > 0)  # the outlier class is neither replaced nor copied
    replaced = None
    if sched.replaces_classes(it):
        err = (preconditioned_gradient(clf.moments).abs() ** 2).mean(dim=(-2, -1)).double()
        replaced = choose_replacement(err[:learned], model.pdf_class[:learned].to(err.device),
                                      s.class_inactivity_threshold, s.replacement_source)
        if replaced is not None:
            REPLACE[s.replacement_source](clf, *replaced, idx)
            skip[replaced[0]] = True
    steps = torch.tensor([sched.effective_stepsize(it, float(p)) for p in model.pdf_class])
    model.refs = gradient_step(model.refs, clf.moments, steps, model.tau2_fudge, model.pad,
                               model.current_radius, skip)
    clf._finish(sums, weight, s.mu if size > 0 else 0.0, idx)
    return IterationInfo(it, idx.numel(), size < 0, stepsize=sched.stepsize_at(it),
                         tau2_fudge=model.tau2_fudge, replaced=replaced)


def restrict_outliers(clf: Classifier2D, rows: torch.Tensor) -> None:
    """Before an E-step of the local particles ``rows``: a particle seen before whose :func:`misfit`
    at its last class and pose lies more than ``outlier_z`` robust standard deviations above the
    median of ``rows`` may only take the outlier class, every other particle any class but that one
    (``particles.allowed``, applied in the E-step's coarse pass)."""
    model, parts = clf.model, clf.particles
    k = model.n_classes
    if parts.allowed is None:
        parts.allowed = torch.ones(parts.n_particles, k, dtype=torch.bool, device=parts.ft.device)
    out = k - 1  # the outlier class
    seen = rows[parts.log_likelihood[rows] != 0]
    flagged = torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
    if seen.numel() >= 10:
        bad = misfit(model, parts, seen, clf.window)
        median = bad.median()
        z = (bad - median) / (1.4826 * (bad - median).abs().median()).clamp_min(1e-12)
        flagged[torch.isin(rows, seen[z > clf.settings.outlier_z])] = True
    allowed = torch.ones(rows.shape[0], k, dtype=torch.bool, device=rows.device)
    allowed[:, out] = flagged
    allowed[flagged] = False
    allowed[flagged, out] = True
    parts.allowed[rows] = allowed


def _replace_class(clf: Classifier2D, a: int, b: int, indices: torch.Tensor | None = None) -> None:
    """Copy class ``b`` into the inactive class ``a`` (reference, moments, fraction, spectra)."""
    model, mom = clf.model, clf.moments
    model.refs[a] = model.refs[b]
    mom.m1[:, a] = 0.9 * mom.m1[:, b]
    mom.m2[a] = mom.m2[b]
    pdf = model.pdf_class.clone()
    pdf[a] = pdf[b]
    model.pdf_class = pdf / pdf.sum()
    model.tau2[a] = model.tau2[b]
    model.data_vs_prior[a] = model.data_vs_prior[b]


def _seed_from_worst(clf: Classifier2D, a: int, b: int, indices: torch.Tensor) -> None:
    """Restart the inactive class ``a`` from the particles of this mini-batch ``indices`` that the
    model explains worst: those whose :func:`misfit` lies more than ``OUTLIER_Z`` robust standard
    deviations above the mini-batch's median (at most ``len / K`` of them, the worst first), averaged
    at their current poses and low-passed as the starting references; fresh moments, fraction 1/K.
    With fewer than two such outliers (the model explains every particle) the largest class ``b``
    is copied instead, as ``--replace-from largest`` does."""
    model, mom = clf.model, clf.moments
    mine = clf.held(indices)
    bad = misfit(model, clf.particles, mine, clf.window)
    median = bad.median()
    z = (bad - median) / (1.4826 * (bad - median).abs().median()).clamp_min(1e-12)
    order = torch.argsort(bad, descending=True)[:max(2, int(indices.numel()) // model.n_classes)]
    worst = mine[order[z[order] > OUTLIER_Z]]
    count = torch.tensor([float(worst.numel())], dtype=torch.float64, device=bad.device)
    if clf.ranks is not None:  # every rank takes the same branch
        clf.ranks.all_reduce(count)
    if float(count) < 2:
        _replace_class(clf, a, b)
        return
    data, weight = aligned_average_grids(clf.particles, worst, clf.window, model.pad)
    if clf.ranks is not None:
        clf.ranks.all_reduce(data)
        clf.ranks.all_reduce(weight)
    ref = average_from_grids(data, weight, model.box_px, max(1, round(0.07 * model.box_px)))
    model.refs[a] = flatten_solvent(ref[None], clf.settings.particle_diameter_px / 2.0)[0].to(model.refs.dtype)
    mom.m1[:, a] = 0.0
    mom.m2[a] = 1.0
    pdf = model.pdf_class.clone()
    pdf[a] = 1.0 / model.n_classes
    model.pdf_class = pdf / pdf.sum()


#: robust z-score of the misfit above which a particle counts as unexplained (``--replace-from worst``)
OUTLIER_Z = 3.0

#: replacement source -> what fills the inactive class a (b: the class the source rule chose)
REPLACE: dict[str, Callable[..., None]] = {"largest": _replace_class, "gradient": _replace_class,
                                           "worst": _seed_from_worst}


STEPS: dict[str, Callable[[Classifier2D, int], IterationInfo]] = {
    "em": em_iteration,
    "vdam": vdam_iteration,
}

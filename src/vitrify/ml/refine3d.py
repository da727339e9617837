"""Gold-standard 3D auto-refinement (RELION ``relion_refine --auto_refine --split_random_halves``).

Two :class:`vitrify.ml.inimodel.Refiner3D` engines, one per random half of the particles, each with
its own map, noise spectra and offset prior, never see each other's particles. An iteration runs
both halves' E-steps (global searches over HEALPix directions x psi; local searches around the
previous poses from ``local_order`` on, :mod:`vitrify.ml.local_search`), compares the halves'
unregularised reconstructions by their FSC, and rebuilds both maps regularised by that FSC
(:mod:`vitrify.ml.gold`); the point-group average, the joined low resolution and the solvent mask
follow. The FSC's 0.143 crossing is the current resolution; the next window is that shell plus
``incr_size`` shells. Convergence is RELION's: when the resolution has not improved and the pose
changes have stopped shrinking, the angular sampling gets one order finer (offset range and step
halve) until it is finer than the resolution needs; then the refinement has converged and a final
iteration to Nyquist joins both halves' sums into one map (the half maps are written unfiltered).

Data-parallel (each half's ``Refiner3D.ranks``): every rank holds a shard of each half and the sums
of a half are all-reduced over the ranks for that half alone, so the halves stay independent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from vitrify.core.euler import euler_to_matrix
from vitrify.core.sampling import angular_step_deg
from vitrify.core.symmetry import symmetric_angular_distance_deg
from vitrify.ml.expectation import make_sampling
from vitrify.ml.gold import (grid_fsc, half_map_fsc, join_low_resolution, regularised_volume, resolution_angst,
                             resolution_shell, unregularised_volume)
from vitrify.ml.inimodel import Refiner3D, Settings3D, default_max_significant
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.mstep import update_class_stats, update_sigma2
from vitrify.ml.slices import volume_grids
from vitrify.ml.starts import initial_sigma2
from vitrify.ml.vdam3d import symmetrise
from vitrify.ml.window import FourierWindow

MIN_OFFSET_RANGE_STEPS = 1.5


@dataclass(frozen=True)
class RefineSettings:
    """Settings of a gold-standard refinement (validated by the job's Options).

    ``join_halves_shell``: Fourier shell below which the halves' maps are averaged (RELION
    ``--low_resol_join_halves 40`` Å); ``local_order``: HEALPix order from which the searches are local
    (RELION ``--auto_local_healpix_order``); ``local_sigma_steps``: the local search's angular sigma in
    fine steps; ``patience``: iterations without resolution gain and without shrinking pose changes
    before the sampling gets finer (RELION: 1).
    """

    particle_diameter_px: float
    symmetry: str = "C1"
    healpix_order: int = 2
    local_order: int = 4
    max_order: int = 5
    offset_range_px: float = 5.0
    offset_step_px: float = 1.0
    tau2_fudge: float = 1.0
    incr_size: int = 10
    max_iter: int = 50
    join_halves_shell: float = 0.0
    minres_map: int = 5
    local_sigma_steps: float = 2.0
    patience: int = 1


@dataclass
class RefineState:
    """Where a refinement stands (written to and read from ``run_itNNN_optimiser.star``)."""

    iteration: int = 0
    healpix_order: int = 2
    offset_range_px: float = 5.0
    offset_step_px: float = 1.0
    radius: int = 10
    resolution_angst: float = math.inf
    best_resolution_angst: float = math.inf
    iters_wo_gain: int = 0
    iters_wo_large_changes: int = 0
    change_deg: float = math.inf
    change_offset_px: float = math.inf
    smallest_change_deg: float = math.inf
    smallest_change_offset_px: float = math.inf
    converged: bool = False
    final: bool = False
    fsc: torch.Tensor | None = None
    log: list[str] = field(default_factory=list)

    def local(self, settings: RefineSettings) -> bool:
        """Whether this iteration's searches are local."""
        return self.healpix_order >= settings.local_order


@dataclass(frozen=True)
class HalfResult:
    """One half's E-step: padded sums ``(g, g, g//2+1)`` and how much the poses moved."""

    data: torch.Tensor
    weight: torch.Tensor
    change_deg: float
    change_offset_px: float


class GoldStandard:
    """Two independent half-set refinements tied by their FSC (:mod:`vitrify.ml.gold`).

    ``halves`` are two :class:`Refiner3D` (K = 1, EM settings) over disjoint particle sets;
    ``solvent_mask`` ``(n, n, n)`` in [0, 1] multiplies the maps (a soft sphere of the particle diameter
    or the user's mask); ``fsc_mask`` multiplies the halves before their FSC (None: unmasked, RELION's
    default: a shared mask correlates the halves' low resolution into higher shells).
    """

    def __init__(self, settings: RefineSettings, halves: tuple[Refiner3D, Refiner3D], state: RefineState,
                 solvent_mask: torch.Tensor, fsc_mask: torch.Tensor | None = None,
                 local_estep: Callable | None = None) -> None:
        self.settings, self.halves, self.state = settings, halves, state
        self.solvent_mask = solvent_mask
        self.fsc_mask = fsc_mask
        self.local_estep = local_estep
        self.n = halves[0].model.box_px
        self.pixel_size_angst = halves[0].model.pixel_size_angst

    # -- one half ----------------------------------------------------------------------------
    def _prepare(self, ref: Refiner3D) -> None:
        st = self.state
        ref.model.current_radius = st.radius
        ref.set_order(st.healpix_order)
        ref.sampling = make_sampling(30.0, st.offset_range_px, st.offset_step_px, ref.model.refs.device)

    def _estep_half(self, ref: Refiner3D) -> HalfResult:
        """E-step of one half against its own map; noise spectra and offset prior updated."""
        self._prepare(ref)
        prev_angles, prev_offsets = ref.angles_deg.clone(), ref.particles.offset_px.clone()
        grids = volume_grids(ref.model.refs)
        if self.state.local(self.settings) and self.local_estep is not None:
            sums, data, weight = ref.reduce(*self.local_estep(ref, grids, self.local_sigma_deg()))
        else:
            idx = torch.arange(ref.particles.n_particles, device=ref.particles.ft.device)
            sums, data, weight = ref.estep(idx, 1, default_max_significant(ref.settings), grids=grids)
        update_sigma2(ref.model, sums, ref.window, 0.0)
        update_class_stats(ref.model, sums, 0.0)
        n = ref.particles.n_particles
        ll, pmax, change_deg, change_px = ref.totals([
            float(ref.particles.log_likelihood.sum()), float(ref.particles.pmax.double().sum()),
            n * pose_change_deg(prev_angles, ref.angles_deg, self.settings.symmetry),
            float((ref.particles.offset_px - prev_offsets).norm(dim=1).double().sum())])
        total = max(ref.n_total, 1)
        ref.model.log_likelihood, ref.model.ave_pmax = ll, pmax / total
        return HalfResult(data[0, 0], weight[0, 0], change_deg / total, change_px / total)

    def local_sigma_deg(self) -> float:
        """Angular sigma of the local searches: ``local_sigma_steps`` fine steps (RELION: 2)."""
        return self.settings.local_sigma_steps * angular_step_deg(self.state.healpix_order) / 2.0

    # -- maps --------------------------------------------------------------------------------
    def _half_fsc(self, results: list[HalfResult], radius: int) -> torch.Tensor:
        """Gold-standard FSC of the halves' unregularised averages: in Fourier space on the particles' grid
        (C1, no mask); for a point group of the symmetrised averages (the searches cover the asymmetric
        unit, so each half's raw sums hold one copy of every view: RELION symmetrises its back-projectors
        before comparing); in the solvent mask when ``--solvent-flatten-fsc``."""
        a, b = results
        sym = self.settings.symmetry.strip().upper() != "C1"
        if self.fsc_mask is None and not sym:
            return grid_fsc(a.data, a.weight, b.data, b.weight, self.n)
        v = [unregularised_volume(r.data, r.weight, self._shells(), radius, self.n) for r in results]
        if sym:
            v = [symmetrise(x[None], self.settings.symmetry)[0] for x in v]
        mask = None if self.fsc_mask is None else self.fsc_mask.to(v[0].device)
        return half_map_fsc(v[0], v[1], mask)

    def _shells(self) -> torch.Tensor:
        return self.halves[0].shells

    def _finish_maps(self, volumes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Point-group average, solvent mask, then the joined low resolution: the shared (averaged) part stays
        below ``join_halves_shell`` on the box's grid (masking after the join, RELION's order, spreads the
        shared low resolution over the mask's Fourier width into both halves' next shells; on pure noise
        that shared content made the halves agree 1-2 shells further)."""
        mask = self.solvent_mask.to(volumes[0].device)
        sym = [symmetrise(v[None], self.settings.symmetry)[0] * mask for v in volumes]
        a, b = join_low_resolution(sym[0], sym[1], self.settings.join_halves_shell)
        return [a, b]

    def iterate(self) -> RefineState:
        """One gold-standard iteration (both halves); updates the maps, resolution and convergence."""
        st, s = self.state, self.settings
        st.iteration += 1
        results = [self._estep_half(ref) for ref in self.halves]
        shells, n = self._shells(), self.n
        curve = self._half_fsc(results, st.radius)
        vols = [regularised_volume(r.data, r.weight, curve, s.tau2_fudge, shells, st.radius, n, s.minres_map)
                for r in results]
        for ref, vol in zip(self.halves, self._finish_maps(vols)):
            ref.model.refs = vol[None].float()
        st.fsc = curve.cpu()
        self._update_resolution(curve)
        self._update_convergence(results)
        return st

    def _update_resolution(self, curve: torch.Tensor) -> None:
        """Current resolution (FSC 0.143) and the next window: that shell + ``incr_size`` (more when
        the FSC is still high at the window's edge, RELION's ``has_high_fsc_at_limit``)."""
        st, s, n = self.state, self.settings, self.n
        st.resolution_angst = resolution_angst(curve, n, self.pixel_size_angst)
        shell = max(resolution_shell(st.resolution_angst, n, self.pixel_size_angst), s.minres_map)
        radius = shell + s.incr_size
        if float(curve[min(st.radius, curve.shape[0] - 1)]) > 0.2:
            radius = max(radius, st.radius + max(s.incr_size, st.radius // 4))
        st.radius = int(min(n // 2 - 1, radius))

    def _update_convergence(self, results: list[HalfResult]) -> None:
        """RELION's auto-refine bookkeeping: gain counters, finer sampling, convergence."""
        st, s = self.state, self.settings
        st.change_deg = sum(r.change_deg for r in results) / len(results)
        st.change_offset_px = sum(r.change_offset_px for r in results) / len(results)
        if st.resolution_angst < st.best_resolution_angst * (1 - 1e-4):
            st.best_resolution_angst, st.iters_wo_gain = st.resolution_angst, 0
        else:
            st.iters_wo_gain += 1
        if self._large_changes():
            st.iters_wo_large_changes = 0
        else:
            st.iters_wo_large_changes += 1
        st.smallest_change_deg = min(st.smallest_change_deg, st.change_deg)
        st.smallest_change_offset_px = min(st.smallest_change_offset_px, st.change_offset_px)
        if st.iteration >= s.max_iter:
            st.converged = True
            st.log.append(f"stopped at the iteration limit ({s.max_iter})")
            return
        if st.iters_wo_gain < s.patience or st.iters_wo_large_changes < s.patience:
            return
        if self.fine_enough():
            st.converged = True
            st.log.append(f"converged at iteration {st.iteration}: {st.resolution_angst:.2f} Å, order "
                          f"{st.healpix_order}")
            return
        self._finer_sampling()

    def _large_changes(self) -> bool:
        """Poses still move: the mean angular change shrank by more than 10 % and exceeds 1.5 fine steps
        (or the offsets shrank by more than 10 % and exceed 1.5 fine offset steps)."""
        st = self.state
        fine_deg, fine_px = angular_step_deg(st.healpix_order) / 2.0, st.offset_step_px / 2.0
        angles = st.change_deg < 0.9 * st.smallest_change_deg and st.change_deg > 1.5 * fine_deg
        offsets = st.change_offset_px < 0.9 * st.smallest_change_offset_px and st.change_offset_px > 1.5 * fine_px
        return angles or offsets

    def fine_enough(self) -> bool:
        """The fine angular step is below the arc of half a resolution element at the particle's
        radius (or the order is at ``max_order``)."""
        st, s = self.state, self.settings
        if st.healpix_order >= s.max_order:
            return True
        res = st.resolution_angst
        needed = math.degrees(res / (s.particle_diameter_px * self.pixel_size_angst)) if math.isfinite(res) else 90.0
        return angular_step_deg(st.healpix_order) / 2.0 <= needed

    def _finer_sampling(self) -> None:
        st = self.state
        st.healpix_order += 1
        st.offset_step_px /= 2.0
        st.offset_range_px = max(st.offset_range_px / 2.0, MIN_OFFSET_RANGE_STEPS * st.offset_step_px)
        st.iters_wo_gain = st.iters_wo_large_changes = 0
        st.smallest_change_deg = st.smallest_change_offset_px = math.inf
        fine = angular_step_deg(st.healpix_order) / 2
        st.log.append(f"iteration {st.iteration}: order {st.healpix_order} ({fine:.2f}° fine), offsets "
                      f"{st.offset_range_px:.2f} / {st.offset_step_px:.2f} px"
                      + (", local searches" if st.local(self.settings) else ""))

    # -- the last iteration --------------------------------------------------------------------
    def final_iteration(self) -> "FinalMaps":
        """E-step to Nyquist, unfiltered symmetrised half maps, their FSC and the joined map."""
        st, s, n = self.state, self.settings, self.n
        st.iteration += 1
        st.final = True
        st.radius = n // 2 - 1
        results = [self._estep_half(ref) for ref in self.halves]
        shells = self._shells()
        unreg = [symmetrise(unregularised_volume(r.data, r.weight, shells, st.radius, n)[None], s.symmetry)[0]
                 for r in results]
        curve = self._half_fsc(results, st.radius)
        data = results[0].data + results[1].data
        weight = results[0].weight + results[1].weight
        joined = regularised_volume(data, weight, curve, s.tau2_fudge, shells, st.radius, n, s.minres_map, whole=True)
        joined = symmetrise(joined[None], s.symmetry)[0]
        st.fsc = curve.cpu()
        st.resolution_angst = resolution_angst(curve, n, self.pixel_size_angst)
        for ref, vol in zip(self.halves, unreg):
            ref.model.refs = vol[None].float()
        return FinalMaps(joined.float(), unreg[0].float(), unreg[1].float(), curve.cpu(), st.resolution_angst)

    def run(self, on_iteration: Callable[[RefineState], None] | None = None) -> "FinalMaps":
        """Iterate until converged, then the final iteration; ``on_iteration`` after every one."""
        while not self.state.converged:
            self.iterate()
            if on_iteration is not None:
                on_iteration(self.state)
        final = self.final_iteration()
        if on_iteration is not None:
            on_iteration(self.state)
        return final


@dataclass(frozen=True)
class FinalMaps:
    """The refinement's result: the joined map, the unfiltered half maps ``(n, n, n)``, their FSC."""

    joined: torch.Tensor
    half1: torch.Tensor
    half2: torch.Tensor
    fsc: torch.Tensor
    resolution_angst: float


def pose_change_deg(before: torch.Tensor, after: torch.Tensor, symmetry: str) -> float:
    """Mean angle (degrees) between Euler angles ``(N, 3)`` before and after, up to the point group."""
    if before.shape[0] == 0:
        return 0.0
    a = euler_to_matrix(before[:, 0], before[:, 1], before[:, 2]).double()
    b = euler_to_matrix(after[:, 0], after[:, 1], after[:, 2]).double()
    return float(symmetric_angular_distance_deg(a, b, symmetry).mean())


def split_halves(n_particles: int, seed: int, subsets: torch.Tensor | None = None) -> torch.Tensor:
    """``(N,)`` long random subset 1 or 2 per particle (``subsets`` kept when given, RELION's
    rlnRandomSubset); halves of equal size (the first gets the odd one)."""
    if subsets is not None:
        return subsets.long()
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n_particles, generator=gen)
    out = torch.empty(n_particles, dtype=torch.long)
    out[perm[: (n_particles + 1) // 2]] = 1
    out[perm[(n_particles + 1) // 2:]] = 2
    return out


def subset_particles(particles: ParticleSet, index: torch.Tensor) -> ParticleSet:
    """The particles ``index`` ``(M,)`` of a set (a copy: the halves' assignments are their own)."""
    return ParticleSet(ft=particles.ft[index], ctf=particles.ctf[index], group=particles.group[index],
                       n_groups=particles.n_groups, offset_px=particles.offset_px[index].clone())


def start_model(volume: torch.Tensor, particles: ParticleSet, window: FourierWindow, pixel_size_angst: float,
                sigma_offset_px: float, radius: int) -> MlModel:
    """Iteration-0 model of one half: the (already low-passed) start map ``(n, n, n)``, the noise spectra
    of the half's particles (:func:`vitrify.ml.starts.initial_sigma2`), window ``radius``."""
    n = volume.shape[-1]
    zeros = torch.zeros(1, n // 2 + 1, dtype=torch.float64)
    return MlModel(refs=volume.float()[None].to(particles.ft.device), pdf_class=torch.ones(1, dtype=torch.float64),
                   sigma2=initial_sigma2(particles, window), tau2=zeros, data_vs_prior=zeros.clone(),
                   sigma2_offset_px=float(sigma_offset_px) ** 2, tau2_fudge=1.0, current_radius=int(radius),
                   pixel_size_angst=pixel_size_angst, pad=2)


def make_halves(particles: ParticleSet, subsets: torch.Tensor, volumes: tuple[torch.Tensor, torch.Tensor],
                window: FourierWindow, engine: Settings3D, state: RefineState, pixel_size_angst: float,
                sigma_offset_px: float | tuple[float, float]) -> tuple[tuple[Refiner3D, Refiner3D], list[torch.Tensor]]:
    """Two :class:`Refiner3D` over the particles of subset 1 and 2 (rows ``index[h]`` of the input)."""
    refs, index = [], []
    sig = sigma_offset_px if isinstance(sigma_offset_px, tuple) else (sigma_offset_px, sigma_offset_px)
    for h in (1, 2):
        idx = torch.nonzero(subsets == h).flatten().to(particles.ft.device)
        part = subset_particles(particles, idx)
        model = start_model(volumes[h - 1], part, window, pixel_size_angst, sig[h - 1], state.radius)
        sampling = make_sampling(30.0, state.offset_range_px, state.offset_step_px, particles.ft.device)
        refs.append(Refiner3D(replace(engine, healpix_order=state.healpix_order), model, part, window, sampling))
        index.append(idx)
    return (refs[0], refs[1]), index


def correct_greyscale(ref: Refiner3D, n_use: int = 400, rounds: int = 2) -> float:
    """Scale a half's start map to the particles' greyscale (RELION ``--firstiter_cc`` protects against
    a map on another scale): ``rounds`` E-steps of ``n_use`` particles at HEALPix order 1 in the current
    window, each followed by the least-squares factor ``Re sum D conj(F) / sum W |F|^2`` of the
    back-projected sums ``D``, ``W`` and the map's transform ``F`` (shells 1 .. window). Returns the total
    factor; the particles' assignments are left as they were.
    """
    parts, model = ref.particles, ref.model
    idx = ref.held(torch.arange(min(n_use, ref.n_total), device=parts.ft.device))
    saved = [t.clone() for t in (parts.offset_px, parts.psi_deg, parts.pmax, parts.n_significant,
                                 parts.log_likelihood, ref.angles_deg)]
    order = ref.orientations.order
    ref.set_order(1)
    inside = (ref.shells <= model.current_radius) & (ref.shells >= 1)
    total = 1.0
    for _ in range(rounds):
        grids = volume_grids(model.refs)
        _, data, weight = ref.estep(idx, 1, default_max_significant(ref.settings), grids=grids)
        f, d, w = grids[0], data[0, 0], weight[0, 0]
        num = float(torch.where(inside, (d * f.conj()).real, torch.zeros_like(w)).double().sum())
        den = float(torch.where(inside, w * f.abs() ** 2, torch.zeros_like(w)).double().sum())
        factor = num / den if den > 0 and num > 0 else 1.0
        model.refs = model.refs * factor
        total *= factor
    ref.set_order(order)
    for dst, src in zip((parts.offset_px, parts.psi_deg, parts.pmax, parts.n_significant, parts.log_likelihood,
                         ref.angles_deg), saved):
        dst.copy_(src)
    return total

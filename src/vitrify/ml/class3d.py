"""3D classification (RELION ``relion.class3d``) on the 3D engine of :mod:`vitrify.ml.inimodel`.

K classes start from one reference map, low-passed to ``ini_high`` (RELION's default 60 Å) and
masked. With identical starts every class would receive the same posterior for ever, so, as
RELION does (``do_generate_seeds``), the first iteration assigns every particle to one random
class: one E-step against the (common) reference with K random half-sets
(:func:`vitrify.ml.expectation.run_pass`'s ``half_of``) gives K independent reconstructions.
Later iterations are the engine's own EM (or VDAM) iterations over all K classes. A solvent
mask, when given, replaces the soft sphere of solvent flattening.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch

from vitrify.core.fourier import shell_index_3d
from vitrify.ml.inimodel import STEPS, Iteration3D, Refiner3D, default_max_significant
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.mstep import next_radius, update_class_stats, update_sigma2
from vitrify.ml.slices import volumes_from_grids
from vitrify.ml.starts import initial_sigma2
from vitrify.ml.starts3d import lowpass3d
from vitrify.ml.vdam3d import data_vs_prior, flatten_solvent, map_reconstruct, symmetrise
from vitrify.ml.window import FourierWindow


def ini_high_shell(ini_high_angst: float, box_px: int, pixel_size_angst: float) -> int:
    """Fourier shell of the initial low-pass (at least 1).

    >>> ini_high_shell(60.0, 64, 3.0)
    3
    """
    return max(1, int(round(box_px * pixel_size_angst / ini_high_angst)))


def mask_volumes(refs: torch.Tensor, diameter_px: float, mask: torch.Tensor | None) -> torch.Tensor:
    """Solvent flattening of ``(K, n, n, n)``: the mask ``(n, n, n)`` if given, else the soft sphere."""
    if mask is None:
        return flatten_solvent(refs, diameter_px / 2.0)
    return refs * mask.to(refs.device, refs.dtype)


def reference_start(volumes: torch.Tensor, particles: ParticleSet, window: FourierWindow, n_classes: int,
                    diameter_px: float, pixel_size_angst: float, ini_high_angst: float, sigma_offset_px: float,
                    mask: torch.Tensor | None = None) -> MlModel:
    """Iteration-0 model: the references low-passed to ``ini_high_angst``; ``volumes`` ``(n, n, n)`` (one
    reference, in all K classes) or ``(K, n, n, n)`` (one per class)."""
    n = window.box_px
    shell = ini_high_shell(ini_high_angst, n, pixel_size_angst)
    vols = volumes.float().to(particles.ft.device).reshape(-1, n, n, n)
    refs = lowpass3d(vols.expand(n_classes, n, n, n).contiguous() if vols.shape[0] == 1 else vols, shell)
    refs = mask_volumes(refs, diameter_px, mask)
    zeros = torch.zeros(n_classes, n // 2 + 1, dtype=torch.float64)
    return MlModel(refs=refs, pdf_class=torch.full((n_classes,), 1.0 / n_classes, dtype=torch.float64),
                   sigma2=initial_sigma2(particles, window), tau2=zeros, data_vs_prior=zeros.clone(),
                   sigma2_offset_px=float(sigma_offset_px) ** 2, tau2_fudge=1.0,
                   current_radius=min(n // 2 - 1, shell + 10), pixel_size_angst=pixel_size_angst, pad=2)


def random_classes(n_particles: int, n_classes: int, seed: int) -> torch.Tensor:
    """``(N,)`` long: a seeded random class per particle, as balanced as possible (a permutation of
    ``i % K``)."""
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n_particles, generator=gen)
    labels = torch.empty(n_particles, dtype=torch.long)
    labels[order] = torch.arange(n_particles) % n_classes
    return labels


class Classifier3D(Refiner3D):
    """:class:`Refiner3D` with RELION's class3d start (random seeding) and an optional solvent mask."""

    def __init__(self, *args, mask: torch.Tensor | None = None, seed_classes: bool = True, sigma_ang_deg: float = 0.0,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.mask = None if mask is None else mask.to(self.model.refs.device).float()
        self.seed_classes = seed_classes and self.model.n_classes > 1
        self.sigma_ang_deg = float(sigma_ang_deg)

    def estep(self, indices: torch.Tensor, halves: int, max_sig: int, half_of: torch.Tensor | None = None,
              grids: torch.Tensor | None = None):
        """The engine's global E-step, or with ``sigma_ang_deg`` > 0 local searches around the particles'
        previous poses (:func:`vitrify.ml.class3d_local.local_class_estep`)."""
        if self.sigma_ang_deg <= 0:
            return super().estep(indices, halves, max_sig, half_of, grids)
        from vitrify.ml.class3d_local import local_class_estep

        return self.reduce(*local_class_estep(self, indices, halves, self.sigma_ang_deg, half_of))

    def finish(self, sums, weight: torch.Tensor, mu: float, indices: torch.Tensor) -> None:
        """The engine's finish, with the solvent mask instead of the sphere when one is given."""
        super().finish(sums, weight, mu, indices)
        if self.mask is not None:
            self.model.refs = self.model.refs * self.mask

    def run(self, start_iteration: int = 1, on_iteration: Callable[[Iteration3D], None] | None = None) -> None:
        """Iterate to ``nr_iter``; iteration 1 of a K > 1 run from one reference is the random-seeding
        iteration (``seed_classes``; K different references need none)."""
        for it in range(start_iteration, self.settings.nr_iter + 1):
            self.update_sampling(it)
            if it == 1 and not self.seed_classes and self.model.n_classes > 1:
                match_reference_scale(self)
            step = seed_iteration if it == 1 and self.seed_classes else STEPS[self.settings.algorithm]
            info = step(self, it)
            if on_iteration is not None:
                on_iteration(info)


def consensus_pass(ref: Classifier3D, volume: torch.Tensor, halves: torch.Tensor, n_halves: int):
    """One E-step of every particle against one map ``(n, n, n)``, reconstructed per half-set ``halves``
    ``(N,)`` (``0..n_halves-1``): ``(n_halves, n, n, n)`` maps, the sums and the one-class model used."""
    model, s = ref.model, ref.settings
    idx = torch.arange(ref.particles.n_particles, device=ref.particles.ft.device)
    one = replace(model, refs=volume[None], pdf_class=torch.ones(1, dtype=torch.float64), tau2=model.tau2[:1],
                  data_vs_prior=model.data_vs_prior[:1])
    one.tau2_fudge = s.tau2_fudge
    ref.model = one
    try:
        sums, data, weight = ref.estep(idx, n_halves, default_max_significant(s), half_of=halves)
    finally:
        ref.model = model
    tau2 = one.tau2.expand(n_halves, -1).contiguous()
    grids = map_reconstruct(data[:, 0], weight[:, 0], tau2, s.tau2_fudge, one.current_radius, ref.shells,
                            s.minres_map)
    return volumes_from_grids(grids, model.box_px), sums, weight[:, 0], one


def match_reference_scale(ref: Classifier3D) -> torch.Tensor:
    """Scale K different references ``(K, n, n, n)`` to the data's greyscale (RELION's first iteration
    without ``--ref_correct_greyscale`` is a cross-correlation pass for the same reason): the
    particles are aligned to the references' mean and reconstructed, and each reference gets the
    least-squares scale onto that map inside the current window. Returns the ``(K,)`` factors."""
    model = ref.model
    labels = torch.zeros(ref.particles.n_particles, dtype=torch.long, device=ref.particles.ft.device)
    consensus = consensus_pass(ref, model.refs.mean(0), labels, 1)[0][0]
    fc = torch.fft.rfftn(consensus)
    inside = shell_index_3d(model.box_px, device=fc.device) <= model.current_radius
    factors = []
    for k in range(model.n_classes):
        fk = torch.fft.rfftn(model.refs[k])
        num = (fc.conj() * fk).real[inside].sum()
        den = (fk.abs() ** 2)[inside].sum().clamp_min(1e-30)
        factors.append(float(num / den))
    scale = torch.tensor(factors)
    model.refs = model.refs * scale.to(model.refs.device)[:, None, None, None].clamp_min(0.0)
    return scale


def seed_iteration(ref: Classifier3D, it: int) -> Iteration3D:
    """RELION's first class3d iteration: each particle aligned to the common reference and
    reconstructed into one random class (K random subsets -> K different maps)."""
    model, s = ref.model, ref.settings
    k, n = model.n_classes, ref.n_total
    dev = ref.particles.ft.device
    every = random_classes(n, k, s.seed)  # drawn over all particles; under ranks each holds its rows'
    labels = every[slice(*ref.ranks.rows) if ref.ranks is not None else slice(None)].to(dev)
    model.refs, sums, weight, one = consensus_pass(ref, model.refs[0], labels, k)
    model.tau2_fudge = s.tau2_fudge
    tau2 = one.tau2.expand(k, -1).contiguous()
    ref.particles.class_index = labels.clone()
    update_sigma2(one, sums, ref.window, 0.0)  # shares model.sigma2 (updated in place)
    update_class_stats(one, sums, 0.0)
    model.sigma2_offset_px, model.tau2 = one.sigma2_offset_px, tau2
    model.pdf_class = torch.bincount(every, minlength=k).double() / n
    model.data_vs_prior = data_vs_prior(weight, tau2, model.tau2_fudge, ref.shells, model.box_px // 2 + 1)
    model.refs = symmetrise(model.refs, s.symmetry)
    if s.flatten_solvent or ref.mask is not None:
        model.refs = mask_volumes(model.refs, s.particle_diameter_px, ref.mask)
    model.current_radius = next_radius(model.data_vs_prior, model.box_px, s.incr_size, s.minres_map)
    ll, pmax = ref.totals([float(ref.particles.log_likelihood.sum()), float(ref.particles.pmax.double().sum())])
    model.log_likelihood, model.ave_pmax = ll, pmax / max(n, 1)
    return Iteration3D(it, n, True, tau2_fudge=model.tau2_fudge, healpix_order=ref.orientations.order,
                       extra={"seeded": True})


def class_resolution_angst(model: MlModel) -> list[float]:
    """Per-class resolution (Å): the last shell before the class's SSNR falls below 1 (RELION's
    ``rlnEstimatedResolution``); inf for a class with no signal."""
    out = []
    for dvp in model.data_vs_prior:
        below = torch.nonzero(dvp[1:] < 1.0).flatten()
        shell = int(below[0]) if below.numel() else dvp.shape[0] - 1
        out.append(model.resolution_angst(shell) if shell > 0 else math.inf)
    return out

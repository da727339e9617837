"""Junk in 2D classification: the misfit statistic, refilling inactive classes from the worst-fitting
particles, the outlier class and per-particle allowed classes, on tiny simulated data with known junk."""

from __future__ import annotations

import math

import torch
from _ml_synth import make_dataset

from vitrify.ml.expectation import make_sampling
from vitrify.ml.junk2d import aligned_average_grids, average_from_grids
from vitrify.ml.model import ParticleSet
from vitrify.ml.optimiser import Classifier2D, EngineSettings
from vitrify.ml.starts import initial_model, pack_particles
from vitrify.ml.window import make_window

N_BOX = 32


def _classifier(images: torch.Tensor, k: int, algorithm: str, iters: int, **kw) -> Classifier2D:
    win = make_window(N_BOX)
    ft, ctf = pack_particles(images, None, win, 28.0, 3.0)
    n = images.shape[0]
    parts = ParticleSet(ft=ft, ctf=ctf, group=torch.zeros(n, dtype=torch.long), n_groups=1,
                        offset_px=torch.zeros(n, 2))
    model = initial_model(parts, win, k, 28.0, 3.0, 2.0, seed=3, sigma_offset_px=3.0)
    settings = EngineSettings(algorithm=algorithm, nr_iter=iters, particle_diameter_px=28.0,
                              ini_subset=60, fin_subset=200, **kw)
    return Classifier2D(settings, model, parts, win, make_sampling(10.0, 3.0, 1.0))


def test_aligned_average_recovers_the_shape_from_particles_at_their_poses():
    from _ml_synth import shapes, transform

    g = torch.Generator().manual_seed(5)
    psi = torch.rand(40, generator=g) * 360
    shift = (torch.rand(40, 2, generator=g) * 2 - 1) * 2.0
    truth = shapes(N_BOX)[0]
    images = transform(truth.expand(40, N_BOX, N_BOX), psi, shift)
    win = make_window(N_BOX)
    ft, ctf = pack_particles(images, None, win, 28.0, 3.0)
    parts = ParticleSet(ft=ft, ctf=ctf, group=torch.zeros(40, dtype=torch.long), n_groups=1, offset_px=shift,
                        psi_deg=psi)
    data, weight = aligned_average_grids(parts, torch.arange(40), win, 2)
    average = average_from_grids(data, weight, N_BOX, N_BOX // 2 - 2)
    mirrored = ParticleSet(ft=ft, ctf=ctf, group=parts.group, n_groups=1, offset_px=shift, psi_deg=-psi)
    wrong = average_from_grids(*aligned_average_grids(mirrored, torch.arange(40), win, 2), N_BOX, N_BOX // 2 - 2)

    def cc(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    assert cc(average, truth) > 0.98 > cc(wrong, truth) + 0.1  # poses as the E-step writes them


def _carbon_edges(n_images: int, snr: float, seed: int = 13) -> torch.Tensor:
    """Soft steps at random angles with the lower noise level an image normalised over a carbon
    background gets (its background standard deviation includes the step)."""
    g = torch.Generator().manual_seed(seed)
    c = torch.arange(N_BOX, dtype=torch.float32) - N_BOX // 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    angle = torch.rand(n_images, 1, 1, generator=g) * 2 * math.pi
    step = torch.sigmoid((x * torch.cos(angle) + y * torch.sin(angle)) / 1.5)
    return 4.0 * step + 0.85 * torch.randn(n_images, N_BOX, N_BOX, generator=g) / math.sqrt(snr)


def test_misfit_ranks_carbon_edges_above_particles_where_the_likelihood_does_not():
    from vitrify.ml.junk2d import misfit

    images, labels, _, _ = make_dataset(60, N_BOX, snr=0.3)
    carbon = _carbon_edges(30, snr=0.3)
    clf = _classifier(torch.cat([images, carbon]), 3, "em", 3)
    clf.run()
    rows = torch.arange(clf.particles.n_particles)
    is_junk = rows >= labels.shape[0]
    bad = misfit(clf.model, clf.particles, rows, clf.window)
    top = torch.argsort(bad, descending=True)[:30]
    top_ll = torch.argsort(clf.particles.log_likelihood)[:30]  # lowest log-likelihood
    assert float(is_junk[top].float().mean()) >= 0.75
    assert float(is_junk[top_ll].float().mean()) <= 0.2  # lower noise: a smaller residual


def test_worst_fit_refill_averages_the_unexplained_boxes_or_copies_the_largest_class():
    from vitrify.ml.optimiser import _seed_from_worst

    images, labels, _, _ = make_dataset(40, N_BOX, snr=0.3)
    carbon = _carbon_edges(12, snr=0.3)
    clf = _classifier(torch.cat([images, carbon]), 4, "vdam", 1, replacement_source="worst")
    clf.run()
    clf.model.refs[3] = clf.model.refs[0].clone()  # no class for the edges: they join particle classes
    rows = torch.arange(clf.particles.n_particles)
    is_carbon = rows >= labels.shape[0]
    clf._estep(rows, 2, 20)
    _seed_from_worst(clf, 3, 0, rows)
    assert not torch.equal(clf.model.refs[3], clf.model.refs[0])
    clf._estep(rows, 2, 20)
    after = clf.particles.class_index
    assert float((after[is_carbon] == 3).float().mean()) >= 0.8
    assert float((after[~is_carbon] == 3).float().mean()) <= 0.05
    clean = _classifier(images, 4, "vdam", 1, replacement_source="worst")
    clean.run()
    _seed_from_worst(clean, 3, 0, torch.arange(clean.particles.n_particles))
    assert torch.equal(clean.model.refs[3], clean.model.refs[0])  # nothing unexplained: a copy


def test_outlier_class_gathers_the_boxes_the_classes_cannot_explain():
    images, labels, _, _ = make_dataset(60, N_BOX, snr=0.3)
    carbon = _carbon_edges(24, snr=0.3)
    clf = _classifier(torch.cat([images, carbon]), 4, "em", 5, outlier_z=3.0)
    clf.run()
    cls = clf.particles.class_index
    is_carbon = torch.arange(cls.shape[0]) >= labels.shape[0]
    assert float((cls[is_carbon] == 3).float().mean()) >= 0.8
    assert float((cls[~is_carbon] == 3).float().mean()) <= 0.1  # the test's tail on 32 px boxes
    assert _purity_of_shapes(cls[~is_carbon], labels) > 0.9


def _purity_of_shapes(assigned: torch.Tensor, labels: torch.Tensor) -> float:
    good = sum(int(torch.bincount(labels[assigned == c], minlength=3).max()) for c in torch.unique(assigned))
    return good / labels.shape[0]


def test_estep_keeps_each_particle_within_its_allowed_classes():
    images, labels, _, _ = make_dataset(20, N_BOX, snr=0.3)
    clf = _classifier(images, 3, "em", 1)
    n = images.shape[0]
    allowed = torch.zeros(n, 3, dtype=torch.bool)
    allowed[torch.arange(n), (labels + 1) % 3] = True  # each particle may only take one, wrong, class
    clf.particles.allowed = allowed
    sums, _, _ = clf._estep(torch.arange(n), 1, 0)
    assert torch.equal(clf.particles.class_index, (labels + 1) % 3)
    assert float(sums.class_weight.sum()) > 0

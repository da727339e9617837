"""EM and VDAM on tiny simulated 2D data with known classes; VDAM pieces against EM."""

from __future__ import annotations

import torch
from _ml_synth import make_dataset

from vitrify.ml.expectation import make_sampling
from vitrify.ml.model import ParticleSet
from vitrify.ml.optimiser import Classifier2D, EngineSettings
from vitrify.ml.schedules import VdamSchedule
from vitrify.ml.starts import initial_model, pack_particles
from vitrify.ml.window import make_window

N_BOX = 32


def _setup(labels_per_class=100, k=3, algorithm="em", iters=8, snr=0.3, classes=(0, 1, 2), **kw):
    imgs, labels, _, _ = make_dataset(labels_per_class, N_BOX, snr=snr, classes=classes)
    win = make_window(N_BOX)
    ft, ctf = pack_particles(imgs, None, win, 28.0, 3.0)
    n = imgs.shape[0]
    parts = ParticleSet(ft=ft, ctf=ctf, group=torch.zeros(n, dtype=torch.long), n_groups=1,
                        offset_px=torch.zeros(n, 2))
    model = initial_model(parts, win, k, 28.0, 3.0, 2.0, seed=3, sigma_offset_px=3.0)
    settings = EngineSettings(algorithm=algorithm, nr_iter=iters, particle_diameter_px=28.0,
                              ini_subset=50, fin_subset=150, **kw)
    clf = Classifier2D(settings, model, parts, win, make_sampling(10.0, 3.0, 1.0))
    return clf, labels


def _purity(assigned: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    good = sum(int(torch.bincount(labels[assigned == c], minlength=int(labels.max()) + 1).max())
               for c in range(k) if bool((assigned == c).any()))
    return good / labels.shape[0]


def test_em_separates_three_shapes():
    clf, labels = _setup(algorithm="em", iters=6)
    clf.run()
    assert _purity(clf.particles.class_index, labels, 3) > 0.95
    assert torch.allclose(clf.model.pdf_class.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert (clf.model.sigma2[0, 1:N_BOX // 2] > 0).all()


def test_vdam_separates_three_shapes_and_ends_with_a_full_pass():
    clf, labels = _setup(algorithm="vdam", iters=24)
    seen = []
    clf.run(on_iteration=lambda info: seen.append((info.n_particles, info.full_pass)))
    assert seen[-1] == (300, True) and seen[0][0] == 50
    assert _purity(clf.particles.class_index, labels, 3) > 0.95


def test_vdam_full_batch_unit_step_equals_the_em_update():
    """Identical pseudo half-sets, first moments, T -> inf: F + G = data / weight = EM (ML)."""
    from vitrify.ml.fourier2d import images_from_padded, padded_ft
    from vitrify.core.fourier import shell_index_2d
    from vitrify.ml.mstep import map_reconstruct
    from vitrify.ml.vdam import Moments, gradient_step, half_gradients, update_moments

    clf, _ = _setup(labels_per_class=30, algorithm="vdam")
    parts = clf.particles
    twin = torch.arange(parts.n_particles).repeat_interleave(2)  # rows 2i, 2i+1 = same particle
    clf.particles = ParticleSet(ft=parts.ft[twin], ctf=parts.ctf[twin], group=parts.group[twin],
                                n_groups=1, offset_px=parts.offset_px[twin])
    model = clf.model
    model.tau2_fudge = 1e12
    idx = torch.arange(clf.particles.n_particles)
    sums, data, weight = clf._estep(idx, 2, 0)
    assert torch.allclose(data[0], data[1]) and torch.allclose(weight[0], weight[1])
    em = images_from_padded(map_reconstruct(data.sum(0), weight.sum(0), model.tau2, 1e12, model.pad,
                                            model.current_radius), N_BOX)
    moments = Moments.zeros(3, 2 * N_BOX, data.device)
    grads = half_gradients(data, weight, padded_ft(model.refs, model.pad).to(torch.complex64))
    inside = shell_index_2d(2 * N_BOX, oversampling=model.pad, device=data.device) <= model.current_radius
    update_moments(moments, grads, inside, torch.ones(3, dtype=torch.bool))
    moments.m2.fill_(1.0)  # identical halves: no noise, second moment 1
    moments.m1[1] = moments.m1[0] * 0.999  # tiny half-set difference -> noise > 0, FSC -> 1
    vdam = gradient_step(model.refs, moments, torch.ones(3), 1e12, model.pad, model.current_radius,
                         torch.zeros(3, dtype=torch.bool))
    # the window excludes the DC term: EM zeroes it, the gradient step keeps the old one
    vdam = vdam - vdam.mean(dim=(-2, -1), keepdim=True)
    em = em - em.mean(dim=(-2, -1), keepdim=True)
    err = (vdam - em).norm() / em.norm()
    assert err < 2e-3


def test_class_replacement_revives_an_empty_class():
    def run(threshold):
        clf, labels = _setup(algorithm="vdam", iters=40, class_inactivity_threshold=threshold)
        clf.model.refs[2] = clf.model.refs[2] * 40.0  # a class no particle wants
        replaced = []
        clf.run(on_iteration=lambda info: replaced.append(info.replaced))
        return clf, labels, [r for r in replaced if r is not None]

    clf_off, _, none = run(0.0)
    assert none == [] and float(clf_off.model.pdf_class[2]) < 0.01
    clf_on, labels, events = run(0.1)
    assert events and events[0][0] == 2
    assert float(clf_on.model.pdf_class.min()) > 0.1
    assert _purity(clf_on.particles.class_index, labels, 3) > _purity(clf_off.particles.class_index,
                                                                        labels, 3)


def test_vdam_schedule_follows_relion_defaults():
    s = VdamSchedule(nr_iter=200, n_particles=10000, n_classes=20, tau2_fudge=2.0)
    assert s.phases == (60, 100, 40)
    assert s.subsets() == (200, 1000)
    assert s.subset_size(1) == 200 and s.subset_size(110) == 600 and s.subset_size(199) == 1000
    assert s.subset_size(200) == -1
    assert abs(s.stepsize_at(0) - 0.9) < 1e-3 and abs(s.stepsize_at(199) - 0.3) < 1e-3
    assert abs(s.stepsize_at(85) - 0.6) < 1e-9  # sigmoid midpoint at ini + inb/4
    assert abs(s.tau2_fudge_at(0) - 1.0) < 1e-3 and abs(s.tau2_fudge_at(199) - 2.0) < 1e-3
    assert s.replaces_classes(100) and not s.replaces_classes(60) and not s.replaces_classes(160)


def test_noise_spectra_are_estimated_per_optics_group():
    """Two optics groups, the second with 4x the noise variance: sigma2 ratio ~4 in every shell."""
    imgs, labels, _, _ = make_dataset(40, N_BOX, snr=0.5, classes=(0, 1, 2))
    g = torch.Generator().manual_seed(11)
    n = imgs.shape[0]
    group = (torch.arange(n) % 2).long()
    imgs = imgs + (group[:, None, None] == 1) * torch.randn(imgs.shape, generator=g) * 3 ** 0.5 / 0.5 ** 0.5
    win = make_window(N_BOX)
    ft, ctf = pack_particles(imgs, None, win, 28.0, 3.0)
    parts = ParticleSet(ft=ft, ctf=ctf, group=group, n_groups=2, offset_px=torch.zeros(n, 2))
    model = initial_model(parts, win, 3, 28.0, 3.0, 2.0, seed=3, sigma_offset_px=3.0)
    settings = EngineSettings(algorithm="em", nr_iter=2, particle_diameter_px=28.0)
    clf = Classifier2D(settings, model, parts, win, make_sampling(15.0, 2.0, 1.0))
    clf.run()
    shells = slice(7, clf.model.current_radius + 1)  # above the strong-signal shells
    ratio = clf.model.sigma2[1, shells] / clf.model.sigma2[0, shells]
    assert float((ratio - 4.0).abs().max()) < 0.5, ratio
    assert float((ratio.mean() - 4.0).abs()) < 0.2
    assert float(clf.model.sigma2[0, shells].mean()) > 0


def test_replacement_source_largest_class_or_relion_gradient_rule():
    """An ice-like class with a huge gradient but few particles: RELION's rule copies it, 'largest' does not."""
    from vitrify.ml.vdam import choose_replacement

    pdf = torch.tensor([0.5, 0.3, 0.19, 0.01], dtype=torch.float64)
    grad_error = torch.tensor([1.0, 1.0, 100.0, 0.0], dtype=torch.float64)
    assert choose_replacement(grad_error, pdf, 0.1, "gradient") == (3, 2)
    assert choose_replacement(grad_error, pdf, 0.1, "largest") == (3, 0)
    assert choose_replacement(grad_error, pdf, 0.0, "largest") is None
    assert choose_replacement(grad_error, torch.tensor([0.3, 0.3, 0.2, 0.2], dtype=torch.float64), 0.1) is None

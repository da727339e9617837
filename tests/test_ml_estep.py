"""E-step pieces against direct float64 computations and exact identities."""

from __future__ import annotations

import math

import pytest
import torch

from vitrify.ml.block import run_block
from vitrify.ml.estep import Batch, EStepSums, significant_weights
from vitrify.ml.expectation import (EStepSettings, TemplateCache, build_pass_grid, coarse_radius,
                                    make_sampling)
from vitrify.ml.fourier2d import image_ft, images_from_padded, padded_ft
from vitrify.ml.model import MlModel
from vitrify.ml.templates import (make_rotation_table, sample_templates, scatter_to_grids,
                                  symmetrise_column0)
from vitrify.ml.window import make_window, pack, unpack, window_shell_sums


def _model(refs, pdf, sigma2=1e-3, radius=10):
    k, n = refs.shape[0], refs.shape[-1]
    z = torch.zeros(k, n // 2 + 1, dtype=torch.float64)
    return MlModel(refs=refs, pdf_class=torch.tensor(pdf, dtype=torch.float64),
                   sigma2=torch.full((1, n // 2 + 1), sigma2, dtype=torch.float64), tau2=z,
                   data_vs_prior=z.clone(), sigma2_offset_px=4.0, tau2_fudge=2.0,
                   current_radius=radius, pixel_size_angst=3.0)


def test_window_is_shell_sorted_prefix_and_round_trips():
    w = make_window(24)
    assert bool((w.shell[1:] >= w.shell[:-1]).all())
    assert w.pixels_within(5) == int((w.shell <= 5).sum())
    grid = torch.randn(2, 24, 13, dtype=torch.complex64)
    back = unpack(pack(grid, w), w)
    keep = back != 0
    assert torch.equal(back[keep], grid[keep])
    # half weights make the kx=0 column count once per independent component
    counts = window_shell_sums(w.half_weight[None].double(), w)[0]
    ky = torch.fft.fftfreq(24, 1 / 24)[:, None]
    kx = torch.fft.fftfreq(24, 1 / 24)[None, :]
    full = torch.round(torch.sqrt(kx ** 2 + ky ** 2)).long()
    assert torch.allclose(counts[3], (full == 3).sum().double() / 2)


def test_estep_log_likelihood_matches_float64_direct_sum():
    torch.manual_seed(0)
    n, k, b = 32, 3, 6
    win = make_window(n, 10)
    p = win.size
    model = _model(torch.randn(k, n, n), [0.2, 0.3, 0.5])
    x = pack(image_ft(torch.randn(b, n, n)), win) * 3
    ctf = torch.rand(b, p) + 0.2
    prev = torch.randn(b, 2)
    samp = make_sampling(30, 1.5, 1)
    grid = build_pass_grid(model, samp, win, EStepSettings(max_significant=0), TemplateCache())
    templates = grid.coarse.rows[:, :p] + 1j * grid.coarse.rows[:, p:]
    sums = EStepSums.zeros(1, grid, 1, win.shell, win.radius + 1)
    res = run_block(Batch(x, ctf, prev, torch.zeros(b, dtype=torch.long), 0, torch.full((p,), 1e3),
                          win.half_weight, win.kx, win.ky, n), grid, sums)
    # direct: -sum h |x s - c P|^2 / (2 sigma2) + log priors, in float64
    t = templates.to(torch.complex128)
    off = prev[:, None, :].double() + samp.shifts_px[None].double()
    ph = torch.exp(-2j * math.pi * (off[..., :1] * win.kx.double() + off[..., 1:] * win.ky.double()) / n)
    diff = (x.to(torch.complex128)[:, None, :] * ph)[:, :, None, :] - ctf.double()[:, None, None, :] * t
    d2 = (diff.abs() ** 2 * win.half_weight.double() * 1e3).sum(-1) / 2
    log_prior = -(off ** 2).sum(-1) / 8.0
    n_psi = samp.psi_deg.shape[0]
    total = -d2 + log_prior[:, :, None] + torch.log(model.pdf_class).repeat_interleave(n_psi)
    ll = torch.logsumexp(total.reshape(b, -1), 1)
    assert float((ll - res.log_likelihood).abs().max()) < 1e-3
    best = total.reshape(b, -1).argmax(1) % total.shape[2]
    assert torch.equal(res.best_class, best // n_psi)
    assert torch.allclose(sums.class_weight.sum(), torch.tensor(float(b), dtype=torch.float64))


def test_significant_weights_keep_the_smallest_set_holding_the_fraction():
    log_w = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.04, 0.01]]))
    w, _, pmax, n_sig = significant_weights(log_w, 0.9, 0)
    assert int(n_sig) == 3 and torch.allclose(w.sum(1), torch.ones(1))
    assert w[0, 3] == 0 and w[0, 4] == 0
    assert abs(float(pmax) - 0.5) < 1e-6
    _, _, _, capped = significant_weights(log_w, 0.9, 2)
    assert int(capped) == 2
    # broad and peaked rows mixed (the two-stage top-k path) against a full sort
    torch.manual_seed(0)
    log_w = torch.cat([torch.rand(3, 2000) * 0.1, torch.randn(3, 2000) * 8])  # broad (no ties), peaked
    w, _, _, n_sig = significant_weights(log_w, 0.999, 0)
    p = torch.exp(log_w - log_w.max(1, keepdim=True).values).double()
    srt = torch.sort(p, 1, descending=True).values
    expected = ((torch.cumsum(srt, 1) < 0.999 * p.sum(1, keepdim=True)).sum(1) + 1)
    assert torch.equal(n_sig, expected) and torch.equal((w > 0).sum(1), expected)
    # every stage of the growing top-k (32, 256, 2048, ...) and a cap between two stages
    log_w = torch.cat([torch.randn(2, 5000) * s for s in (0.05, 1.0, 2.0, 4.0, 16.0)])
    p = torch.exp(log_w - log_w.max(1, keepdim=True).values).double()
    srt = torch.sort(p, 1, descending=True).values
    expected = ((torch.cumsum(srt, 1) < 0.999 * p.sum(1, keepdim=True)).sum(1) + 1)
    assert len(set(expected.tolist())) >= 5 and int(expected.min()) < 32 < 2048 < int(expected.max())
    _, _, _, n_sig = significant_weights(log_w, 0.999, 0)
    assert torch.equal(n_sig, expected)
    _, _, _, n_sig = significant_weights(log_w, 0.999, 300)
    assert torch.equal(n_sig, expected.clamp(max=300))


def test_templates_match_real_space_rotation_and_scatter_is_the_adjoint():
    from _ml_synth import rotate_about_centre

    torch.manual_seed(1)
    n = 32
    c = torch.arange(n, dtype=torch.float32) - n // 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    ref = torch.exp(-((x - 5) ** 2 + (y + 3) ** 2) / 8) + torch.exp(-((x + 4) ** 2 + y ** 2) / 12)
    win = make_window(n, 8)
    psi = torch.tensor([0.0, 37.0, 200.0])
    table = make_rotation_table(psi, win, pad=2)
    tmpl = sample_templates(padded_ft(ref[None], 2).to(torch.complex64), table)[0]
    for i, angle in enumerate(psi.tolist()):
        th = torch.tensor([math.radians(angle)])
        rot = rotate_about_centre(ref[None], torch.cos(th), torch.sin(th))[0]
        direct = pack(image_ft(rot), win)
        corr = (tmpl[i] * direct.conj()).real.sum() / (tmpl[i].abs().norm() * direct.abs().norm())
        assert corr > 0.995
        if angle == 37.0:  # the opposite rotation does not match
            wrong = sample_templates(padded_ft(ref[None], 2).to(torch.complex64),
                                     make_rotation_table(torch.tensor([-37.0]), win, pad=2))[0, 0]
            assert (wrong * direct.conj()).real.sum() / (wrong.abs().norm() * direct.abs().norm()) < 0.5
    grids = symmetrise_column0(torch.randn(1, 64, 33, dtype=torch.complex64)) / 2  # Hermitian column
    vals = torch.randn(1, 3, win.size, dtype=torch.complex64)
    lhs = (sample_templates(grids, table) * vals.conj()).real.sum()
    data, _ = scatter_to_grids(vals, torch.ones(1, 3, win.size), table)
    # inner product on the half plane, kx = 0 column counted once per conjugate pair
    hw = torch.ones(64, 33)
    hw[:, 0] = 0.5
    rhs = (grids * data.conj()).real.mul(hw).sum()
    assert abs(float(lhs - rhs)) < 1e-3 * float(lhs.abs() + 1)


def test_padded_transform_round_trips():
    refs = torch.randn(2, 16, 16)
    assert torch.allclose(images_from_padded(padded_ft(refs, 2), 16), refs, atol=1e-5)


@pytest.mark.parametrize("budget_bytes", [64 * 2 ** 20, 200_000])  # one chunk; chunks splitting shift runs
def test_fine_pass_log_likelihood_matches_the_float64_fine_grid(budget_bytes):
    """Oversampling 1 with nothing truncated: LL = logsumexp over the full fine grid - log 8."""
    torch.manual_seed(3)
    n, k, b = 32, 2, 5
    win = make_window(n, 9)
    p = win.size
    model = _model(torch.randn(k, n, n) * 0.3, [0.4, 0.6])
    samp = make_sampling(30, 2.0, 2.0)
    settings = EStepSettings(adaptive_fraction=1.0, max_significant=0, oversampling=1, fine_cap=10 ** 6,
                             budget_bytes=budget_bytes)
    grid = build_pass_grid(model, samp, win, settings, TemplateCache())
    x = pack(image_ft(torch.randn(b, n, n)), win) * 3
    ctf = torch.rand(b, p) + 0.2
    prev = torch.randn(b, 2)
    sums = EStepSums.zeros(1, grid, 1, win.shell, win.radius + 1)
    res = run_block(Batch(x, ctf, prev, torch.zeros(b, dtype=torch.long), 0, torch.full((p,), 1e3),
                          win.half_weight, win.kx, win.ky, n), grid, sums)
    f = grid.fine
    templates = (f.rows[:, :p] + 1j * f.rows[:, p:]).to(torch.complex128)
    off = prev[:, None, :].double() + f.shifts_px[None].double()
    ph = torch.exp(-2j * math.pi * (off[..., :1] * win.kx.double() + off[..., 1:] * win.ky.double()) / n)
    diff = (x.to(torch.complex128)[:, None, :] * ph)[:, :, None, :] - ctf.double()[:, None, None, :] * templates
    d2 = (diff.abs() ** 2 * win.half_weight.double() * 1e3).sum(-1) / 2
    total = -d2 - (off ** 2).sum(-1)[:, :, None] / 8.0 + torch.log(model.pdf_class).repeat_interleave(f.n_psi)
    ll = torch.logsumexp(total.reshape(b, -1), 1) - math.log(8.0)
    assert float((ll - res.log_likelihood).abs().max()) < 1e-3
    best = total.reshape(b, -1).argmax(1)
    best_r = best % total.shape[2]
    assert torch.equal(res.best_class, best_r // f.n_psi)
    assert torch.allclose(res.best_psi_deg, f.psi_deg[best_r % f.n_psi])
    assert torch.allclose(res.best_offset_px, off[torch.arange(b), best // total.shape[2]].float())
    assert torch.equal(res.n_fine, 8 * res.n_significant)
    assert abs(float(sums.class_weight.sum()) - b) < 1e-4
    n_coarse = grid.coarse.rows.shape[0] * samp.shifts_px.shape[0]
    assert sums.n_hypotheses == b * n_coarse + int(res.n_fine.sum())


def test_oversampling_recovers_off_grid_poses_that_the_coarse_grid_misses():
    from _ml_synth import shapes, transform

    from vitrify.ml.expectation import expectation
    from vitrify.ml.model import ParticleSet
    from vitrify.ml.starts import initial_sigma2, pack_particles

    n, count = 48, 24
    ref = shapes(n)[:1]
    g = torch.Generator().manual_seed(5)
    psi_true = 12.0 * torch.randint(0, 30, (count,), generator=g) + 3.0  # a quarter coarse step off
    shift_true = torch.tensor([0.5, -0.5]).repeat(count, 1)
    imgs = transform(ref.repeat(count, 1, 1), psi_true, shift_true)
    imgs = imgs + 0.05 * torch.randn(imgs.shape, generator=g)
    win = make_window(n)
    ft, ctf = pack_particles(imgs, None, win, 40.0)
    parts = ParticleSet(ft=ft, ctf=ctf, group=torch.zeros(count, dtype=torch.long), n_groups=1,
                        offset_px=torch.zeros(count, 2))
    from vitrify.ml.starts import flatten_solvent

    model = _model(flatten_solvent(ref, 20.0), [1.0], radius=20)
    model.sigma2 = initial_sigma2(parts, win) * 0.05
    errors = {}
    for ovs in (0, 1):
        parts.offset_px.zero_()
        settings = EStepSettings(oversampling=ovs, coarse_radius=coarse_radius(n, 12.0, 40.0, ovs))
        expectation(model, parts, torch.arange(count), make_sampling(12.0, 2.0, 2.0), win, settings,
                    TemplateCache())
        dpsi = torch.remainder(parts.psi_deg - psi_true + 180.0, 360.0) - 180.0
        errors[ovs] = (float(dpsi.abs().max()), float((parts.offset_px - shift_true).abs().max()))
    assert errors[0][0] > 2.5 and errors[0][1] > 0.4  # coarse: psi 3 deg and 0.5 px off
    assert errors[1][0] < 0.5 and errors[1][1] < 0.05  # fine children hit the truth

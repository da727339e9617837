"""E-step pieces against direct float64 computations and exact identities."""

from __future__ import annotations

import math

import torch

from vitrify.ml.estep import EStepSums, phase_table, run_block, significant_weights
from vitrify.ml.expectation import TemplateCache, build_hypotheses, make_sampling
from vitrify.ml.fourier2d import image_ft, images_from_padded, padded_ft
from vitrify.ml.model import MlModel
from vitrify.ml.templates import (make_rotation_table, sample_templates, scatter_to_grids,
                                  symmetrise_column0)
from vitrify.ml.window import make_window, pack, shell_sums, unpack


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
    counts = shell_sums(w.half_weight[None].double(), w)[0]
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
    hyp = build_hypotheses(model, make_sampling(30, 1.5, 1), win, p, 2.0, TemplateCache())
    x = pack(image_ft(torch.randn(b, n, n)), win) * 3
    ctf = torch.rand(b, p) + 0.2
    prev = torch.randn(b, 2)
    inv = torch.full((p,), 1e3)
    stacked = torch.cat([hyp.templates.real, hyp.templates.imag], 1).t().contiguous()
    power = (hyp.templates.abs() ** 2).t().contiguous()
    table = phase_table(hyp.shifts_px, win.kx, win.ky, n)
    sums = EStepSums.zeros(1, hyp.templates.shape[0], k, 1, win.shell, win.radius + 1)
    res = run_block(x, ctf, prev, torch.zeros(b, dtype=torch.long), 0, inv, win.half_weight, win.kx,
                    win.ky, n, hyp, stacked, power, table, sums, 0.999, 0)
    # direct: -sum h |x s - c P|^2 / (2 sigma2) + log priors, in float64
    t = hyp.templates.to(torch.complex128)
    off = prev[:, None, :].double() + hyp.shifts_px[None].double()
    ph = torch.exp(-2j * math.pi * (off[..., :1] * win.kx.double() + off[..., 1:] * win.ky.double()) / n)
    diff = (x.to(torch.complex128)[:, None, :] * ph)[:, :, None, :] - ctf.double()[:, None, None, :] * t
    d2 = (diff.abs() ** 2 * win.half_weight.double() * 1e3).sum(-1) / 2
    log_prior = -(off ** 2).sum(-1) / 8.0
    total = -d2 + log_prior[:, :, None] + torch.log(model.pdf_class).repeat_interleave(hyp.n_psi)
    ll = torch.logsumexp(total.reshape(b, -1), 1)
    assert float((ll - res.log_likelihood).abs().max()) < 1e-3
    best = total.reshape(b, -1).argmax(1) % total.shape[2]
    assert torch.equal(res.best_class, best // hyp.n_psi)
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

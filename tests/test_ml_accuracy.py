"""Expected accuracies of angle and offset against maximum-likelihood alignments of simulated images."""

from __future__ import annotations

import math

import torch

from _ml_synth import shapes
from vitrify.ml.accuracy import expected_accuracy, first_crossing
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.fourier2d import padded_ft
from vitrify.ml.templates import make_rotation_table, sample_templates
from vitrify.ml.window import make_window

N, RADIUS = 32, 10


def _setup(refs: torch.Tensor, sigma2: float, device):
    win = make_window(N)
    k = refs.shape[0]
    z = torch.zeros(k, N // 2 + 1, dtype=torch.float64)
    model = MlModel(refs=refs.to(device), pdf_class=torch.full((k,), 1.0 / k, dtype=torch.float64),
                    sigma2=torch.full((1, N // 2 + 1), sigma2, dtype=torch.float64), tau2=z,
                    data_vs_prior=z.clone(), sigma2_offset_px=4.0, tau2_fudge=2.0,
                    current_radius=RADIUS, pixel_size_angst=3.0)
    parts = ParticleSet(ft=torch.zeros(20, win.size, dtype=torch.complex64, device=device),
                        ctf=torch.ones(20, win.size, device=device),
                        group=torch.zeros(20, dtype=torch.long, device=device), n_groups=1,
                        offset_px=torch.zeros(20, 2, device=device))
    return win, model, parts


def _noise_for(acc: float, target: float, sigma2: float) -> float:
    """sigma2 that moves a small-perturbation accuracy ``acc`` (at ``sigma2``) to ``target``."""
    return sigma2 * (target / acc) ** 2


def _ml_std(templates: torch.Tensor, truth: torch.Tensor, grid: torch.Tensor, hw: torch.Tensor,
            sigma2: float, trials: int, seed: int) -> float:
    """Std of the ML estimate over ``grid`` of images ``truth + noise`` (templates ``(A, P)``)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.complex(torch.randn(trials, truth.shape[0], generator=g, dtype=torch.float64),
                          torch.randn(trials, truth.shape[0], generator=g, dtype=torch.float64))
    x = truth.cpu().to(torch.complex128)[None] + noise * math.sqrt(sigma2)
    t = templates.cpu().to(torch.complex128)
    # -|x - t|^2 = 2 Re<x, t> - |t|^2 + const
    ll = 2 * (x.conj() @ (t * hw.cpu().double()).t()).real - ((t.abs() ** 2) * hw.cpu().double()).sum(1)[None]
    return float(grid.double()[ll.argmax(1)].std())


def test_rotation_accuracy_is_sqrt2_times_the_ml_angle_spread(device):
    refs = shapes(N)[:1]
    win, model, parts = _setup(refs, 1e-4, device)
    acc1 = float(expected_accuracy(model, parts, win)[0][0])
    sigma2 = _noise_for(acc1, 2.0, 1e-4)
    model.sigma2.fill_(sigma2)
    acc = float(expected_accuracy(model, parts, win)[0][0])
    assert 1.8 < acc < 2.2  # D grows as delta^2 for small angles
    grid = torch.linspace(-5 * acc, 5 * acc, 401)
    p = win.pixels_within(RADIUS)
    grids = padded_ft(model.refs, model.pad).to(torch.complex64)
    t = sample_templates(grids, make_rotation_table(grid.to(device), win.to(device), model.pad, p))[0]
    std = _ml_std(t, t[200], grid, win.half_weight[:p], sigma2, 600, 1)
    assert 0.8 < (acc / math.sqrt(2)) / std < 1.25, (acc, std)


def test_translation_accuracy_is_sqrt2_times_the_ml_offset_spread(device):
    c = torch.arange(N, dtype=torch.float32) - N // 2
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    refs = (torch.exp(-r2 / 8.0) - 0.5 * torch.exp(-r2 / 30.0))[None]  # isotropic: x and y alike
    win, model, parts = _setup(refs, 1e-4, device)
    acc1 = float(expected_accuracy(model, parts, win)[1][0])
    sigma2 = _noise_for(acc1, 0.4, 1e-4)
    model.sigma2.fill_(sigma2)
    acc = float(expected_accuracy(model, parts, win)[1][0])
    assert 0.36 < acc < 0.44
    p = win.pixels_within(RADIUS)
    grids = padded_ft(model.refs, model.pad).to(torch.complex64)
    f = sample_templates(grids, make_rotation_table(torch.zeros(1, device=device), win.to(device),
                                                    model.pad, p))[0, 0]
    grid = torch.linspace(-5 * acc, 5 * acc, 401)
    ramp = torch.exp(-2j * math.pi * grid.double()[:, None] * win.kx[:p].double()[None] / N)
    t = f.cpu().to(torch.complex128)[None] * ramp
    std = _ml_std(t, t[200], grid, win.half_weight[:p], sigma2, 600, 2)
    assert 0.8 < (acc / math.sqrt(2)) / std < 1.25, (acc, std)


def test_accuracy_scales_with_noise_and_ctf_and_empty_classes_are_inf():
    refs = torch.cat([shapes(N)[:2], torch.zeros(1, N, N)])
    win, model, parts = _setup(refs, 1e-4, "cpu")
    rot, trans = expected_accuracy(model, parts, win)
    assert math.isinf(float(rot[2])) and math.isinf(float(trans[2]))
    model.sigma2.mul_(4.0)  # twice the noise amplitude: twice the error (small-perturbation regime)
    rot4, trans4 = expected_accuracy(model, parts, win)
    assert torch.allclose(rot4[:2] / rot[:2], torch.full((2,), 2.0, dtype=torch.float64), rtol=0.05)
    assert torch.allclose(trans4[:2] / trans[:2], torch.full((2,), 2.0, dtype=torch.float64), rtol=0.05)
    model.sigma2.div_(4.0)
    parts.ctf.mul_(0.5)  # half the contrast, as four times the noise
    rot_c, _ = expected_accuracy(model, parts, win)
    assert torch.allclose(rot_c, rot4, rtol=1e-6)


def test_first_crossing_interpolates_on_log_axes():
    grid = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
    drop = torch.stack([(grid / 2.0) ** 2, grid * 0.0 + 5.0, grid * 0.01])  # crosses at 2, at once, never
    out = first_crossing(drop, grid)
    assert abs(float(out[0]) - 2.0) < 1e-9 and float(out[1]) == 1.0 and math.isinf(float(out[2]))

"""Motion correction against synthetic movies with known global drift and local deformation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitrify.io.errors import InputError
from vitrify.preprocess._frames import group_sums, shift_spectra
from vitrify.preprocess.motion import (MotionOptions, _deform, accumulated_motion, align_global,
                                       align_patches, deformation_field, dose_weights, fit_deformation,
                                       fix_defects, sum_frames)


def _specimen(h, w, seed=0, smooth=200.0):
    g = torch.Generator().manual_seed(seed)
    k2 = torch.fft.fftfreq(h).view(-1, 1) ** 2 + torch.fft.rfftfreq(w).view(1, -1) ** 2
    image = torch.fft.irfft2(torch.fft.rfft2(torch.randn(h, w, generator=g)) * torch.exp(-smooth * k2), s=(h, w))
    return image / image.std()


def _movie(specimen, drift, field=None, counts=5.0, seed=1):
    """Frames whose content is the specimen moved by ``field(f)`` then by ``drift[f]``, Poisson noise."""
    h, w = specimen.shape
    frames = []
    for f in range(len(drift)):
        moved = specimen if field is None else _deform(specimen, field(f))
        frames.append(torch.fft.irfft2(shift_spectra(torch.fft.rfft2(moved), drift[f], (h, w)), s=(h, w)))
    mean = (counts + 0.5 * counts * torch.stack(frames)).clamp(min=0)
    return torch.poisson(mean, generator=torch.Generator().manual_seed(seed))


def test_global_drift_is_recovered(device):
    t = torch.arange(12, dtype=torch.float32)
    drift = torch.stack([2.5 * torch.sqrt(t + 1) + 0.3 * t, -2.0 * torch.log1p(t)], dim=1)
    frames = _movie(_specimen(192, 256), drift).to(device)
    shifts = align_global(frames, 1.0, MotionOptions(patches_x=1, patches_y=1)).cpu()
    truth = -(drift - drift.mean(0))
    rms = float(((shifts - truth) ** 2).sum(1).mean().sqrt())
    assert rms < 0.2


def test_large_frames_are_aligned_binned_with_subpixel_accuracy():
    drift = torch.stack([torch.linspace(0, 9, 8), torch.linspace(0, 4, 8)], dim=1)
    frames = _movie(_specimen(256, 256), drift, counts=20.0)
    shifts = align_global(frames, 1.0, MotionOptions(align_size_px=128, bfactor_px2=125))
    truth = -(drift - drift.mean(0))
    assert float(((shifts - truth) ** 2).sum(1).mean().sqrt()) < 0.5


def test_local_deformation_is_recovered_by_patches():
    h = w = 384
    n_frames = 10

    def field(f):
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        tt = f / (n_frames - 1)
        return torch.stack([2.0 * tt * yy, -2.0 * tt * xx], dim=-1)

    drift = torch.stack([torch.linspace(0, 5, n_frames), torch.linspace(0, -3, n_frames)], dim=1)
    frames = _movie(_specimen(h, w), drift, field, counts=10.0)
    opts = MotionOptions(patches_x=3, patches_y=3)
    shifts = align_global(frames, 1.0, opts)
    model = fit_deformation(align_patches(frames, shifts, 1.0, opts), (h, w))
    est = torch.stack([shifts[f] + deformation_field(model, f)[::48, ::48] for f in range(n_frames)])
    truth = torch.stack([-(drift[f] + field(f)[::48, ::48]) for f in range(n_frames)])
    est, truth = est - est.mean(0), truth - truth.mean(0)
    global_only = torch.stack([shifts[f].expand_as(truth[0]) for f in range(n_frames)])
    global_only = global_only - global_only.mean(0)
    rms_local = float(((est - truth) ** 2).sum(-1).mean().sqrt())
    rms_global = float(((global_only - truth) ** 2).sum(-1).mean().sqrt())
    assert rms_local < 0.25 < rms_global


def test_aligned_sum_matches_the_specimen_better_than_the_plain_sum():
    drift = torch.stack([torch.linspace(0, 12, 10), torch.zeros(10)], dim=1)
    specimen = _specimen(128, 128, smooth=20.0)
    frames = _movie(specimen, drift, counts=50.0)
    shifts = align_global(frames, 1.0, MotionOptions(patches_x=1, patches_y=1))
    aligned, _ = sum_frames(frames, shifts, None, None)
    plain, _ = sum_frames(frames, torch.zeros_like(shifts), None, None)
    # the aligned sum sits at the mean position of the drift
    truth = torch.fft.irfft2(shift_spectra(torch.fft.rfft2(specimen), drift.mean(0), (128, 128)), s=(128, 128))

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    assert corr(aligned, truth) > 0.9 > corr(plain, truth) + 0.2


def test_dose_weights_fall_with_exposure_and_frequency():
    weights = dose_weights(20, (64, 64), 1.0, 2.0)
    assert weights.shape == (20, 64, 33)
    assert torch.all(weights[1:] <= weights[:-1])
    assert float(weights[-1, 0, 1]) > float(weights[-1, 0, 30])
    assert float(weights[0, 0, 0]) == pytest.approx(1.0, abs=1e-3)


def test_dose_weighted_sum_matches_plain_sum_at_low_frequency():
    frames = torch.rand(6, 64, 64, generator=torch.Generator().manual_seed(0)) + 1
    weights = dose_weights(6, (64, 64), 1.0, 3.0)
    plain, weighted = sum_frames(frames, torch.zeros(6, 2), None, weights)
    assert float(plain.mean()) == pytest.approx(float(weighted.mean()), rel=1e-3)


def test_hot_pixels_are_replaced():
    frames = torch.poisson(torch.full((5, 64, 64), 3.0), generator=torch.Generator().manual_seed(0))
    frames[:, 10, 20] = 500.0
    fixed, count = fix_defects(frames)
    assert count >= 1 and float(fixed[:, 10, 20].max()) < 10


def test_defect_mask_of_wrong_size_is_an_input_error():
    with pytest.raises(InputError, match="defect"):
        fix_defects(torch.ones(3, 16, 16), torch.zeros(8, 8, dtype=torch.bool))


def test_group_sums_window():
    spectra = torch.arange(5, dtype=torch.float32).view(5, 1, 1)
    assert group_sums(spectra, 3).flatten().tolist() == [3.0, 3.0, 6.0, 9.0, 9.0]


def test_accumulated_motion_splits_early_and_late():
    trajectory = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [4, 0], [5, 0]], dtype=float)
    total, early, late = accumulated_motion(trajectory, 2.0)
    assert (total, early, late) == (10.0, 6.0, 4.0)


def test_deformation_fitted_to_pure_noise_is_shrunk_away():
    from vitrify.preprocess.motion import PatchShifts

    rng = np.random.default_rng(3)
    centres = np.array([(x, y) for y in (170.0, 500.0, 830.0) for x in (170.0, 500.0, 830.0)])
    noise = rng.normal(0, 0.5, (9, 16, 2))
    noise -= noise.mean(axis=1, keepdims=True)
    model = fit_deformation(PatchShifts(centres, noise), (1000, 1000))
    rms = float(torch.stack([deformation_field(model, f)[::50, ::50] for f in range(16)]).pow(2).sum(-1).mean().sqrt())
    assert rms < 0.05

    t = np.linspace(0, 1, 16)[None, :, None]
    signal = 1.5 * t * np.stack([(centres[:, 1] - 500) / 330, -(centres[:, 0] - 500) / 330], -1)[:, None, :]
    signal = signal - signal.mean(axis=1, keepdims=True)
    kept = fit_deformation(PatchShifts(centres, signal + 0.5 * noise), (1000, 1000))
    exact = fit_deformation(PatchShifts(centres, signal), (1000, 1000))

    def fields(model):
        return torch.stack([deformation_field(model, f)[::50, ::50] for f in range(16)])

    truth = fields(exact)
    error = float((fields(kept) - truth).pow(2).sum(-1).mean().sqrt())
    assert error < 0.5 * float(truth.pow(2).sum(-1).mean().sqrt())


def test_bfactor_is_in_movie_pixels_squared_as_relion_reads_it():
    """RELION's job.star ``bfactor`` / ``--bfactor`` is in pixel²: the same value on the same frames aligns
    them identically whatever their pixel size in Å, and weights each spectrum by ``exp(-B s²)``, s in
    cycles per movie pixel (RELION's own motion correction: ``exp(-2 B s²)`` on the cross-power)."""
    from vitrify.jobs.options.motioncorr import options_from_job_star
    from vitrify.preprocess._frames import bfactor_filter

    motion = options_from_job_star({"input_star_mics": "movies.star", "bfactor": "150", "patch_x": "1",
                                    "patch_y": "1"}).motion
    assert motion.bfactor_px2 == 150.0
    t = torch.arange(8, dtype=torch.float32)
    drift = torch.stack([1.5 * torch.sqrt(t + 1), -0.7 * t], dim=1)
    frames = _movie(_specimen(128, 128, smooth=20.0), drift, counts=3.0)
    opts = MotionOptions(patches_x=1, patches_y=1, align_resolution_angst=0.0, bfactor_px2=150.0)
    at_1 = align_global(frames, 1.0, opts)
    at_2 = align_global(frames, 2.0, opts)  # Å² semantics would filter twice as hard in pixels here
    assert torch.allclose(at_1, at_2, atol=1e-4)
    # cross-power weight on a spectrum cropped 2.5x (crop px = 2.5 movie px) at k = 0.1 cycles/crop px
    weights = bfactor_filter((40, 40), 2.5, 150.0)
    s_movie = 0.1 / 2.5
    assert float(weights[4, 0] ** 2) == pytest.approx(np.exp(-2 * 150.0 * s_movie ** 2), rel=1e-5)

"""Class-ranker features and preprocessing on images whose answers are known (spec §4-5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitrify.ranker import features as F
from vitrify.ranker.images import (centre_window, cnn_images, feature_image, feature_size_px, lowpass_25,
                                   mask_radius_px, window_size_px)


def _disc(n: int, radius: float, value: float = 1.0, centre=(0.0, 0.0)) -> np.ndarray:
    c = np.arange(n) - n // 2
    inside = (c[:, None] - centre[0]) ** 2 + (c[None, :] - centre[1]) ** 2 <= radius ** 2
    return np.where(inside, value, 0.0)


def test_window_size_and_centre_window():
    assert window_size_px(60.0, 2.0) == 32  # ceil(30) + 1 = 31 -> even 32
    assert window_size_px(61.0, 2.0) == 32  # ceil(30.5) + 1 = 32
    image = torch.zeros(1, 10, 10)
    image[0, 5, 5] = 1.0  # the centre n // 2
    assert centre_window(image, 4)[0, 2, 2] == 1.0  # window [-2, 1] around the centre
    padded = centre_window(image, 16)
    assert padded[0, 8, 8] == 1.0 and float(padded.sum()) == 1.0


def test_cnn_images_keep_intensity_and_scale_a_gaussian():
    n, sigma = 48, 4.0
    c = torch.arange(n) - n // 2
    g = torch.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * sigma ** 2))[None].double()
    out = cnn_images(g, pixel_size_angst=2.0, diameter_angst=60.0)[0].double()  # window 32 -> 64: x2
    assert out.shape == (64, 64)
    assert int(torch.argmax(out)) == 32 * 64 + 32
    assert float(out.max()) == pytest.approx(1.0, abs=0.01)  # no intensity normalisation
    c64 = torch.arange(64) - 32
    var = float((out * c64[None, :] ** 2).sum() / out.sum())
    assert math.sqrt(var) == pytest.approx(2 * sigma, rel=0.02)


def test_feature_image_size_and_lowpass_25():
    assert feature_size_px(100, 2.0) == 50 and feature_size_px(64, 2.6) == 42  # round(41.6)=42
    assert feature_image(torch.ones(1, 64, 2 * 32), 3.0).shape[-1] == 48
    m = 60  # cut-off shell round(60 * 4 / 25) = 10
    x = torch.arange(m, dtype=torch.float64)
    fine = torch.cos(2 * math.pi * x / 2.5)[None, :].repeat(m, 1)  # 10 Å period at 4 Å/px (shell 24): removed
    coarse = torch.cos(2 * math.pi * x / 15)[None, :].repeat(m, 1)  # 60 Å (shell 4): kept
    assert float(lowpass_25(fine).abs().max()) < 1e-6
    assert torch.allclose(lowpass_25(coarse), coarse, atol=1e-6)
    assert mask_radius_px(100.0, 64) == 12.5 and mask_radius_px(400.0, 40) == 20


def test_moments_of_known_samples():
    values = np.array([-1.0, 1.0, -1.0, 1.0])
    total, mean, std, skew, kurt = F.moments(values, np.ones(4, bool))
    assert (total, mean, std, skew, kurt) == (0.0, 0.0, 1.0, 0.0, 1.0)  # two-point: kurtosis 1
    rng = np.random.default_rng(0)
    g = rng.standard_normal(200_000)
    _, _, std, skew, kurt = F.moments(g, np.ones(g.size, bool))
    assert std == pytest.approx(1.0, abs=0.01) and abs(skew) < 0.02 and kurt == pytest.approx(3.0, abs=0.05)
    assert F.moments(values, np.zeros(4, bool)) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert F.moments(np.ones(5), np.ones(5, bool))[3:] == (0.0, 0.0)


def test_protein_mask_of_a_centred_disc():
    n, R = 64, 20.0
    image = _disc(n, 6.0)
    masks = F.protein_solvent_masks(image, R)
    assert masks.protein_area == int(_disc(n, 6.0).sum()) and masks.n_scattered == 0
    assert np.array_equal(masks.protein, image > 0)
    assert masks.solvent_area == int((F.radius_map(n) <= R).sum()) - masks.protein_area
    assert not (masks.protein & masks.solvent).any()


def test_small_island_is_scattered_and_outer_island_is_ignored():
    n, R = 64, 20.0
    big = _disc(n, 6.0)
    small = _disc(n, 1.0, centre=(0, 10))  # 5 px touching r <= 0.6 R = 12, below 0.1*3.14*0.36*R^2 = 45
    outer = _disc(n, 1.0, centre=(0, 16))  # entirely in 0.6 R < r <= R: never seeded
    masks = F.protein_solvent_masks(big + small + outer, R)
    assert masks.protein_area == int(big.sum())
    assert masks.n_scattered == int(small.sum())
    feats = F.image_features(big + small + outer, big + small + outer, R)
    n_s, area = int(small.sum()), int(big.sum())
    assert feats["rlnScatteredSignal"] == pytest.approx(n_s / (n_s + area + 1))
    assert feats["rlnProteinArea"] == 1.0 and feats["rlnSolventArea"] == 1.0


def test_car_of_a_square_and_edge_signal():
    n, R, s = 64, 20.0, 10
    image = np.zeros((n, n))
    image[27:27 + s, 27:27 + s] = 1.0
    feats = F.image_features(image, image, R)
    assert feats["rlnProteinCAR"] == pytest.approx((4 * s - 4) / (2 * math.sqrt(3.14 * s * s)))
    assert feats["rlnEdgeSignal"] == 0.0
    full = F.image_features(np.ones((n, n)), np.ones((n, n)) + _disc(n, R) * 0.0, R)
    r = F.radius_map(n)
    edge = np.round(r) == round(R)
    assert full["rlnEdgeSignal"] == pytest.approx((edge & (r <= R)).sum() / edge.sum())


def test_ring_protein_solvent_moments_and_relative_signal():
    n, R = 64, 20.0
    image = _disc(n, 6.0, value=3.0) - 0.5 * (_disc(n, R) - _disc(n, 6.0))  # protein 3, solvent -0.5
    feats = F.image_features(image, image, R)
    area = int(_disc(n, 6.0).sum())
    assert feats["rlnProteinMean"] == pytest.approx(3.0) and feats["rlnProteinStddev"] == pytest.approx(0.0)
    assert feats["rlnSolventMean"] == pytest.approx(-0.5) and feats["rlnRingMean"] == pytest.approx(-0.5)
    assert feats["rlnProteinSum"] == pytest.approx(3.0 * area)
    assert feats["rlnRelativeSignalIntensity"] == pytest.approx(3.0 * area + 0.5 * area)
    assert feats["rlnLowpassFilteredImageMax"] == 3.0 and feats["rlnLowpassFilteredImageMin"] == -0.5


def test_granulo_removes_structures_smaller_than_the_disc():
    n = 40
    for radius in range(1, 6):
        disc = _disc(n, float(radius))
        values = F.granulo(disc)
        assert values[radius - 1] == float(disc.sum())  # the disc itself fits: the opening keeps it
        assert values[radius:] == [0.0] * (6 - radius)  # larger discs do not: nothing is left
        assert all(v <= disc.sum() for v in values)  # an opening never adds
    assert F.granulo(np.full((n, n), 2.0), (3,)) == [2.0 * n * n]
    speck = np.zeros((n, n))
    speck[5, 5] = 7.0
    assert F.granulo(speck, (1,)) == [0.0]


def test_metadata_features_and_accuracy_fallback():
    meta = F.ClassMetadata(n_particles=200.0, resolution_angst=8.0, accuracy_rotation_deg=3.0,
                           accuracy_translation_angst=1.5, box_px=64, pixel_size_angst=2.0)
    f = F.metadata_features(meta)
    assert f["rlnWeightedResolution"] == pytest.approx(1 / (64 * math.log(200)))
    assert f["rlnRelativeResolution"] == pytest.approx(8.0 / 128.0)
    assert (f["rlnAccuracyRotations"], f["rlnAccuracyTranslations"]) == (3.0, 1.5)
    missing = F.metadata_features(F.ClassMetadata(50.0, 8.0, 999.0, 999.0, 64, 2.0))
    assert (missing["rlnAccuracyRotations"], missing["rlnAccuracyTranslations"]) == (5.0, 8.0)


def test_feature_vector_normalisation():
    base = {name: 1.0 for name, _, _ in F.VECTOR}
    rows = [dict(base, rlnProteinSum=float(v), rlnAccuracyRotations=4.352 + 4.759) for v in (1, 2, 3)]
    vec = F.feature_vectors(rows)
    assert vec.shape == (3, 24) and vec.dtype == np.float32
    assert np.allclose(vec[:, 0], 1.0)  # fixed z-score with RELION's mean and std
    z = np.array([-1.0, 0.0, 1.0]) / np.std([-1.0, 0.0, 1.0])
    assert np.allclose(vec[:, 21], z)  # per-job z-score, population std
    assert np.allclose(vec[:, 22], 0.0)  # constant over the job: 0


def test_first_peak_ctf_is_divided_out(tmp_path):
    """A 2D job run with "ignore CTFs until first peak": the averages are divided by the mean CTF."""
    import dataclasses

    import _ranker_jobs as R
    from vitrify.core.ctf import CtfParams, ctf_2d
    from vitrify.core.fourier import irfft2_centered, rfft2_centered
    from vitrify.ranker.inputs import read_class2d_job, undo_first_peak_ctf

    job = read_class2d_job(R.write_job(tmp_path))
    defocus = float(job.data.data["rlnDefocusU"].mean() + 15000.0) / 2
    ctf = ctf_2d(R.BOX_PX, CtfParams(pixel_size_angst=R.PIXEL_ANGST, defocus_u_angst=defocus, defocus_v_angst=defocus),
                 dtype=torch.float64)
    assert float(ctf.abs().min()) < 0.07  # the floor matters
    modulated = irfft2_centered(rfft2_centered(torch.as_tensor(job.images, dtype=torch.float64)) * ctf, R.BOX_PX)
    flagged = dataclasses.replace(job, images=modulated.float().numpy(),
                                  optimiser={**job.optimiser, "rlnDoIgnoreCtfUntilFirstPeak": 1})
    restored = undo_first_peak_ctf(flagged)
    keep = ctf.abs() >= 0.07  # where the CTF was not floored the division gives the image back exactly
    err = (rfft2_centered(torch.as_tensor(restored, dtype=torch.float64))
           - rfft2_centered(torch.as_tensor(job.images, dtype=torch.float64)))[..., keep].abs().max()
    assert float(err) < 1e-3 * float(rfft2_centered(torch.as_tensor(job.images, dtype=torch.float64)).abs().max())


def test_ground_truth_labels_of_a_pure_class_and_a_junk_class(tmp_path):
    """labels.label_job on simulated particles: class 1 holds every real particle and its average is
    the true projection, class 2 holds the junk: purity 1 / 0, agreement ~1, target ~1 / 0."""
    import pandas as pd

    from vitrify.core.euler import euler_to_matrix
    from vitrify.core.projector import project_real
    from vitrify.io.mrc import read_mrc
    from vitrify.io.star import read_star_optics
    from vitrify.ranker.inputs import Class2DJob, class_inputs
    from vitrify.ranker.labels import label_job
    from vitrify.sim.particles import ParticleOptions, simulate_particles

    sim = simulate_particles(ParticleOptions(n_particles=60, box_px=32, pixel_size_angst=4.0, junk_fraction=0.5,
                                             junk_kinds=("ice",), seed=3), tmp_path)
    real = (sim.truth["vtfMapIndex"] > 0).to_numpy()
    star = read_star_optics(sim.particles_star)
    star.data["rlnClassNumber"] = np.where(real, 1, 2)
    row = sim.truth[real].iloc[0]
    volume = torch.as_tensor(read_mrc(sim.truth_maps[0])[0], dtype=torch.float64)
    rot = euler_to_matrix(torch.tensor([row["rlnAngleRot"]]), torch.tensor([row["rlnAngleTilt"]]),
                          torch.tensor([40.0])).double()
    average = project_real(volume, rot)[0].numpy()  # the true view, rotated in-plane by 40 degrees
    noise = np.random.default_rng(0).standard_normal((32, 32)) * average.std()
    classes = pd.DataFrame({"rlnReferenceImage": ["000001@x", "000002@x"],
                            "rlnClassDistribution": [real.mean(), 1 - real.mean()],
                            "rlnEstimatedResolution": [12.0, 40.0]})
    job = Class2DJob(tmp_path / "o.star", {}, {}, classes, {}, star, tmp_path / "d.star", tmp_path / "m.star",
                     np.stack([average, noise]).astype(np.float32), 4.0, 100.0)
    labels = label_job(job, class_inputs(job), tmp_path)
    assert labels.purity.tolist() == [1.0, 0.0]
    assert labels.n_real.tolist() == [int(real.sum()), 0] and labels.n_junk.tolist() == [0, int((~real).sum())]
    assert labels.agreement[0] > 0.95 and labels.agreement[1] == 0.0
    assert labels.job_quality == 1.0 and labels.target[0] > 0.95 and labels.target[1] == 0.0

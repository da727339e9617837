"""Simulated particles against ground truth: projections, shifts, SNR, CTF zeros, truth.star."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitrify.io.atomic_model import read_atomic_model, write_atomic_model
from vitrify.io.mrc import read_mrc
from vitrify.io.star import read_star, resolve_image_name
from vitrify.sim.particles import ParticleOptions, simulate_particles


def _simulate(tmp_path, name="sim", **kwargs):
    base = dict(structures=("adk",), n_particles=40, box_px=48, pixel_size_angst=2.0, snr=0.5, seed=7)
    base.update(kwargs)
    result = simulate_particles(ParticleOptions(**base), tmp_path / name)
    images, pixel = read_mrc(result.particles_mrcs)
    return result, images, read_star(result.truth_star)["particles"]


def test_noise_free_images_are_projections_of_the_truth_map(tmp_path):
    from vitrify.core.euler import euler_to_matrix
    from vitrify.core.projector import project_real
    from vitrify.core.shifts import shift_2d

    result, images, truth = _simulate(tmp_path, apply_ctf=False, add_noise=False, max_shift_px=4.0)
    volume, pixel = read_mrc(result.truth_maps[0])
    assert pixel == pytest.approx(2.0)
    angles = torch.tensor(truth[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(np.float32))
    rotations = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    origins_px = torch.tensor(truth[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(np.float32)) / pixel
    expected = shift_2d(project_real(torch.tensor(volume), rotations), -origins_px).numpy()
    np.testing.assert_allclose(images, expected, atol=1e-4 * np.abs(expected).max())


def test_particle_centre_is_box_centre_minus_origin(tmp_path):
    """RELION's sign, checked by physics: the map's centre of mass projects to the centre."""
    _, images, truth = _simulate(tmp_path, apply_ctf=False, add_noise=False, max_shift_px=5.0)
    n = images.shape[-1]
    weights = np.clip(images, 0, None)
    yy, xx = np.mgrid[0:n, 0:n]
    com_x = (weights * xx).sum(axis=(1, 2)) / weights.sum(axis=(1, 2))
    com_y = (weights * yy).sum(axis=(1, 2)) / weights.sum(axis=(1, 2))
    np.testing.assert_allclose(com_x, n // 2 - truth["rlnOriginXAngst"] / 2.0, atol=0.35)
    np.testing.assert_allclose(com_y, n // 2 - truth["rlnOriginYAngst"] / 2.0, atol=0.35)


@pytest.mark.parametrize("colour", ["white", "coloured"])
def test_measured_snr_matches_requested(tmp_path, colour):
    snr = 0.3
    result, noisy, _ = _simulate(tmp_path, "noisy", n_particles=60, snr=snr, noise_colour=colour)
    _, clean, _ = _simulate(tmp_path, "clean", n_particles=60, snr=snr, noise_colour=colour,
                            add_noise=False)
    n = clean.shape[-1]
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    inside = np.hypot(xx, yy) <= result.particle_radius_px
    signal_var, noise_var = [], []
    for a, b in zip(noisy, clean):  # noisy = (clean + noise - mu) / sigma: regress it out
        design = np.stack([b.ravel(), np.ones(b.size)], axis=1)
        coef, *_ = np.linalg.lstsq(design, a.ravel(), rcond=None)
        residual = a.ravel() - design @ coef
        signal_var.append((coef[0] * b)[inside].var())
        noise_var.append(residual.reshape(n, n)[inside].var())
    measured = np.mean(signal_var) / np.mean(noise_var)
    assert measured == pytest.approx(snr, rel=0.2)


def test_noisy_images_are_normalised_like_relion_extraction(tmp_path):
    _, images, _ = _simulate(tmp_path, junk_fraction=0.3)
    n = images.shape[-1]
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    background = np.hypot(xx, yy) > int(0.75 * n / 2)
    np.testing.assert_allclose(images[:, background].mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(images[:, background].std(axis=1), 1, atol=1e-3)


def test_particles_are_white_protein(tmp_path):
    """After the CTF's positive first lobe, low-resolution density is bright, as in RELION."""
    _, images, _ = _simulate(tmp_path, add_noise=False, defocus_min_angst=15000,
                             defocus_max_angst=20000, pixel_size_angst=3.0)
    n = images.shape[-1]
    ft = np.fft.rfft2(images)
    ft[:, 4:-3, :] = 0
    ft[:, :, 4:] = 0
    low = np.fft.irfft2(ft, s=(n, n))
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    centre = np.hypot(xx, yy) < 6
    assert (low[:, centre].mean(axis=1) > 0).mean() > 0.9


def _ctf_zeros_px(box_px, pixel, defocus, voltage_kv=300.0, cs_mm=2.7, q0=0.1):
    """Radii (px) where RELION's CTF formula (formats.md §9) crosses zero, from scratch."""
    volts = voltage_kv * 1e3
    lam = 12.2643247 / np.sqrt(volts * (1 + 0.978466e-6 * volts))
    u = np.linspace(1e-4, 0.5 / pixel, 20000)
    gamma = (-np.pi * lam * defocus * u**2 + np.pi / 2 * cs_mm * 1e7 * lam**3 * u**4
             - np.arctan(q0 / np.sqrt(1 - q0**2)))
    ctf = -np.sin(gamma)
    crossings = np.flatnonzero(np.sign(ctf[1:]) != np.sign(ctf[:-1]))
    return u[crossings] * box_px * pixel


def test_ctf_zeros_are_where_the_formula_puts_them(tmp_path):
    box, pixel, defocus = 128, 2.0, 6000.0
    _, images, _ = _simulate(tmp_path, n_particles=24, box_px=box, pixel_size_angst=pixel,
                             add_noise=False, defocus_min_angst=defocus, defocus_max_angst=defocus,
                             astigmatism_max_angst=0.0)
    power = (np.abs(np.fft.fft2(images)) ** 2).mean(axis=0)
    ky, kx = np.meshgrid(np.fft.fftfreq(box) * box, np.fft.fftfreq(box) * box, indexing="ij")
    shells = np.round(np.hypot(kx, ky)).astype(int)
    radial = np.bincount(shells.ravel(), power.ravel()) / np.bincount(shells.ravel())
    zeros = _ctf_zeros_px(box, pixel, defocus)
    zeros = zeros[zeros < 0.8 * box / 2]
    assert len(zeros) >= 4
    peaks = (zeros[:-1] + zeros[1:]) / 2
    for zero, peak in zip(zeros[1:], peaks):
        k = int(round(zero))
        assert radial[k] < 0.3 * radial[int(round(peak))], (zero, peak)


def test_truth_star_is_consistent_with_particles_star(tmp_path):
    result, images, truth = _simulate(tmp_path, n_particles=120, junk_fraction=0.3,
                                      particles_per_micrograph=25)
    blocks = read_star(result.particles_star)
    assert list(blocks) == ["optics", "particles"]
    particles = blocks["particles"]
    assert len(particles) == len(truth) == len(images) == 120
    assert list(particles["rlnImageName"]) == list(truth["rlnImageName"])
    assert not {"rlnAngleRot", "rlnOriginXAngst"} & set(particles.columns)
    index, path = resolve_image_name(particles["rlnImageName"].iloc[5], result.particles_star.parent)
    assert (index, path) == (5, result.particles_mrcs)
    junk = truth["vtfJunkKind"] != "none"
    assert 0.15 < junk.mean() < 0.45
    assert (truth.loc[junk, "vtfMapIndex"] == 0).all() and (truth.loc[~junk, "vtfMapIndex"] == 1).all()
    assert set(truth.loc[junk, "vtfJunkKind"]) <= {"noise", "ice", "carbon", "aggregate"}
    per_mic = truth.groupby("rlnMicrographName")["rlnDefocusU"].nunique()
    assert len(per_mic) == 120 // 25 + 1 and (per_mic == 1).all()
    assert truth["rlnAngleTilt"].between(0, 180).all()
    assert blocks["optics"]["rlnImageSize"].iloc[0] == 48
    assert float(read_star(result.truth_star)["simulation"]["vtfSnr"]) == pytest.approx(0.5)


def test_same_seed_same_data_and_two_maps(tmp_path, adk_pdb):
    atoms = read_atomic_model(adk_pdb)
    half = write_atomic_model(tmp_path / "half.cif", atoms.select(np.arange(atoms.n_atoms) < 1700))
    result, images, truth = _simulate(tmp_path, "a", structures=(str(adk_pdb), str(half)),
                                      add_noise=False, apply_ctf=False)
    _, again, _ = _simulate(tmp_path, "b", structures=(str(adk_pdb), str(half)),
                            add_noise=False, apply_ctf=False)
    np.testing.assert_array_equal(images, again)
    assert [p.name for p in result.truth_maps] == ["truth_map.mrc", "truth_map_002.mrc"]
    assert set(truth["vtfMapIndex"]) == {1, 2}
    sums = images.sum(axis=(1, 2))
    small = truth["vtfMapIndex"].to_numpy() == 2
    assert sums[small].max() < sums[~small].min()  # half the atoms, half the projected mass


def test_each_junk_kind_looks_like_its_name(tmp_path):
    result, images, truth = _simulate(tmp_path, n_particles=60, junk_fraction=0.8, apply_ctf=False,
                                      add_noise=False, seed=3)
    kinds = truth["vtfJunkKind"].to_numpy()
    assert set(kinds) == {"none", "noise", "ice", "carbon", "aggregate"}
    n = images.shape[-1]
    radius = np.hypot(np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :])

    def high_frequency_share(stack: np.ndarray) -> np.ndarray:
        power = np.abs(np.fft.rfft2(stack)) ** 2
        return power[:, radius > 0.125].sum(axis=1) / power.sum(axis=(1, 2))

    sums = images.sum(axis=(1, 2))
    mass = sums[kinds == "none"]
    np.testing.assert_allclose(mass, mass[0], rtol=1e-3)  # a whole particle: its projected mass
    assert np.abs(images[kinds == "noise"]).max() == 0  # an empty box (noise only once added)
    assert (sums[kinds == "ice"] > 5 * mass[0]).all()  # ice blobs: strong ...
    assert (high_frequency_share(images[kinds == "ice"]) < 0.02).all()  # ... and smooth
    assert (high_frequency_share(images[kinds == "none"]) > 0.03).all()
    for image in images[kinds == "carbon"]:  # a step: empty on one side, a plateau on the other
        low, high = np.percentile(image, [10, 90])
        assert abs(low) < 0.05 * image.max() and high > 0.5 * image.max()
    aggregates = sums[kinds == "aggregate"] / mass[0]  # 2 to 4 particles, partly out of the box
    assert ((aggregates > 1.1) & (aggregates < 4.05)).all()

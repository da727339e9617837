"""Simulated micrographs and movies against their ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from vitrify.io.movies import read_gain, read_movie
from vitrify.io.mrc import read_mrc
from vitrify.io.star import read_star
from vitrify.sim.micrographs import MicrographOptions, simulate_micrographs
from vitrify.sim.movies import simulate_movies


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_particles_sit_at_their_coordinates_dark_and_apart(tmp_path):
    options = MicrographOptions(n_micrographs=2, size_px=(256, 256), pixel_size_angst=2.0,
                                particles_per_micrograph=12, carbon_fraction=1.0, seed=4)
    data = simulate_micrographs(options, tmp_path)
    particles = data.truth["particles"]
    assert len(particles) > 10
    for name, mic in zip(data.truth["micrographs"]["rlnMicrographName"], data.files):
        expected, pixel = read_mrc(tmp_path / "truth_micrographs" / f"{mic.stem}.mrc")
        counts, _ = read_mrc(mic)
        # Poisson counts around the expected counts
        assert counts.sum() == pytest.approx(expected.sum(), rel=0.01)
        assert expected.mean() == pytest.approx(options.total_dose * 4.0 * np.exp(-40 / 350), rel=0.1)
        rows = particles[particles["rlnMicrographName"] == name]
        xy = rows[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
        gaps = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
        radius_px = gaps[gaps > 0].min() / 2  # >= one particle radius by construction
        assert radius_px >= 8
        # black protein: the low-pass image is darker at each particle than on average
        smooth = ndimage.gaussian_filter(expected, 4)
        values = smooth[np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)]
        assert (values < np.median(smooth)).mean() > 0.9
    coords = read_star(tmp_path / "coordinates" / f"{data.files[0].stem}.star")
    table = next(iter(coords.values()))
    assert len(table) == (particles["rlnMicrographName"] == data.truth["micrographs"]
                          ["rlnMicrographName"].iloc[0]).sum()


def _undo(frames: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    from vitrify.core.shifts import shift_2d

    out = np.zeros(frames.shape[1:])
    for frame, (sx, sy) in zip(frames, shifts):
        padded = torch.as_tensor(frame, dtype=torch.float64)
        out += shift_2d(padded, torch.tensor([-sx, -sy], dtype=torch.float64)).numpy()
    return out


def test_movie_frames_aligned_with_the_true_drift_give_back_the_micrograph(tmp_path):
    options = MicrographOptions(n_micrographs=1, size_px=(256, 256), pixel_size_angst=2.0,
                                particles_per_micrograph=12, n_frames=8, dose_per_frame=8.0,
                                drift_total_px=10.0, local_drift_px=0.2, carbon_fraction=0.0, seed=5)
    data = simulate_movies(options, tmp_path)
    frames = read_movie(data.files[0]).astype(np.float64)
    gain = read_gain(tmp_path / "Movies" / "gain.mrc")
    expected, _ = read_mrc(tmp_path / "truth_micrographs" / f"{data.files[0].stem}.mrc")
    motion = read_star(data.truth_star)["global_motion"]
    shifts = motion[["rlnMicrographShiftX", "rlnMicrographShiftY"]].to_numpy()
    assert np.allclose(shifts[0], 0) and np.hypot(*shifts[-1]) > 3
    raw_sum = (frames * gain).sum(axis=0)
    aligned = _undo(frames * gain, shifts)
    crop = (slice(16, -16), slice(16, -16))
    low = [ndimage.gaussian_filter(x, 2)[crop] for x in (raw_sum, aligned, expected)]
    assert _corr(low[1], low[2]) > 0.8
    assert _corr(low[1], low[2]) > _corr(low[0], low[2]) + 0.1
    assert aligned.sum() == pytest.approx(expected.sum(), rel=0.02)


def test_counts_are_poisson_and_gain_is_the_inverse_sensitivity(tmp_path):
    options = MicrographOptions(n_micrographs=1, size_px=(128, 128), particles_per_micrograph=0,
                                carbon_fraction=0.0, ice_gradient_nm=0.0, n_frames=40,
                                dose_per_frame=4.0, drift_total_px=0.0, local_drift_px=0.0,
                                gain_sigma=0.1, movie_format="mrc", seed=6)
    data = simulate_movies(options, tmp_path)
    frames = read_movie(data.files[0]).astype(np.float64)
    assert frames.shape == (40, 128, 128) and np.all(frames == np.round(frames))
    mean, var = frames.mean(axis=0), frames.var(axis=0, ddof=1)
    assert float(var.mean() / mean.mean()) == pytest.approx(1.0, abs=0.05)  # Poisson: var = mean
    gain = read_gain(tmp_path / "Movies" / "gain.mrc")
    corrected = mean * gain
    assert corrected.std() / corrected.mean() < 0.6 * mean.std() / mean.mean()
    assert (tmp_path / "Movies" / f"{data.files[0].name}.mdoc").exists()
    assert (tmp_path / "Movies" / f"{data.files[0].stem}.xml").exists()
    movies = read_star(tmp_path / "movies.star")
    assert list(movies) == ["optics", "movies"]
    assert movies["movies"]["rlnMicrographMovieName"].iloc[0] == "Movies/mov_00001.mrc"

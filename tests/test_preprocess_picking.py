"""LoG picking against synthetic micrographs of dark discs at known positions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitrify.io.errors import InputError
from vitrify.preprocess.picking import (LogPickOptions, fourier_bin, match_picks, pick_log,
                                        suppress_close)


def _discs(n=512, pixel=2.0, diameter=100.0, count=12, snr=0.05, seed=0, sign=-1.0):
    """Projected spheres (dark by default) at well-separated random positions plus white noise."""
    rng = np.random.default_rng(seed)
    radius = diameter / 2 / pixel
    points: list[np.ndarray] = []
    while len(points) < count:
        p = rng.uniform(2 * radius, n - 2 * radius, 2)
        if all(np.hypot(*(p - q)) > 3 * radius for q in points):
            points.append(p)
    yy, xx = np.mgrid[:n, :n]
    image = np.zeros((n, n))
    for x, y in points:
        image += np.sqrt(np.clip(radius ** 2 - (xx - x) ** 2 - (yy - y) ** 2, 0, None)) / radius
    image = sign * image / image.std() * math.sqrt(snr) + rng.normal(size=(n, n))
    return torch.tensor(image, dtype=torch.float32), np.array(points)


def test_picks_match_truth(device):
    image, truth = _discs()
    picks = pick_log(image.to(device), 2.0, LogPickOptions(80.0, 120.0))
    precision, recall = match_picks(np.stack([picks.x_px, picks.y_px], 1), truth, tolerance_px=8)
    assert precision >= 0.9 and recall >= 0.9
    assert np.all(np.diff(picks.figure_of_merit) <= 0)
    assert np.all((picks.diameter_angst >= 80) & (picks.diameter_angst <= 120))


def test_pure_noise_gives_no_picks():
    noise = torch.randn(512, 512, generator=torch.Generator().manual_seed(5))
    assert len(pick_log(noise, 2.0, LogPickOptions(80.0, 120.0))) == 0


def test_invert_picks_bright_particles_only():
    image, truth = _discs(sign=1.0, seed=2)
    dark = pick_log(image, 2.0, LogPickOptions(80.0, 120.0))
    bright = pick_log(image, 2.0, LogPickOptions(80.0, 120.0, invert=True))
    _, recall_dark = match_picks(np.stack([dark.x_px, dark.y_px], 1), truth, 8)
    _, recall_bright = match_picks(np.stack([bright.x_px, bright.y_px], 1), truth, 8)
    assert recall_bright >= 0.9 and recall_dark < 0.2


def test_threshold_adjust_trades_picks():
    image, _ = _discs(snr=0.01, seed=3)
    loose = pick_log(image, 2.0, LogPickOptions(80.0, 120.0, threshold_adjust=-2.0))
    strict = pick_log(image, 2.0, LogPickOptions(80.0, 120.0, threshold_adjust=3.0))
    assert len(loose) > len(strict)


def test_fourier_bin_keeps_origin_and_mean():
    image = torch.zeros(64, 96)
    image[20, 30] = 1.0
    image = image + 2.0
    binned = fourier_bin(image, (32, 48))
    assert binned.shape == (32, 48)
    assert abs(float(binned.mean()) - float(image.mean())) < 1e-5
    row, col = np.unravel_index(int(binned.argmax()), binned.shape)
    assert (row, col) == (10, 15)


def test_suppress_close_keeps_best_of_neighbours():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    kept = suppress_close(points, np.array([1.0, 2.0, 0.5]), min_distance=3.0)
    assert kept.tolist() == [1, 2]


def test_bad_diameters_are_input_errors():
    with pytest.raises(InputError):
        LogPickOptions(150.0, 100.0)

"""Extraction: windows centred on coordinates, RELION's normalisation, rescaling, dust removal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitrify.io.errors import InputError

pytest.importorskip("vitrify.core.fourier")
from vitrify.preprocess.extraction import (ExtractOptions, background_mask,  # noqa: E402
                                           extract_particles, window_particles)


def _blobs(points, n=200, sigma=3.0, seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                            indexing="ij")
    image = noise * torch.randn(n, n, generator=g) + 5.0
    for x, y in points:
        image -= torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return image


def test_window_centres_particle_and_skips_edges(device):
    points = [(50.0, 60.0), (120.2, 80.7), (5.0, 100.0)]
    image = _blobs(points, noise=0.01).to(device)
    windows, kept = window_particles(image, np.array([p[0] for p in points]),
                                     np.array([p[1] for p in points]), 32)
    assert kept.tolist() == [0, 1]
    for w in windows:
        row, col = np.unravel_index(int(w.argmin()), w.shape)
        assert (row, col) == (16, 16)


def test_normalised_background_has_zero_mean_unit_sigma_and_is_inverted(device):
    image = _blobs([(60.0, 60.0), (140.0, 130.0)]).to(device)
    options = ExtractOptions(box_px=48)
    images, kept = extract_particles(image, np.array([60.0, 140.0]), np.array([60.0, 130.0]), options)
    mask = background_mask(48, options.background_radius_px, device)
    background = images[:, mask]
    assert torch.allclose(background.mean(1), torch.zeros(2, device=device), atol=1e-4)
    assert torch.allclose(background.std(1, unbiased=False), torch.ones(2, device=device), atol=1e-3)
    assert float(images[:, 24, 24].min()) > 3.0  # dark blob became white


def test_rescale_gives_output_size_and_default_background_radius():
    image = _blobs([(100.0, 100.0)])
    options = ExtractOptions(box_px=64, rescale_px=32)
    images, _ = extract_particles(image, np.array([100.0]), np.array([100.0]), options)
    assert images.shape == (1, 32, 32)
    assert options.background_radius_px == 12.0  # int(0.75 * 64/2 * 32/64)
    row, col = np.unravel_index(int(images[0].argmax()), (32, 32))
    assert (row, col) == (16, 16)


def test_dust_removal_replaces_outliers():
    image = _blobs([(100.0, 100.0)])
    image[100, 95] = 500.0  # a hot pixel near the particle
    clean, _ = extract_particles(image, np.array([100.0]), np.array([100.0]),
                                 ExtractOptions(box_px=48, white_dust_sigma=5.0, invert_contrast=False))
    dirty, _ = extract_particles(image, np.array([100.0]), np.array([100.0]),
                                 ExtractOptions(box_px=48, invert_contrast=False))
    assert float(dirty.max()) > 50 and float(clean.max()) < 10


def test_no_particles_gives_empty_stack():
    images, kept = extract_particles(_blobs([]), np.zeros(0), np.zeros(0), ExtractOptions(box_px=32))
    assert images.shape == (0, 32, 32) and len(kept) == 0


def test_odd_box_is_an_input_error():
    with pytest.raises(InputError, match="even"):
        ExtractOptions(box_px=33)

"""Fourier layout helpers: centring, round trips, shells, crop/pad rescaling."""

from __future__ import annotations

import math

import pytest
import torch

from vitrify.core.fourier import (fft2_centered, fourier_crop_2d, fourier_pad_2d, frequency_grid_2d,
                                  hermitian_weights_2d, ifft2_centered, irfft2_centered,
                                  irfft3_centered, rescale_2d, rescale_3d, rfft2_centered,
                                  rfft3_centered, shell_index_2d, shell_index_3d, shell_sums)
from vitrify.io.errors import InputError


def _gauss2d(n: int, sigma: float, device, centre=(0.0, 0.0)) -> torch.Tensor:
    c = torch.arange(n, device=device, dtype=torch.float32) - n // 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma * sigma))


@pytest.mark.parametrize("n", [31, 32])
def test_round_trips(device, n):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, n, n, generator=g).to(device)
    torch.testing.assert_close(irfft2_centered(rfft2_centered(x), n), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ifft2_centered(fft2_centered(x)), x, atol=1e-5, rtol=0)
    v = torch.randn(2, n, n, n, generator=g).to(device)
    torch.testing.assert_close(irfft3_centered(rfft3_centered(v), n), v, atol=1e-5, rtol=0)


def test_centred_symmetric_object_has_real_transform(device):
    f = rfft2_centered(_gauss2d(32, 3.0, device))
    assert f.imag.abs().max() < 1e-4 * f.real.abs().max()
    assert float(f[0, 0].real) == pytest.approx(2 * math.pi * 9.0, rel=1e-4)  # DC = sum of pixels


def test_frequency_grid_and_shells(device):
    ky, kx = frequency_grid_2d(8, device=device)
    assert ky.shape == (8, 5) and float(ky[4, 0]) == -4 and float(kx[0, 4]) == 4
    shells = shell_index_2d(8, device=device)
    assert int(shells[0, 0]) == 0 and int(shells[3, 4]) == 5
    counts = shell_sums(torch.ones(8, 8, 5, device=device), shell_index_3d(8, device=device), 5)
    assert counts.shape == (5,) and float(counts[0]) == 1.0


def test_hermitian_weights_parseval(device):
    x = torch.randn(16, 16, generator=torch.Generator().manual_seed(1)).to(device)
    w = hermitian_weights_2d(16, device=device)
    half = (w * rfft2_centered(x).abs() ** 2).sum()
    full = (fft2_centered(x).abs() ** 2).sum()
    torch.testing.assert_close(half, full, rtol=1e-5, atol=0)


@pytest.mark.parametrize("n_out", [24, 33, 64])
def test_rescale_band_limited_image(device, n_out):
    """A smooth blob resampled to another box equals the blob drawn at the new pixel size."""
    n, sigma = 48, 4.0
    img = _gauss2d(n, sigma, device, centre=(2.0, -3.0))
    out = rescale_2d(img, n_out)
    f = n_out / n
    expected = _gauss2d(n_out, sigma * f, device, centre=(2.0 * f, -3.0 * f))
    if n % 2 == 0 and n_out % 2 == 1:  # odd boxes put the centre at n//2: half a pixel off
        expected = None
    if expected is not None:
        torch.testing.assert_close(out, expected, atol=2e-3, rtol=0)
    assert float(out.sum() / n_out ** 2) == pytest.approx(float(img.sum() / n ** 2), rel=1e-4)


def test_crop_then_pad_keeps_low_frequencies(device):
    f = rfft2_centered(torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(2)).to(device))
    small = fourier_crop_2d(f, 16)
    back = fourier_crop_2d(fourier_pad_2d(small, 32), 16)
    inner = torch.ones(16, 9, dtype=torch.bool, device=device)
    inner[8, :] = False
    inner[:, 8] = False
    torch.testing.assert_close(back[:, inner], small[:, inner])
    with pytest.raises(InputError):
        fourier_crop_2d(f, 40)


def test_rescale_3d_round_trip_band_limited(device):
    f = rfft3_centered(torch.randn(16, 16, 16, generator=torch.Generator().manual_seed(3)).to(device))
    f = f * (shell_index_3d(16, device=device) <= 6)
    v = irfft3_centered(f, 16)
    up = rescale_3d(v, 24)
    assert up.shape == (24, 24, 24)
    assert float(up.mean()) == pytest.approx(float(v.mean()), abs=1e-5)
    torch.testing.assert_close(rescale_3d(up, 16), v, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [98, 196, 99])
def test_frequency_grid_is_exact_integers_in_float64(n):
    """fftfreq's float64 values are off by an ulp for such sizes; ties of |k| / pad then round wrongly."""
    ky, kx = frequency_grid_2d(n, dtype=torch.float64)
    expected = torch.fft.fftfreq(n).mul(n).round().to(torch.float64)
    assert torch.equal(ky[:, 0], expected) and torch.equal(kx[0], torch.arange(n // 2 + 1, dtype=torch.float64))


def test_shell_index_oversampling_gives_the_unpadded_shell(device):
    """On a twice padded grid, frequency j belongs to shell round(|j| / 2) of the image, ties to even."""
    shells = shell_index_2d(196, oversampling=2, device=device).cpu()
    assert int(shells[0, 1]) == 0 and int(shells[0, 5]) == 2 and int(shells[0, 7]) == 4  # 0.5, 2.5, 3.5
    assert int(shells[3, 4]) == 2 and int(shells[0, 98]) == 49  # |(3, 4)| = 5 -> 2.5 -> 2
    assert torch.equal(shell_index_2d(64, oversampling=1), shell_index_2d(64))


def test_shell_sums_mean_divides_by_the_pixel_count(device):
    shells = shell_index_2d(16, device=device)
    values = torch.rand(3, 16, 9, device=device, dtype=torch.float64)
    counts = shell_sums(torch.ones(16, 9, device=device, dtype=torch.float64), shells, 12)
    means = shell_sums(values, shells, 12, mean=True)
    torch.testing.assert_close(means, shell_sums(values, shells, 12) / counts)
    assert float(shell_sums(values, shells, 14, mean=True)[:, 13].abs().max()) == 0.0  # empty shell stays 0

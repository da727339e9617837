"""FSC/FRC, soft masks and Fourier filters against closed-form expectations."""

from __future__ import annotations

import math

import pytest
import torch

from vitrify.core.filters import apply_bfactor, highpass_filter, lowpass_filter, resolution_to_shell
from vitrify.core.fourier import radius_grid_2d, rfft2_centered
from vitrify.core.fsc import frc, fsc, resolution_at_threshold, shell_resolution_angst
from vitrify.core.masks import apply_soft_mask, soft_circular_mask, soft_spherical_mask
from vitrify.io.errors import InputError


def test_fsc_identical_and_independent(device):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(24, 24, 24, generator=g).to(device)
    b = torch.randn(24, 24, 24, generator=g).to(device)
    torch.testing.assert_close(fsc(a, a), torch.ones(13, device=device))
    curve = fsc(a, b)
    # independent noise: |FSC| ~ 1/sqrt(#voxels in shell) -> small beyond the first shells
    assert float(curve[4:].abs().max()) < 0.2
    torch.testing.assert_close(fsc(a, -3 * a), -torch.ones(13, device=device))


def test_frc_of_noisy_copies_follows_snr(device):
    """Two copies with independent noise of equal power: FRC = SNR / (1 + SNR) = 0.5 at SNR 1."""
    g = torch.Generator().manual_seed(1)
    signal = torch.randn(64, 128, 128, generator=g)
    n1, n2 = torch.randn(64, 128, 128, generator=g), torch.randn(64, 128, 128, generator=g)
    curve = frc(signal + n1, signal + n2).mean(0)
    assert abs(float(curve[5:].mean()) - 0.5) < 0.02


def test_resolution_at_threshold():
    curve = torch.tensor([1.0, 0.9, 0.8, 0.5, 0.2, 0.1, 0.0])
    # drops below 0.143 between shells 4 (0.2) and 5 (0.1): shell 4.57
    res = resolution_at_threshold(curve, box_px=12, pixel_size_angst=2.0)
    assert res == pytest.approx(24.0 / (4 + 0.057 / 0.1), rel=1e-6)
    assert resolution_at_threshold(torch.ones(7), 12, 2.0) == 4.0
    assert float(shell_resolution_angst(12, 2.0)[3]) == pytest.approx(8.0)


def test_soft_masks(device):
    m = soft_circular_mask(64, 20.0, 6.0, device=device)
    assert m.shape == (64, 64)
    assert float(m[32, 32]) == 1.0 and float(m[32, 32 + 20]) == 1.0
    assert float(m[32, 32 + 23]) == pytest.approx(0.5, abs=1e-6)
    assert float(m[32, 32 + 26]) == pytest.approx(0.0, abs=1e-6) and float(m[0, 0]) == 0.0
    s = soft_spherical_mask(32, 10.0, 4.0, device=device)
    assert float(s[16, 16, 16 + 12]) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(InputError):
        soft_circular_mask(16, -1.0)


def test_apply_soft_mask_mean_background(device):
    x = torch.full((2, 32, 32), 3.0, device=device)
    x[:, 16, 16] = 10.0
    out = apply_soft_mask(x, 8.0, 3.0, background="mean")
    torch.testing.assert_close(out[:, 0, 0], torch.full((2,), 3.0, device=device))
    assert float(out[0, 16, 16]) == 10.0
    assert float(apply_soft_mask(x, 8.0, 3.0, background="zero")[0, 0, 0]) == 0.0
    with pytest.raises(InputError):
        apply_soft_mask(x, 8.0, background="noise?")


def test_lowpass_and_highpass_split_spectrum(device):
    n, pixel = 64, 2.0
    x = torch.randn(3, n, n, generator=torch.Generator().manual_seed(2)).to(device)
    low = lowpass_filter(x, 10.0, pixel, width_shells=0)
    high = highpass_filter(x, 10.0, pixel, width_shells=0)
    torch.testing.assert_close(low + high, x, atol=1e-5, rtol=0)
    shell = resolution_to_shell(10.0, n, pixel)  # 12.8 px
    r = radius_grid_2d(n, device=device)
    f = rfft2_centered(low)
    assert float(f[:, r > shell + 0.01].abs().max()) < 1e-4
    torch.testing.assert_close(f[:, r < shell - 0.01], rfft2_centered(x)[:, r < shell - 0.01],
                               atol=1e-3, rtol=0)


def test_bfactor_gaussian_width(device):
    """exp(-B s²/4) on a Gaussian of σ adds B/(8π²) to σ² (in Å²)."""
    n, pixel, sigma_px, b = 64, 1.0, 2.0, 40.0
    c = torch.arange(n, dtype=torch.float64, device=device) - n // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    def gauss(s2):
        return torch.exp(-(x * x + y * y + z * z) / (2 * s2)) / (2 * math.pi * s2) ** 1.5
    out = apply_bfactor(gauss(sigma_px ** 2), b, pixel)
    expected = gauss(sigma_px ** 2 + b / (8 * math.pi ** 2))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)

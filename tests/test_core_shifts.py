"""Phase-shift translations and RELION's origin sign."""

from __future__ import annotations

import pytest
import torch

from vitrify.core.fourier import irfft2_centered, rfft2_centered, rfft3_centered, irfft3_centered
from vitrify.core.shifts import origin_angst_to_shift_px, phase_shift_2d, phase_shift_3d, shift_2d


def _blob(n, device, x0=0.0, y0=0.0, sigma=2.0):
    c = torch.arange(n, device=device, dtype=torch.float32) - n // 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma * sigma))


def test_integer_shift_is_roll(device):
    x = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(0)).to(device)
    out = irfft2_centered(phase_shift_2d(rfft2_centered(x), torch.tensor([3.0, -2.0], device=device)), 16)
    torch.testing.assert_close(out, torch.roll(x, shifts=(-2, 3), dims=(-2, -1)), atol=1e-5, rtol=0)


def test_fractional_shift_moves_blob(device):
    img = _blob(32, device)
    moved = shift_2d(img, torch.tensor([2.5, -1.25], device=device))
    torch.testing.assert_close(moved, _blob(32, device, 2.5, -1.25), atol=1e-4, rtol=0)


def test_batched_shifts_broadcast(device):
    f = rfft2_centered(_blob(16, device))
    s = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], device=device)
    out = phase_shift_2d(f, s)
    assert out.shape == (3, 16, 9)
    torch.testing.assert_close(out[0], f)


def test_relion_origin_centres_particle(device):
    """A particle at (box centre - origin) is centred by shifting by +origin (formats.md §8)."""
    pixel = 1.5
    origin_angst = torch.tensor([4.5, -3.0], device=device)
    particle = _blob(32, device, x0=-4.5 / pixel, y0=3.0 / pixel)
    shift = origin_angst_to_shift_px(origin_angst[0], origin_angst[1], pixel)
    centred = shift_2d(particle, shift)
    torch.testing.assert_close(centred, _blob(32, device), atol=1e-4, rtol=0)


def test_shift_3d_is_roll(device):
    v = torch.randn(8, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
    out = irfft3_centered(phase_shift_3d(rfft3_centered(v), torch.tensor([1.0, 2.0, -3.0], device=device)), 8)
    torch.testing.assert_close(out, torch.roll(v, shifts=(-3, 2, 1), dims=(0, 1, 2)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [15, 16])
def test_shift_inverse(device, n):
    f = rfft2_centered(_blob(n, device, 1.0, 2.0))
    s = torch.tensor([0.3, -1.7], device=device)
    torch.testing.assert_close(phase_shift_2d(phase_shift_2d(f, s), -s), f, atol=1e-4, rtol=0)

"""Back-projection: a map reconstructed from exact projections with known angles."""

from __future__ import annotations

import pytest
import torch

from _core_blobs import blob_projections, blob_volume, make_blobs, random_rotations
from vitrify.core.backprojector import BackProjector
from vitrify.core.euler import euler_to_matrix, rotation_2d
from vitrify.core.fourier import rfft2_centered
from vitrify.core.fsc import fsc
from vitrify.core.projector import make_projector_2d, rotate_2d_fourier
from vitrify.io.errors import InputError

N = 32


@pytest.fixture(scope="module")
def dataset():
    """2,000 exact projections of a blob map (box 32) with known RELION angles."""
    centres, sigmas = make_blobs(20, seed=11, extent_px=8.0, sigma_px=(1.0, 1.6))
    mats = euler_to_matrix(*random_rotations(2000, seed=4))
    images = blob_projections(N, centres, sigmas, mats)
    return blob_volume(N, centres, sigmas).float(), rfft2_centered(images.float()), mats.float()


def test_reconstruction_fsc_above_0p9_to_0p8_nyquist(device, dataset):
    truth, slices, mats = dataset
    bp = BackProjector(N, pad=2, device=device)
    bp.insert(slices.to(device), None, mats.to(device))
    rec = bp.reconstruct()
    curve = fsc(rec, truth.to(device)).cpu()
    limit = int(0.8 * (N // 2))
    assert bool((curve[: limit + 1] > 0.9).all()), curve
    assert float((rec.cpu() - truth).abs().max() / truth.abs().max()) < 0.05


def test_wiener_term_shrinks_towards_zero(device, dataset):
    truth, slices, mats = dataset
    bp = BackProjector(N, device=device)
    bp.insert(slices[:200].to(device), torch.ones(N, N // 2 + 1, device=device), mats[:200].to(device))
    plain = bp.reconstruct()
    huge = bp.reconstruct(tau2=torch.full((N // 2 + 1,), 1e12, device=device))
    torch.testing.assert_close(plain, huge, atol=1e-3 * float(plain.abs().max()), rtol=0)
    tiny = bp.reconstruct(tau2=torch.full((N // 2 + 1,), 1e-9, device=device))
    assert float(tiny.abs().max()) < 1e-3 * float(plain.abs().max())


def test_weights_are_normalised_out(device, dataset):
    """Data x·w with weights w give the same map as unweighted data."""
    _, slices, mats = dataset
    w = torch.rand(300, N, N // 2 + 1, generator=torch.Generator().manual_seed(0)) + 0.5
    a, b = BackProjector(N, device=device), BackProjector(N, device=device)
    a.insert(slices[:300].to(device), None, mats[:300].to(device))
    b.insert((slices[:300] * w).to(device), w.to(device), mats[:300].to(device))
    ra, rb = a.reconstruct(), b.reconstruct()
    assert float((ra - rb).abs().max()) < 0.1 * float(ra.abs().max())


def test_2d_back_projection_recovers_image(device):
    """2D: rotated copies of an image, inserted with their angles, give the image back."""
    g = torch.Generator().manual_seed(0)
    c = torch.arange(N, dtype=torch.float32) - N // 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    img = torch.exp(-((x - 4) ** 2 + (y + 2) ** 2) / 8) + 0.5 * torch.exp(-((x + 5) ** 2 + (y - 6) ** 2) / 5)
    psi = torch.rand(300, generator=g) * 360
    views = rotate_2d_fourier(make_projector_2d(img[None].to(device)), psi.to(device))[0]
    bp = BackProjector(N, ndim=2, device=device)
    bp.insert(views, None, rotation_2d(psi).to(device))
    rec = bp.reconstruct()
    assert rec.shape == (N, N)
    assert float((rec.cpu() - img).abs().max()) < 0.05 * float(img.max())


def test_rejects_mismatched_rotations(device):
    bp = BackProjector(8, device=device)
    with pytest.raises(InputError):
        bp.insert(torch.zeros(3, 8, 5, dtype=torch.complex64, device=device), None,
                  torch.eye(3, device=device).expand(2, 3, 3))

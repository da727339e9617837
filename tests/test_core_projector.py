"""Projector: the projection-slice theorem against exact real-space projections.

Tolerances reflect trilinear interpolation with padding 2: the gridding correction is exact on
average over sub-voxel offsets, so samples that fall exactly on grid points (identity rotation, DC)
are over-corrected by up to ~1/sinc² at the edge of the object (about 5% here).
"""

from __future__ import annotations

import math

import pytest
import torch

from _core_blobs import blob_image, blob_projections, blob_volume, make_blobs, random_rotations
from vitrify.core.euler import euler_to_matrix
from vitrify.core.fourier import irfft2_centered, rfft2_centered
from vitrify.core.projector import (make_projector, make_projector_2d, project_fourier, project_real,
                                    rotate_2d_fourier)


@pytest.fixture(scope="module")
def blobs():
    centres, sigmas = make_blobs(12, seed=5, extent_px=7.0, sigma_px=(1.5, 2.5))
    return centres, sigmas, blob_volume(32, centres, sigmas)


def test_projection_slice_theorem(device, blobs):
    centres, sigmas, vol = blobs
    rot, tilt, psi = random_rotations(6, seed=1)
    mats = euler_to_matrix(rot, tilt, psi)
    truth = blob_projections(32, centres, sigmas, mats)
    got = project_real(vol.float().to(device), mats.float().to(device)).cpu().double()
    err = (got - truth).abs().max() / truth.abs().max()
    assert err < 0.02
    for g, t in zip(got, truth):
        assert torch.corrcoef(torch.stack([g.ravel(), t.ravel()]))[0, 1] > 0.9998


def test_fourier_slice_matches_transform_of_projection(device, blobs):
    centres, sigmas, vol = blobs
    mats = euler_to_matrix(torch.tensor([20.0]), torch.tensor([70.0]), torch.tensor([-40.0])).double()
    truth_ft = rfft2_centered(blob_projections(32, centres, sigmas, mats))
    got = project_fourier(make_projector(vol.float().to(device)), mats.float().to(device)).cpu()
    assert got.shape == (1, 32, 17)
    rel = (got.to(torch.complex128) - truth_ft).abs().max() / truth_ft.abs().max()
    assert rel < 0.06


def test_identity_projection_is_sum_along_z(device, blobs):
    _, _, vol = blobs
    got = project_real(vol.float().to(device), torch.eye(3, device=device))
    torch.testing.assert_close(got.cpu().double(), vol.sum(0), atol=0.06 * float(vol.sum(0).max()), rtol=0)


def test_batch_shapes_and_classes(device, blobs):
    _, _, vol = blobs
    vols = torch.stack([vol, 2 * vol]).float().to(device)
    mats = euler_to_matrix(torch.zeros(4, 5, device=device), 30.0, 0.0)
    out = project_fourier(make_projector(vols), mats)
    assert out.shape == (2, 4, 5, 32, 17)
    torch.testing.assert_close(out[1], 2 * out[0])


def test_rotate_2d_matches_analytic_rotation(device):
    n = 32
    centres, sigmas = make_blobs(6, seed=2, extent_px=7.0, sigma_px=(1.5, 2.5))
    ref = blob_image(n, centres[:, :2], sigmas).float().to(device)
    psis = torch.tensor([0.0, 37.0, 90.0, -150.0], device=device)
    out = rotate_2d_fourier(make_projector_2d(ref[None]), psis)
    assert out.shape == (1, 4, n, n // 2 + 1)
    images = irfft2_centered(out[0], n).cpu().double()
    for img, psi in zip(images, psis.cpu().tolist()):
        # output k samples the reference at R(psi)^T k, so a blob at p moves to R(psi) p
        c, s = math.cos(math.radians(psi)), math.sin(math.radians(psi))
        moved = torch.stack([c * centres[:, 0] + s * centres[:, 1], -s * centres[:, 0] + c * centres[:, 1]], -1)
        truth = blob_image(n, moved, sigmas)
        assert (img - truth).abs().max() < 0.05 * truth.abs().max()
    plain = rotate_2d_fourier(rfft2_centered(ref), torch.tensor(0.0, device=device))
    torch.testing.assert_close(irfft2_centered(plain, n), ref, atol=1e-4, rtol=0)


def test_rotation_2d_equals_3d_psi(device, blobs):
    """A 2D in-plane rotation of a projection equals projecting with that psi."""
    _, _, vol = blobs
    proj = make_projector(vol.float().to(device))
    top = project_real(vol.float().to(device), torch.eye(3, device=device))
    rotated_2d = irfft2_centered(rotate_2d_fourier(make_projector_2d(top), torch.tensor(25.0, device=device)), 32)
    rotated_3d = irfft2_centered(project_fourier(proj, euler_to_matrix(0.0, 0.0, 25.0).to(device)), 32)
    assert (rotated_2d - rotated_3d).abs().max() < 0.05 * rotated_3d.abs().max()

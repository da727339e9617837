"""HEALPix directions, psi / translation grids, asymmetric units, local cones, oversampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitrify.core.euler import euler_to_matrix
from vitrify.core.sampling import angular_step_deg, asymmetric_unit_mask, direction_vectors, \
    directions_within_cone, healpix_directions, healpix_vectors, inplane_angles, orientation_grid, \
    oversample_directions, oversample_psi, oversample_translations, translation_grid
from vitrify.core.symmetry import symmetry_matrices
from vitrify.io.errors import InputError


def _ring_centres(nside: int) -> np.ndarray:
    """Pixel centres ``(12 nside², 2)`` as ``(z, phi)`` by the RING-scheme formulas (independent)."""
    npix, ncap = 12 * nside * nside, 2 * nside * (nside - 1)
    out = []
    for p in range(npix):
        if p < ncap:
            i = (1 + math.isqrt(1 + 2 * p)) >> 1
            j = p + 1 - 2 * i * (i - 1)
            out.append((1 - i * i / (3 * nside * nside), (j - 0.5) * math.pi / (2 * i)))
        elif p < npix - ncap:
            q = p - ncap
            i, j = q // (4 * nside) + nside, q % (4 * nside) + 1
            shift = 1.0 if (i + nside) % 2 else 0.5
            out.append(((2 * nside - i) * 2 / (3 * nside), (j - shift) * math.pi / (2 * nside)))
        else:
            q = npix - p
            i = (1 + math.isqrt(2 * q - 1)) >> 1
            j = 4 * i + 1 - (q - 2 * i * (i - 1))
            out.append((-(1 - i * i / (3 * nside * nside)), (j - 0.5) * math.pi / (2 * i)))
    return np.array(out)


@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_nested_centres_equal_ring_centres(order):
    nside = 2**order
    ring = _ring_centres(nside)
    ring_v = np.stack([np.sqrt(1 - ring[:, 0] ** 2) * np.cos(ring[:, 1]),
                       np.sqrt(1 - ring[:, 0] ** 2) * np.sin(ring[:, 1]), ring[:, 0]], -1)
    nest_v = healpix_vectors(order, dtype=torch.float64).numpy()
    assert nest_v.shape == (12 * 4**order, 3)
    # every nested centre is exactly one ring centre (a permutation of the same set)
    match = np.abs(nest_v @ ring_v.T - 1) < 1e-12
    assert (match.sum(1) == 1).all() and (match.sum(0) == 1).all()


def test_order0_values_match_healpix():
    d = healpix_directions(0, dtype=torch.float64)
    tilt_north = math.degrees(math.acos(2 / 3))
    assert torch.allclose(d[0], torch.tensor([45.0, tilt_north], dtype=torch.float64))
    assert torch.allclose(d[4], torch.tensor([0.0, 90.0], dtype=torch.float64))
    assert torch.allclose(d[10], torch.tensor([-135.0, 180 - tilt_north], dtype=torch.float64))
    # nested children of pixel 0 at order 1 surround it (all within one order-0 pixel radius)
    kids = healpix_vectors(1, torch.arange(4), dtype=torch.float64)
    parent = healpix_vectors(0, [0], dtype=torch.float64)
    assert float((kids @ parent.T).min()) > math.cos(math.radians(42))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_directions_cover_sphere_uniformly(order):
    d = healpix_directions(order, dtype=torch.float64)
    assert d.shape == (12 * 4**order, 2)
    assert float(d[:, 0].min()) > -180 and float(d[:, 0].max()) <= 180
    v = direction_vectors(d[:, 0], d[:, 1])
    assert torch.allclose(v, healpix_vectors(order, dtype=torch.float64), atol=1e-12)
    # the direction is the third row of RELION's matrix
    assert torch.allclose(v, euler_to_matrix(d[:, 0], d[:, 1], torch.zeros_like(d[:, 0]))[:, 2],
                          atol=1e-12)
    g = v @ v.T
    g.fill_diagonal_(-2)
    nearest = torch.rad2deg(torch.acos(g.max(1).values.clamp(-1, 1)))
    step = angular_step_deg(order)
    assert float(nearest.max()) <= step and float(nearest.min()) > 0.6 * step
    # low-order moments of a uniform distribution
    assert float(v.mean(0).abs().max()) < 1e-12
    assert abs(float((v[:, 2] ** 2).mean()) - 1 / 3) < 0.04 / 4**order
    assert abs(float((v[:, 0] * v[:, 1] * v[:, 2]).mean())) < 1e-3


def test_pixels_have_equal_area():
    # assign uniform random points to their nearest centre: equal-area pixels get equal shares
    gen = torch.Generator().manual_seed(0)
    pts = torch.randn(200_000, 3, generator=gen, dtype=torch.float64)
    pts = pts / torch.linalg.norm(pts, dim=1, keepdim=True)
    centres = healpix_vectors(1, dtype=torch.float64)
    counts = torch.bincount((pts @ centres.T).argmax(1), minlength=len(centres)).double()
    expected = len(pts) / len(centres)
    assert float((counts / expected - 1).abs().max()) < 0.2
    assert abs(float(counts.std() / expected)) < 0.12


def test_steps_and_psi():
    assert [angular_step_deg(k) for k in range(4)] == [60.0, 30.0, 15.0, 7.5]
    psi = inplane_angles(15.0, dtype=torch.float64)
    assert len(psi) == 24 and float(psi[1]) == 15.0 and float(psi[-1]) == 345.0
    psi7 = inplane_angles(7.0, dtype=torch.float64)  # ceil(360/7) = 52 samples, step 360/52
    assert len(psi7) == 52 and abs(float(psi7[1]) - 360 / 52) < 1e-12
    for bad in (0.0, -5.0, 400.0):
        with pytest.raises(InputError):
            inplane_angles(bad)
    with pytest.raises(InputError):
        healpix_directions(-1)


def test_translation_grid():
    grid = translation_grid(6, 2, dtype=torch.float64)
    assert grid.shape == (29, 2)  # points (2i, 2j) with i² + j² <= 9
    assert bool((grid.norm(dim=1) <= 6 + 1e-9).all())
    assert bool(((grid == 0).all(1)).any())
    assert set(map(tuple, grid.tolist())) >= {(6.0, 0.0), (0.0, -6.0), (4.0, 4.0)}
    assert (4.0, 6.0) not in set(map(tuple, grid.tolist()))
    assert translation_grid(0, 1).shape == (1, 2)
    with pytest.raises(InputError):
        translation_grid(5, 0)


def test_orientation_grid_counts(device):
    grid = orientation_grid(2, device=device)
    assert grid.shape == (12 * 16 * 24, 3) and grid.device.type == device.type
    assert torch.equal(grid[:24, 2].cpu(), inplane_angles(15.0))
    assert orientation_grid(1, psi_step_deg=10).shape == (48 * 36, 3)


@pytest.mark.parametrize("name", ["C4", "D3", "T", "O", "I"])
def test_asymmetric_unit_covers_sphere_once(name):
    order = 3
    d = healpix_directions(order, dtype=torch.float64)
    keep = asymmetric_unit_mask(d[:, 0], d[:, 1], name)
    mats = symmetry_matrices(name, dtype=torch.float64)
    n_ops = len(mats)
    assert abs(int(keep.sum()) - len(d) / n_ops) <= 0.2 * len(d) / n_ops + 2
    # every direction on the sphere has a symmetry mate close to a kept direction
    gen = torch.Generator().manual_seed(1)
    pts = torch.randn(500, 3, generator=gen, dtype=torch.float64)
    pts = pts / torch.linalg.norm(pts, dim=1, keepdim=True)
    kept = direction_vectors(d[keep, 0], d[keep, 1])
    mates = torch.einsum("kij,pj->pki", mats, pts)
    best = torch.einsum("pki,ai->pka", mates, kept).amax(dim=(1, 2))
    # (the grid is not symmetric: near the unit's border the nearest kept pixel may be a mate's)
    assert float(torch.rad2deg(torch.acos(best.clamp(-1, 1))).max()) < 1.5 * angular_step_deg(order)
    # and kept directions are rarely symmetry mates of one another (only along the border)
    inner = torch.einsum("kij,aj,bi->kab", mats[1:], kept, kept).amax(dim=(0, 2))
    near = inner > math.cos(math.radians(0.3 * angular_step_deg(order)))
    assert float(near.double().mean()) < 0.15
    assert orientation_grid(1, symmetry=name).shape[0] < orientation_grid(1).shape[0]


def test_directions_within_cone():
    d = healpix_directions(3, dtype=torch.float64)
    prior = torch.tensor([[30.0, 60.0], [-100.0, 150.0]], dtype=torch.float64)
    mask = directions_within_cone(d, prior, 20.0)
    assert mask.shape == (2, len(d))
    v, p = direction_vectors(d[:, 0], d[:, 1]), direction_vectors(prior[:, 0], prior[:, 1])
    angle = torch.rad2deg(torch.acos((p @ v.T).clamp(-1, 1)))
    assert torch.equal(mask, angle <= 20.0 + 1e-9)
    # a 20° cone holds about its share of the sphere's area
    frac = (1 - math.cos(math.radians(20))) / 2
    assert abs(float(mask[0].double().mean()) - frac) < 0.3 * frac
    # with C2 the mates (rot + 180) count too
    both = directions_within_cone(d, prior[:1], 20.0, "C2")[0]
    assert int(both.sum()) > 1.8 * int(mask[0].sum())
    with pytest.raises(InputError):
        directions_within_cone(d, prior, -1.0)


def test_oversampling():
    fine = oversample_directions(2, [5, 100], 1, dtype=torch.float64)
    assert fine.shape == (2, 4, 2)
    parent = healpix_vectors(2, [5, 100], dtype=torch.float64)
    kids = direction_vectors(fine[..., 0], fine[..., 1])
    # children are the next order's pixels closest to their parent centre
    assert float(torch.einsum("pki,pi->pk", kids, parent).min()) > math.cos(math.radians(15))
    psi = oversample_psi(torch.tensor([0.0, 90.0]), 10.0, 1)
    assert torch.allclose(psi, torch.tensor([[-2.5, 2.5], [87.5, 92.5]]))
    assert oversample_psi(torch.tensor([5.0]), 10.0, 0).tolist() == [[5.0]]
    off = oversample_translations(torch.tensor([[2.0, 0.0]]), 2.0, 1)
    assert sorted(map(tuple, off[0].tolist())) == [(1.5, -0.5), (1.5, 0.5), (2.5, -0.5), (2.5, 0.5)]
    with pytest.raises(InputError):
        oversample_directions(1, [48], 1)

"""3D VDAM update on the window's voxels equals the full-grid update of ``shared/spec/vdam.md`` 5.2-5.3."""

from __future__ import annotations

import torch

from vitrify.ml.slices import grid_shells, volume_grids, volumes_from_grids
from vitrify.ml.vdam import half_gradients, preconditioned_gradient, update_moments
from vitrify.ml.vdam3d import flat, gradient_step, shell_means, update_moments_inside, zero_moments

N, K, RADIUS = 12, 2, 4


def _full_step(refs, moments, steps, tau2_fudge, radius, shells):
    """The spec's update written on the whole grid (reference)."""
    f = volume_grids(refs)
    inside = shells <= radius
    g = preconditioned_gradient(moments).reshape(f.shape)
    power = shell_means(f.abs(), shells, radius)
    m1 = moments.m1.reshape(2, *f.shape)
    noise = shell_means((m1[0] - m1[1]).abs(), shells, radius)
    snr = torch.where(noise > 0, 2.0 * tau2_fudge * power / noise, torch.zeros_like(noise))
    fsc = (snr / (1 + snr)).clamp(0, 1).float()[:, shells.clamp(max=radius)]
    new = f + steps.float()[:, None, None, None] * (fsc * g - (1 - fsc) * f)
    return volumes_from_grids(torch.where(inside, new, torch.zeros_like(new)), refs.shape[-1])


def test_window_update_matches_the_full_grid_update():
    gen = torch.Generator().manual_seed(0)
    refs = torch.randn(K, N, N, N, generator=gen)
    shells = grid_shells(2 * N)
    shape = (2, K, 2 * N, 2 * N, N + 1)
    moments_a, moments_b = zero_moments(K, 2 * N, "cpu"), zero_moments(K, 2 * N, "cpu")
    active = torch.tensor([True, False])
    for _ in range(3):  # first use copies the gradient, later ones average
        data = torch.complex(torch.randn(shape, generator=gen), torch.randn(shape, generator=gen))
        weight = torch.rand(shape, generator=gen) * 3
        grids = volume_grids(refs)
        update_moments(moments_a, flat(half_gradients(data, weight, grids)), flat(shells <= RADIUS), active)
        update_moments_inside(moments_b, data, weight, grids, RADIUS, shells, active)
        assert torch.allclose(moments_a.m1, moments_b.m1, atol=1e-6) and torch.allclose(moments_a.m2, moments_b.m2)
        assert bool((moments_b.m1[:, 1] == 0).all())  # inactive class untouched
    steps = torch.tensor([0.5, 0.9])
    skip = torch.tensor([False, False])
    got = gradient_step(refs, moments_b, steps, 4.0, RADIUS, skip, shells)
    want = _full_step(refs, moments_a, steps, 4.0, RADIUS, shells)
    assert torch.allclose(got, want, atol=1e-5 * float(want.abs().max()))
    assert not torch.allclose(got, refs)


def test_volume_grids_reuses_the_transform_until_the_volumes_change():
    refs = torch.randn(1, N, N, N)
    first = volume_grids(refs)
    assert volume_grids(refs) is first
    refs.mul_(2.0)  # in place: a new version
    again = volume_grids(refs)
    assert again is not first and torch.allclose(again, 2 * first)

"""Euler angles: RELION's ZYZ matrices, written out by hand from formats.md §8."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitrify.core.euler import angular_distance_deg, euler_to_matrix, matrix_to_euler, rotation_2d

ANGLES = [
    (0.0, 0.0, 0.0),
    (90.0, 0.0, 0.0),
    (0.0, 90.0, 0.0),
    (0.0, 0.0, 90.0),
    (30.0, 45.0, 60.0),
    (-120.0, 135.0, 15.0),
    (170.0, 10.0, -95.0),
    (12.5, 179.0, 200.0),
    (-45.0, 60.0, -170.0),
]


def _rz(a_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(a_deg)), math.sin(math.radians(a_deg))
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def _ry(b_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(b_deg)), math.sin(math.radians(b_deg))
    return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


def _relion_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """A = Rz(psi) · Ry(tilt) · Rz(rot), the spec's formula."""
    return _rz(psi) @ _ry(tilt) @ _rz(rot)


@pytest.mark.parametrize("angles", ANGLES)
def test_matrix_matches_spec_formula(angles, device):
    expected = _relion_matrix(*angles)
    got = euler_to_matrix(*(torch.tensor(a, device=device, dtype=torch.float64) for a in angles))
    np.testing.assert_allclose(got.cpu().numpy(), expected, atol=1e-12)


def test_known_entries():
    # tilt 90 about y maps z to x: third row of A is (sin(tilt)cos(rot), sin(tilt)sin(rot), cos(tilt))
    a = euler_to_matrix(0.0, 90.0, 0.0)
    np.testing.assert_allclose(a[2].numpy(), [1.0, 0.0, 0.0], atol=1e-7)
    a = euler_to_matrix(90.0, 0.0, 0.0)
    np.testing.assert_allclose(a.numpy(), [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-7)


def test_batched_broadcast_and_orthogonal(device):
    rot = torch.linspace(-180, 180, 7, device=device)[:, None]
    tilt = torch.linspace(0, 180, 5, device=device)[None, :]
    m = euler_to_matrix(rot, tilt, 33.0)
    assert m.shape == (7, 5, 3, 3) and m.device.type == device.type and m.dtype == torch.float32
    eye = torch.eye(3, device=device).expand_as(m)
    torch.testing.assert_close(m @ m.transpose(-1, -2), eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(m), torch.ones(7, 5, device=device), atol=1e-5, rtol=0)


def test_round_trip_angles(device):
    g = torch.Generator().manual_seed(3)
    rot = (torch.rand(500, generator=g, dtype=torch.float64) * 360 - 180).to(device)
    tilt = (torch.rand(500, generator=g, dtype=torch.float64) * 178 + 1).to(device)
    psi = (torch.rand(500, generator=g, dtype=torch.float64) * 360 - 180).to(device)
    r2, t2, p2 = matrix_to_euler(euler_to_matrix(rot, tilt, psi))
    torch.testing.assert_close(t2, tilt, atol=1e-8, rtol=0)
    # angles are defined modulo 360
    for a, b in ((r2, rot), (p2, psi)):
        d = torch.remainder(a - b + 180, 360) - 180
        assert d.abs().max() < 1e-8


@pytest.mark.parametrize("tilt", [0.0, 180.0])
def test_gimbal_lock_gives_same_matrix(tilt):
    m = euler_to_matrix(torch.tensor(40.0, dtype=torch.float64), torch.tensor(tilt, dtype=torch.float64),
                        torch.tensor(25.0, dtype=torch.float64))
    r, t, p = matrix_to_euler(m)
    assert float(r) == 0.0 and abs(float(t) - tilt) < 1e-9
    torch.testing.assert_close(euler_to_matrix(r, t, p), m, atol=1e-12, rtol=0)


def test_rotation_2d_is_top_left_block():
    psi = torch.tensor([0.0, 30.0, -100.0])
    torch.testing.assert_close(rotation_2d(psi), euler_to_matrix(0.0, 0.0, psi)[..., :2, :2])


def test_angular_distance():
    a = euler_to_matrix(10.0, 20.0, 30.0)
    b = euler_to_matrix(10.0, 20.0, 45.0)
    assert abs(float(angular_distance_deg(a, b)) - 15.0) < 1e-3

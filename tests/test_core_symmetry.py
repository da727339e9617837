"""Point-group operators: group axioms, orders, RELION's documented axes, invariant maps."""

from __future__ import annotations

import math

import pytest
import torch

from vitrify.core.euler import angular_distance_deg, euler_to_matrix
from vitrify.core.projector import project_real
from vitrify.core.symmetry import equivalent_orientations, parse_symmetry, rotate_volume, \
    symmetric_angular_distance_deg, symmetrise_volume, symmetry_matrices
from vitrify.io.errors import InputError

GROUPS = {"C1": 1, "C2": 2, "C5": 5, "C11": 11, "D1": 2, "D2": 4, "D6": 12, "T": 12, "O": 24,
          "I": 60, "I1": 60, "I2": 60, "I3": 60, "I4": 60}


def _index_of(mats: torch.Tensor, m: torch.Tensor) -> int:
    """Index of ``m`` in ``mats`` (within 1e-8), or -1."""
    diff = (mats - m).abs().amax(dim=(-2, -1))
    hits = torch.nonzero(diff < 1e-8)
    return int(hits[0]) if len(hits) else -1


def _axes(mats: torch.Tensor, fold: int) -> torch.Tensor:
    """Unit axes ``(k, 3)`` of the operators that rotate by exactly 360/fold degrees."""
    angle = 2 * math.pi / fold
    trace = mats.diagonal(dim1=-2, dim2=-1).sum(-1)
    pick = mats[(trace - (1 + 2 * math.cos(angle))).abs() < 1e-8]
    if fold == 2:  # R + I = 2 u uᵀ: its largest column is along u
        cols = (pick + torch.eye(3, dtype=pick.dtype)).transpose(-1, -2)
        v = cols[torch.arange(len(cols)), torch.linalg.norm(cols, dim=-1).argmax(-1)]
    else:
        v = torch.stack([pick[:, 2, 1] - pick[:, 1, 2], pick[:, 0, 2] - pick[:, 2, 0],
                         pick[:, 1, 0] - pick[:, 0, 1]], -1)
    return v / torch.linalg.norm(v, dim=-1, keepdim=True)


def _has_axis(mats: torch.Tensor, fold: int, axis) -> bool:
    u = torch.tensor(axis, dtype=torch.float64)
    u = u / torch.linalg.norm(u)
    axes = _axes(mats, fold)
    return bool(len(axes)) and bool(((axes @ u).abs() > 1 - 1e-8).any())


@pytest.mark.parametrize("name,order", GROUPS.items())
def test_group_axioms(name, order):
    mats = symmetry_matrices(name, dtype=torch.float64)
    assert mats.shape == (order, 3, 3)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(mats[0], eye)
    assert torch.allclose(mats @ mats.transpose(-1, -2), eye.expand_as(mats), atol=1e-12)
    assert torch.allclose(torch.linalg.det(mats), torch.ones(order, dtype=torch.float64))
    dist = (mats[:, None] - mats[None]).abs().amax(dim=(-2, -1))
    assert int((dist < 1e-6).sum()) == order  # only the diagonal: no duplicates
    for a in mats:
        for b in mats:
            assert _index_of(mats, a @ b) >= 0


def test_cyclic_and_dihedral_axes():
    c4 = symmetry_matrices("C4", dtype=torch.float64)
    assert _has_axis(c4, 4, (0, 0, 1))
    d3 = symmetry_matrices("D3", dtype=torch.float64)
    assert _index_of(d3, torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))) >= 0
    assert _has_axis(d3, 3, (0, 0, 1)) and _has_axis(d3, 2, (1, 0, 0))


# axes as RELION's symmetry library writes them (decimals), checked against our derivation
RELION_AXES = {
    "T": [(3, (0, 0, 1)), (2, (0, 0.816496, 0.577350))],
    "O": [(3, (0.5773502, 0.5773502, 0.5773502)), (4, (0, 0, 1))],
    "I2": [(2, (0, 0, 1)), (5, (0.525731114, 0, 0.850650807)), (3, (0, 0.356822076, 0.934172364))],
    "I1": [(2, (1, 0, 0)), (5, (0.85065080702670, 0, -0.5257311142635)),
           (3, (0.9341723640, 0.3568220765, 0))],
    "I3": [(2, (-0.5257311143, 0, 0.8506508070)), (5, (0, 0, 1)),
           (3, (-0.4911234778630044, 0.3568220764705179, 0.7946544753759428))],
    "I4": [(2, (0.5257311143, 0, 0.8506508070)), (5, (0.8944271932547096, 0, 0.4472135909903704)),
           (3, (0.4911234778630044, 0.3568220764705179, 0.7946544753759428))],
}


@pytest.mark.parametrize("name", RELION_AXES)
def test_polyhedral_axes_match_relion(name):
    mats = symmetry_matrices(name, dtype=torch.float64)
    for fold, axis in RELION_AXES[name]:
        u = torch.tensor(axis, dtype=torch.float64)
        assert abs(float(torch.linalg.norm(u)) - 1) < 1e-6
        axes = _axes(mats, fold)
        assert float((axes @ (u / torch.linalg.norm(u))).abs().max()) > 1 - 1e-6, (name, fold, axis)


def test_icosahedral_axis_counts_and_i2_layout():
    mats = symmetry_matrices("I", dtype=torch.float64)
    assert torch.equal(mats, symmetry_matrices("I2", dtype=torch.float64))
    # 6 5-fold axes (rotations by 72° about +v and -v), 10 3-fold axes (x2), 15 2-fold axes
    assert len(_axes(mats, 5)) == 12 and len(_axes(mats, 3)) == 20 and len(_axes(mats, 2)) == 15
    for axis in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):  # Crowther 222: 2-folds on x, y, z
        assert _has_axis(mats, 2, axis)
    # I2's 5-fold lies in the xz-plane 31.72° (atan(1/phi)) from z; none in the yz-plane
    phi = (1 + 5 ** 0.5) / 2
    assert _has_axis(mats, 5, (math.sin(math.atan(1 / phi)), 0, math.cos(math.atan(1 / phi))))
    assert not _has_axis(mats, 5, (0, math.sin(math.atan(1 / phi)), math.cos(math.atan(1 / phi))))
    assert not _has_axis(mats, 5, (0, 0, 1))


def test_parse_symmetry():
    assert parse_symmetry("c4") == ("C", 4)
    assert parse_symmetry("D7") == ("D", 7)
    assert parse_symmetry("I") == ("I", 2) and parse_symmetry("i3") == ("I", 3)
    assert parse_symmetry(" O ") == ("O", 0)
    for bad in ("C0", "X3", "I5", "D", "", "C-2", "T2", "C4v"):
        with pytest.raises(InputError):
            parse_symmetry(bad)
    with pytest.raises(InputError):
        symmetry_matrices("C0")


def test_device_and_dtype(device):
    mats = symmetry_matrices("O", device=device)
    assert mats.device.type == device.type and mats.dtype == torch.float32


def _smooth_random_volume(n: int, device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    vol = torch.randn(n, n, n, generator=gen).to(device)
    k = torch.fft.fftfreq(n, device=device)
    kz, ky, kx = torch.meshgrid(k, k, k, indexing="ij")
    ft = torch.fft.fftn(vol) * torch.exp(-(kx**2 + ky**2 + kz**2) / (2 * 0.1**2))
    r = torch.arange(n, device=device, dtype=torch.float32) - n // 2
    z, y, x = torch.meshgrid(r, r, r, indexing="ij")
    return torch.fft.ifftn(ft).real * (x**2 + y**2 + z**2 < (0.3 * n) ** 2)


@pytest.mark.parametrize("name", ["C3", "D2", "T", "O", "I"])
def test_symmetrised_volume_is_invariant(name, device):
    n = 24
    vol = _smooth_random_volume(n, device)
    sym = symmetrise_volume(vol, name)
    mats = symmetry_matrices(name, device=device)
    rotated = rotate_volume(sym, mats[1:])
    corr = torch.nn.functional.cosine_similarity(rotated.reshape(len(mats) - 1, -1),
                                                 sym.reshape(1, -1))
    assert float(corr.min()) > 0.99
    # and a random map is not invariant, so the check can fail
    raw = torch.nn.functional.cosine_similarity(rotate_volume(vol, mats[1:]).reshape(len(mats) - 1, -1),
                                                vol.reshape(1, -1))
    assert float(raw.mean()) < 0.5


def test_rotate_volume_quarter_turn_is_exact(device):
    vol = torch.randn(8, 8, 8, generator=torch.Generator().manual_seed(1)).to(device)
    c4 = symmetry_matrices("C4", device=device)
    rotated = rotate_volume(vol, c4[1:2])[0]
    # V(R x) with R a 90° turn about z: x' = -y, y' = x -> compare inside the box only
    inner = (slice(1, None),) * 3
    expected = torch.empty_like(vol)
    for yi in range(8):
        for xi in range(8):
            x, y = xi - 4, yi - 4
            xs, ys = -y + 4, x + 4  # R @ (x, y) = (-y, x) for a +90° active turn
            expected[:, yi, xi] = vol[:, ys, xs] if 0 <= xs < 8 and 0 <= ys < 8 else 0
    assert torch.allclose(rotated[inner], expected[inner], atol=1e-5)


def test_equivalent_orientations_give_the_same_projection(device):
    n = 24
    vol = symmetrise_volume(_smooth_random_volume(n, device), "D3")
    a = euler_to_matrix(torch.tensor([31.0]), torch.tensor([64.0]), torch.tensor([-112.0])).to(device)
    mates = equivalent_orientations(a, "D3")[0]  # (6, 3, 3): A R
    assert mates.shape == (6, 3, 3) and torch.allclose(mates[0], a[0])
    images = project_real(vol, mates)
    ref = images[0].reshape(1, -1)
    corr = torch.nn.functional.cosine_similarity(images.reshape(6, -1), ref)
    assert float(corr.min()) > 0.99
    # R A (the other side) is not a symmetry of the images
    wrong = project_real(vol, torch.einsum("kij,jl->kil", symmetry_matrices("D3", device=device), a[0]))
    assert float(torch.nn.functional.cosine_similarity(wrong.reshape(6, -1), ref)[1:].max()) < 0.9


def test_symmetric_angular_distance():
    gen = torch.Generator().manual_seed(5)
    angles = torch.rand(50, 3, generator=gen, dtype=torch.float64) * torch.tensor([360.0, 180.0, 360.0],
                                                                                  dtype=torch.float64)
    a = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    mats = symmetry_matrices("O", dtype=torch.float64)
    b = a @ mats[torch.arange(50) % 24]
    assert float(symmetric_angular_distance_deg(a, b, "O").max()) < 1e-5
    plain = angular_distance_deg(a, b)
    assert float(plain.max()) > 80.0
    c = euler_to_matrix(angles[:, 0] + 3.0, angles[:, 1], angles[:, 2])
    sym = symmetric_angular_distance_deg(a, c @ mats[7], "O")
    assert torch.allclose(sym, angular_distance_deg(a, c), atol=1e-5)
    assert torch.allclose(symmetric_angular_distance_deg(a, c, "C1"), angular_distance_deg(a, c))

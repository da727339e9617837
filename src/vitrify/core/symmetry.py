"""Point-group symmetry operators (C1, Cn, Dn, T, O, I1-I4) in RELION's orientations.

RELION (after XMIPP) defines every group by a few generating rotation axes and closes the set
under composition. The axes below are the documented ones (RELION's symmetry library, see the
``--sym`` help text and ``relion_refine --print_symmetry_ops``); here they are derived from the
geometry of the polyhedra instead of typed in as decimals. ``φ = (1 + √5) / 2``.

* ``Cn``: an n-fold about **z**.
* ``Dn``: an n-fold about **z** and a 2-fold along **x** (so ``V(x, -y, -z) = V(x, y, z)``).
* ``T`` : a 3-fold about **z** and a 2-fold in the yz-plane at ``(0, √(2/3), √(1/3))``: the angle
  between a 3-fold and a 2-fold of a tetrahedron is ``acos(1/√3) = 54.74°`` (RELION writes
  ``(0, 0.816496, 0.577350)``).
* ``O`` : a 4-fold about **z** and a 3-fold along ``(1, 1, 1)/√3`` (the cube's body diagonal).
* ``I2`` (= ``I``, RELION's default, "Crowther 222"): 2-folds along x, y and z; a 2-fold about
  **z** with a 5-fold in the xz-plane at ``(1, 0, φ)/√(1+φ²)`` = ``(0.5257, 0, 0.8507)``, 31.72°
  from z towards +x (the angle between adjacent 5- and 2-folds, ``atan(1/φ)``), and a 3-fold in
  the yz-plane at ``(0, 1/φ, φ)/√3`` = ``(0, 0.3568, 0.9342)``, 20.91° from z.
* ``I1`` ("no-Crowther 222", Heymann, Chagoyen & Belnap 2005): I2 turned by 90° about y: a
  2-fold along **x**, a 5-fold at ``(φ, 0, -1)/√(1+φ²)``, a 3-fold at ``(φ, 1/φ, 0)/√3``.
* ``I3`` ("52-setting", as in SPIDER): a 5-fold about **z** and a 2-fold at
  ``(-1, 0, φ)/√(1+φ²)`` (31.72° from z towards -x).
* ``I4`` (another 52-setting): a 5-fold about **z**, a 2-fold at ``(1, 0, φ)/√(1+φ²)`` and the
  adjacent 5-fold at ``(2, 0, 1)/√5`` (63.43° from z, the angle between adjacent 5-folds).

The operator set of a group is the same whether matrices act actively or passively (a group holds
every inverse), so ``R`` can be used as ``V(R x) = V(x)`` or ``V(Rᵀ x) = V(x)`` alike.

Equivalent particle orientations: a projection samples ``V(Aᵀ r)`` (:mod:`vitrify.core.euler`); with
``V(R x) = V(x)``, ``(A Rᵀ)ᵀ r = R Aᵀ r`` gives the same image, so ``A`` and ``A R`` (R in the group)
are the same view (what ``relion_particle_symmetry_expand`` enumerates).
"""

from __future__ import annotations

import math
import re

import torch

from vitrify.errors import InputError

__all__ = ["parse_symmetry", "symmetry_matrices", "symmetry_order", "axis_rotation",
           "rotate_volume", "symmetrise_volume", "equivalent_orientations",
           "symmetric_angular_distance_deg"]

_PHI = (1.0 + math.sqrt(5.0)) / 2.0
_FIVE_TWO = (1.0, 0.0, _PHI)  # 5-fold of I2 / 2-fold of I4: 31.72° from z in the xz-plane

#: (fold, axis) generators per polyhedral group name (axes need not be normalised)
_GENERATORS: dict[str, list[tuple[int, tuple[float, float, float]]]] = {
    "T": [(3, (0.0, 0.0, 1.0)), (2, (0.0, math.sqrt(2.0), 1.0))],
    "O": [(4, (0.0, 0.0, 1.0)), (3, (1.0, 1.0, 1.0))],
    "I1": [(2, (1.0, 0.0, 0.0)), (5, (_PHI, 0.0, -1.0)), (3, (_PHI, 1.0 / _PHI, 0.0))],
    "I2": [(2, (0.0, 0.0, 1.0)), (5, _FIVE_TWO), (3, (0.0, 1.0 / _PHI, _PHI))],
    "I3": [(5, (0.0, 0.0, 1.0)), (2, (-1.0, 0.0, _PHI))],
    "I4": [(5, (2.0, 0.0, 1.0)), (2, _FIVE_TWO), (5, (0.0, 0.0, 1.0))],
}
_ORDERS = {"T": 12, "O": 24, "I": 60}
_NAME = re.compile(r"^(C|D)(\d+)$|^(T|O)$|^I([1-4]?)$")


def parse_symmetry(name: str) -> tuple[str, int]:
    """Group letter and its number from a RELION symmetry name (case-insensitive).

    ``"C4" -> ("C", 4)``, ``"d7" -> ("D", 7)``, ``"T" -> ("T", 0)``, ``"O" -> ("O", 0)``,
    ``"I" -> ("I", 2)`` (RELION's default icosahedral setting), ``"I3" -> ("I", 3)``.
    Raises :class:`InputError` for anything else (``C0``, ``X3``, ``I5``, ``Cnv`` groups).
    """
    text = str(name).strip().upper()
    match = _NAME.match(text)
    if match is None or (match.group(2) is not None and int(match.group(2)) < 1):
        raise InputError(f"unknown symmetry group {name!r}", field="symmetry",
                         expected="C1, Cn, Dn (n >= 1), T, O, I, I1, I2, I3 or I4")
    if match.group(1):
        return match.group(1), int(match.group(2))
    if match.group(3):
        return match.group(3), 0
    return "I", int(match.group(4) or 2)


def symmetry_order(name: str) -> int:
    """Number of operators of a group: Cn n, Dn 2n, T 12, O 24, I 60."""
    group, number = parse_symmetry(name)
    return {"C": number, "D": 2 * number}.get(group, _ORDERS.get(group, 0))


def axis_rotation(axis, angle_deg: float) -> torch.Tensor:
    """Active rotation by ``angle_deg`` about ``axis`` (3 numbers, any length): ``(3, 3)`` float64.

    Rodrigues' formula ``R = cos a I + sin a [u]x + (1 - cos a) u uᵀ`` (right-handed).
    """
    u = torch.as_tensor(axis, dtype=torch.float64)
    u = u / torch.linalg.norm(u)
    a = math.radians(angle_deg)
    cross = torch.tensor([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]],
                         dtype=torch.float64)
    return math.cos(a) * torch.eye(3, dtype=torch.float64) + math.sin(a) * cross \
        + (1.0 - math.cos(a)) * torch.outer(u, u)


def _generators(name: str) -> list[torch.Tensor]:
    """Generating rotations (each of its cyclic powers) of a parsed group name, float64."""
    group, number = parse_symmetry(name)
    if group in ("C", "D"):
        gens = [(number, (0.0, 0.0, 1.0))] + ([(2, (1.0, 0.0, 0.0))] if group == "D" else [])
    else:
        gens = _GENERATORS[group if group in ("T", "O") else f"I{number}"]
    return [axis_rotation(axis, 360.0 * k / fold) for fold, axis in gens for k in range(1, fold)]


def _close(generators: list[torch.Tensor], order: int) -> torch.Tensor:
    """All products of ``generators``: ``(order, 3, 3)`` float64, identity first.

    Breadth-first: multiply every known element by every generator until nothing new appears.
    """
    elements = [torch.eye(3, dtype=torch.float64)]
    keys = {_key(elements[0])}
    frontier = list(elements)
    while frontier:
        new = []
        for g in frontier:
            for h in generators:
                p = h @ g
                k = _key(p)
                if k not in keys:
                    keys.add(k)
                    new.append(p)
        elements.extend(new)
        frontier = new
        if len(elements) > order:
            raise RuntimeError(f"symmetry generators do not close at order {order}")
    return torch.stack(elements)


def _key(matrix: torch.Tensor) -> tuple[int, ...]:
    """Hashable rounded form of a matrix (entries to 1e-6)."""
    return tuple(int(v) for v in torch.round(matrix.reshape(-1) * 1e6).tolist())


def symmetry_matrices(name: str, *, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rotation matrices of a point group in RELION's orientation.

    Parameters
    ----------
    name
        ``C1``, ``Cn``, ``Dn``, ``T``, ``O``, ``I`` (= ``I2``), ``I1`` ... ``I4`` (any case).
    device, dtype
        Of the result.

    Returns
    -------
    torch.Tensor
        ``(n_ops, 3, 3)`` proper rotations, identity first; n_ops = n, 2n, 12, 24 or 60.
    """
    order = symmetry_order(name)
    mats = _close(_generators(name), order)
    if mats.shape[0] != order:
        raise RuntimeError(f"symmetry {name} gave {mats.shape[0]} operators, expected {order}")
    return mats.to(device=device, dtype=dtype)


def rotate_volume(volume: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Real-space rotations of a centred map by trilinear interpolation.

    Parameters
    ----------
    volume
        ``(n, n, n)`` real, indexed ``[z, y, x]``, centre at voxel ``n//2``.
    rotations
        ``(r, 3, 3)``; output ``r`` is ``V(R_r x)`` with ``x = (x, y, z)`` voxels from the centre
        (points outside the box read 0).

    Returns
    -------
    torch.Tensor
        ``(r, n, n, n)``.
    """
    n = volume.shape[-1]
    c = torch.arange(n, device=volume.device, dtype=volume.dtype) - n // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    points = torch.stack([x, y, z], -1).reshape(-1, 3)  # (n³, 3) as (x, y, z)
    moved = torch.einsum("rij,pj->rpi", rotations.to(volume.dtype), points)
    grid = (2.0 * (moved + n // 2) + 1.0) / n - 1.0  # align_corners=False normalisation
    grid = grid.reshape(-1, n, n, n, 3)
    vol = volume.reshape(1, 1, n, n, n).expand(grid.shape[0], 1, n, n, n)
    out = torch.nn.functional.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros",
                                          align_corners=False)
    return out[:, 0]


def symmetrise_volume(volume: torch.Tensor, name: str) -> torch.Tensor:
    """Average of a centred map ``(n, n, n)`` over the operators of group ``name``: ``(n, n, n)``."""
    mats = symmetry_matrices(name, device=volume.device, dtype=volume.dtype)
    total = torch.zeros_like(volume)
    for start in range(0, mats.shape[0], 12):
        total += rotate_volume(volume, mats[start:start + 12]).sum(0)
    return total / mats.shape[0]


def equivalent_orientations(rotations: torch.Tensor, name: str) -> torch.Tensor:
    """Symmetry-equivalent particle matrices ``A R``: ``(..., 3, 3)`` -> ``(..., n_ops, 3, 3)``.

    Index 0 is ``A`` itself (the identity comes first).
    """
    mats = symmetry_matrices(name, device=rotations.device, dtype=rotations.dtype)
    return torch.einsum("...ij,kjl->...kil", rotations, mats)


def symmetric_angular_distance_deg(a: torch.Tensor, b: torch.Tensor, name: str) -> torch.Tensor:
    """Smallest rotation angle (degrees) between ``a`` and any ``b R``; ``(..., 3, 3)`` broadcast."""
    mates = equivalent_orientations(b, name)
    trace = torch.einsum("...ij,...kij->...k", a, mates)
    best = torch.clamp((trace.amax(-1) - 1) / 2, -1.0, 1.0)
    return torch.rad2deg(torch.acos(best))

"""RELION Euler angles (ZYZ, degrees) <-> rotation matrices.

Convention (formats.md §8, the same as RELION's ``Euler_angles2matrix``):

``A = Rz(psi) @ Ry(tilt) @ Rz(rot)`` with ``Rz(a) = [[c, s, 0], [-s, c, 0], [0, 0, 1]]`` and
``Ry(b) = [[c, 0, -s], [0, 1, 0], [s, 0, c]]``.

``A`` is the *passive* matrix of a particle: the 2D Fourier component at ``(kx, ky)`` of its
projection samples the 3D map transform at ``A.T @ (kx, ky, 0)``; in real space the projection
is ``p(x, y) = ∫ V(A.T @ (x, y, z)) dz``. For 2D classification only ``psi`` is used (the top-left
2x2 block of ``A``). Vectors are ``(x, y, z)`` column vectors.

:func:`matrix_to_euler` returns ``tilt`` in ``[0, 180]`` and ``rot, psi`` in ``(-180, 180]``; at
``tilt = 0`` or ``180`` (gimbal lock) it sets ``rot = 0`` and puts the whole in-plane angle in ``psi``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["euler_to_matrix", "matrix_to_euler", "rotation_2d", "angular_distance_deg"]


def _as_tensor(x, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.float()
    device = like.device if like is not None else None
    dtype = like.dtype if like is not None else torch.float32
    return torch.as_tensor(x, device=device, dtype=dtype)


def _first_tensor(*xs) -> torch.Tensor | None:
    for x in xs:
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x
    return None


def euler_to_matrix(rot_deg, tilt_deg, psi_deg) -> torch.Tensor:
    """Rotation matrices of RELION Euler angles.

    Parameters
    ----------
    rot_deg, tilt_deg, psi_deg
        Angles in degrees; floats or tensors of broadcastable shapes ``(...)``.

    Returns
    -------
    torch.Tensor
        ``(..., 3, 3)``; device/dtype follow the tensor arguments (float32 for plain numbers).
    """
    like = _first_tensor(rot_deg, tilt_deg, psi_deg)
    a, b, g = (torch.deg2rad(_as_tensor(v, like)) for v in (rot_deg, tilt_deg, psi_deg))
    a, b, g = torch.broadcast_tensors(a, b, g)
    ca, sa, cb, sb, cg, sg = a.cos(), a.sin(), b.cos(), b.sin(), g.cos(), g.sin()
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    rows = [
        torch.stack([cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb], dim=-1),
        torch.stack([-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb], dim=-1),
        torch.stack([sc, ss, cb], dim=-1),
    ]
    return torch.stack(rows, dim=-2)


def matrix_to_euler(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RELION Euler angles of rotation matrices (inverse of :func:`euler_to_matrix`).

    Parameters
    ----------
    matrices
        ``(..., 3, 3)`` proper rotations.

    Returns
    -------
    tuple of torch.Tensor
        ``(rot_deg, tilt_deg, psi_deg)``, each ``(...)``.
    """
    m = matrices
    sin_tilt = torch.sqrt(m[..., 0, 2] ** 2 + m[..., 1, 2] ** 2)
    tilt = torch.atan2(sin_tilt, m[..., 2, 2])
    rot = torch.atan2(m[..., 2, 1], m[..., 2, 0])
    psi = torch.atan2(m[..., 1, 2], -m[..., 0, 2])
    # gimbal lock: only rot + psi (tilt 0) or psi - rot (tilt 180) is defined; put it all in psi
    eps = 16 * torch.finfo(m.dtype).eps if m.dtype == torch.float64 else 1e-6
    locked = sin_tilt < eps
    up = m[..., 2, 2] > 0
    psi_up = torch.atan2(-m[..., 1, 0], m[..., 0, 0])
    psi_down = torch.atan2(m[..., 1, 0], -m[..., 0, 0])
    psi = torch.where(locked, torch.where(up, psi_up, psi_down), psi)
    rot = torch.where(locked, torch.zeros_like(rot), rot)
    tilt = torch.where(locked, torch.where(up, torch.zeros_like(tilt), torch.full_like(tilt, math.pi)), tilt)
    return torch.rad2deg(rot), torch.rad2deg(tilt), torch.rad2deg(psi)


def rotation_2d(psi_deg) -> torch.Tensor:
    """In-plane matrices ``[[c, s], [-s, c]]`` (the 2x2 block of ``euler_to_matrix(0, 0, psi)``).

    ``psi_deg`` is a float or a ``(...)`` tensor; returns ``(..., 2, 2)``.
    """
    g = torch.deg2rad(_as_tensor(psi_deg))
    c, s = g.cos(), g.sin()
    return torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)


def angular_distance_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rotation angle of ``a @ b.T`` in degrees, for ``(..., 3, 3)`` matrices (broadcast)."""
    trace = torch.einsum("...ij,...ij->...", a, b)
    return torch.rad2deg(torch.acos(torch.clamp((trace - 1) / 2, -1.0, 1.0)))

"""Orientation and translation sampling like RELION's ``HealpixSampling``.

* Directions: centres of the HEALPix pixels of ``order`` (``nside = 2**order``, ``12 · 4**order``
  equal-area pixels, NESTED numbering as RELION uses it), as ``rot = φ`` wrapped to
  ``(-180, 180]`` and ``tilt = acos(z)`` in degrees. The direction of ``(rot, tilt)`` is
  ``(cos rot sin tilt, sin rot sin tilt, cos tilt)``, the third row of
  :func:`vitrify.core.euler.euler_to_matrix`. Pixel centres come from the public HEALPix formulas
  (Górski et al. 2005, ApJ 622:759): face, in-face bits, ring index, then ``z`` and ``φ``.
* Angular step of ``order``: ``360 / (6 · 2**order)`` degrees (order 0: 60°, 1: 30°, 2: 15°,
  3: 7.5° ...); RELION's default 3D in-plane step is the same number.
* In-plane angles: ``n = ceil(360 / step)`` values ``i · 360 / n`` (``[0, 360)``).
* Translations: the square grid of ``step_px`` within the disc of ``range_px`` (inclusive).
* Oversampling by ``s`` (RELION's adaptive oversampling): a direction becomes its ``4**s``
  NESTED child pixels of ``order + s``; a psi angle ``ψ`` of step ``Δ`` becomes
  ``ψ - Δ/2 + (j + 1/2) Δ / 2**s``; a translation becomes the ``2**s × 2**s`` sub-grid likewise.
* Symmetry: directions related by an operator ``R`` of the group (``d ~ R d``) are equivalent.
  :func:`asymmetric_unit_mask` keeps one representative region: the directions at least as close to
  a fixed generic reference direction ``p`` as any of their symmetry mates (the Dirichlet cell of
  ``p``'s orbit), which holds ``1/|G|`` of the sphere. Its shape differs from RELION's
  hand-made asymmetric units, but it covers every orientation once.
"""

from __future__ import annotations

import math

import torch

from vitrify.core.symmetry import symmetry_matrices
from vitrify.errors import InputError

__all__ = ["angular_step_deg", "healpix_n_pixels", "healpix_vectors", "healpix_directions",
           "direction_vectors", "inplane_angles", "translation_grid", "orientation_grid",
           "asymmetric_unit_mask", "directions_within_cone", "oversample_directions",
           "oversample_psi", "oversample_translations"]

_MAX_ORDER = 13
_JRLL = (2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4)  # ring of each base face's southern corner / nside
_JPLL = (1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7)  # longitude of each base face's centre / (π/4)
#: generic reference direction for asymmetric units (on no symmetry axis of any group)
_ASU_REFERENCE = (0.1032, 0.1871, 0.9769)


def _check_order(order: int) -> int:
    if not isinstance(order, int) or isinstance(order, bool) or not 0 <= order <= _MAX_ORDER:
        raise InputError(f"HEALPix order must be an integer in 0..{_MAX_ORDER}, got {order!r}",
                         field="healpix_order", expected=f"0..{_MAX_ORDER}")
    return order


def angular_step_deg(order: int) -> float:
    """RELION's angular sampling of a HEALPix order: ``360 / (6 · 2**order)`` degrees."""
    return 360.0 / (6 * 2 ** _check_order(order))


def healpix_n_pixels(order: int) -> int:
    """Number of HEALPix pixels of ``order``: ``12 · 4**order``."""
    return 12 * 4 ** _check_order(order)


def _compress_bits(v: torch.Tensor, order: int) -> torch.Tensor:
    """Bits 0, 2, 4, ... of ``v`` packed into 0, 1, 2, ... (int64)."""
    out = torch.zeros_like(v)
    for bit in range(order):
        out |= ((v >> (2 * bit)) & 1) << bit
    return out


def _nested_z_phi(order: int, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``z = cos θ`` and ``φ`` (radians, ``[0, 2π)``) of NESTED pixel centres ``(m,)`` int64."""
    nside = 2 ** order
    face = pixels >> (2 * order)
    ipf = pixels & (nside * nside - 1)
    ix, iy = _compress_bits(ipf, order), _compress_bits(ipf >> 1, order)
    jrll = torch.tensor(_JRLL, device=pixels.device)[face]
    jpll = torch.tensor(_JPLL, device=pixels.device)[face]
    jr = jrll * nside - ix - iy - 1  # ring number, 1 .. 4 nside - 1 from the north pole
    north, south = jr < nside, jr > 3 * nside
    nr = torch.where(north, jr, torch.where(south, 4 * nside - jr, torch.full_like(jr, nside)))
    nr_f = nr.double()
    polar_z = 1.0 - nr_f * nr_f / (3.0 * nside * nside)
    equatorial_z = (2 * nside - jr).double() * 2.0 / (3.0 * nside)
    z = torch.where(north, polar_z, torch.where(south, -polar_z, equatorial_z))
    kshift = torch.where(north | south, torch.zeros_like(jr), (jr - nside) & 1)
    jp = (jpll * nr + ix - iy + 1 + kshift) // 2
    jp = torch.where(jp > 4 * nside, jp - 4 * nside, jp)
    jp = torch.where(jp < 1, jp + 4 * nside, jp)
    phi = (jp.double() - 0.5 * (kshift + 1).double()) * (math.pi / 2) / nr_f
    return z, phi


def _pixels(order: int, pixels, device) -> torch.Tensor:
    n = healpix_n_pixels(order)
    if pixels is None:
        return torch.arange(n, device=device, dtype=torch.int64)
    pix = torch.as_tensor(pixels, device=device, dtype=torch.int64)
    if pix.numel() and (int(pix.min()) < 0 or int(pix.max()) >= n):
        raise InputError(f"HEALPix pixel index out of range 0..{n - 1}", field="pixels")
    return pix


def healpix_vectors(order: int, pixels=None, *, device=None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Unit vectors of NESTED pixel centres: ``(m, 3)`` as ``(x, y, z)`` (all pixels by default)."""
    z, phi = _nested_z_phi(order, _pixels(order, pixels, device))
    s = torch.sqrt(torch.clamp(1.0 - z * z, min=0.0))
    return torch.stack([s * torch.cos(phi), s * torch.sin(phi), z], -1).to(dtype)


def healpix_directions(order: int, pixels=None, *, device=None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RELION directions of NESTED pixel centres: ``(m, 2)`` as ``(rot_deg, tilt_deg)``.

    ``rot`` in ``(-180, 180]``, ``tilt`` in ``[0, 180]``; all ``12 · 4**order`` pixels by default,
    row ``i`` is pixel ``i`` (RELION's ``directions_ipix`` before symmetry is removed).
    """
    z, phi = _nested_z_phi(order, _pixels(order, pixels, device))
    rot = torch.rad2deg(phi)
    rot = torch.where(rot > 180.0, rot - 360.0, rot)
    tilt = torch.rad2deg(torch.acos(torch.clamp(z, -1.0, 1.0)))
    return torch.stack([rot, tilt], -1).to(dtype)


def direction_vectors(rot_deg: torch.Tensor, tilt_deg: torch.Tensor) -> torch.Tensor:
    """Unit vectors ``(..., 3)`` of directions ``(rot, tilt)`` (degrees, tensors ``(...)``)."""
    rot, tilt = torch.deg2rad(rot_deg), torch.deg2rad(tilt_deg)
    return torch.stack([torch.cos(rot) * torch.sin(tilt), torch.sin(rot) * torch.sin(tilt),
                        torch.cos(tilt)], -1)


def inplane_angles(step_deg: float, *, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RELION's psi samples: ``n = ceil(360 / step_deg)`` angles ``i · 360 / n`` in degrees: ``(n,)``."""
    if not step_deg > 0 or step_deg > 360:
        raise InputError(f"in-plane step must be in (0, 360] degrees, got {step_deg}",
                         field="psi_step", expected="(0, 360]")
    n = math.ceil(360.0 / step_deg - 1e-9)
    return torch.arange(n, device=device, dtype=torch.float64).mul(360.0 / n).to(dtype)


def translation_grid(range_px: float, step_px: float, *, device=None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Offsets on a square grid of ``step_px`` within the disc of radius ``range_px``: ``(m, 2)`` (x, y).

    Like RELION: ``i · step`` for ``|i| <= ceil(range / step)``, kept when ``x² + y² <= range²``;
    ``(0, 0)`` is always included (``range_px = 0`` gives just it).
    """
    if not step_px > 0:
        raise InputError(f"offset step must be > 0 px, got {step_px}", field="offset_step")
    if not range_px >= 0:
        raise InputError(f"offset range must be >= 0 px, got {range_px}", field="offset_range")
    k = math.ceil(range_px / step_px - 1e-9)
    c = torch.arange(-k, k + 1, device=device, dtype=torch.float64) * step_px
    y, x = torch.meshgrid(c, c, indexing="ij")
    keep = x * x + y * y <= range_px * range_px * (1 + 1e-9) + 1e-12
    return torch.stack([x[keep], y[keep]], -1).to(dtype)


def asymmetric_unit_mask(rot_deg: torch.Tensor, tilt_deg: torch.Tensor, symmetry: str) -> torch.Tensor:
    """Which directions ``(m,)`` lie in the asymmetric unit of ``symmetry``: bool ``(m,)``.

    A direction ``d`` is kept when ``d · p >= (R d) · p`` for every operator ``R`` (within 1e-9),
    ``p`` a fixed generic direction: the Dirichlet cell of ``p``'s orbit, ``1/|G|`` of the sphere.
    """
    d = direction_vectors(rot_deg.double(), tilt_deg.double())
    mats = symmetry_matrices(symmetry, device=d.device, dtype=torch.float64)
    p = torch.tensor(_ASU_REFERENCE, device=d.device, dtype=torch.float64)
    p = p / torch.linalg.norm(p)
    scores = torch.einsum("kij,mj,i->mk", mats, d, p)  # (R_k d) · p
    return scores[:, 0] >= scores.amax(dim=1) - 1e-9


def orientation_grid(order: int, *, psi_step_deg: float | None = None, symmetry: str = "C1",
                     device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """All (direction, psi) pairs of a HEALPix order: ``(k, 3)`` as ``(rot, tilt, psi)`` degrees.

    Directions are the pixel centres (in the asymmetric unit of ``symmetry``), each with every
    psi of ``psi_step_deg`` (default RELION's ``360 / (6 · 2**order)``); psi varies fastest.
    """
    dirs = healpix_directions(order, device=device, dtype=torch.float64)
    if symmetry.strip().upper() != "C1":
        dirs = dirs[asymmetric_unit_mask(dirs[:, 0], dirs[:, 1], symmetry)]
    step = angular_step_deg(order) if psi_step_deg is None else psi_step_deg
    psi = inplane_angles(step, device=device, dtype=torch.float64)
    grid = torch.cat([dirs.repeat_interleave(len(psi), 0), psi.repeat(len(dirs))[:, None]], 1)
    return grid.to(dtype)


def directions_within_cone(directions_deg: torch.Tensor, prior_deg: torch.Tensor, cone_deg: float,
                           symmetry: str = "C1") -> torch.Tensor:
    """Local search: which directions lie within ``cone_deg`` of a prior direction.

    Parameters
    ----------
    directions_deg
        ``(m, 2)`` candidate ``(rot, tilt)`` in degrees (e.g. :func:`healpix_directions`).
    prior_deg
        ``(..., 2)`` prior ``(rot, tilt)`` per particle.
    cone_deg
        Half-angle of the cone (degrees).
    symmetry
        A candidate counts when any of its symmetry mates ``R d`` is inside the cone (as RELION).

    Returns
    -------
    torch.Tensor
        ``(..., m)`` bool.
    """
    if not cone_deg >= 0:
        raise InputError(f"cone half-angle must be >= 0 degrees, got {cone_deg}", field="cone_deg")
    d = direction_vectors(directions_deg[:, 0].double(), directions_deg[:, 1].double())
    prior = direction_vectors(prior_deg[..., 0].double(), prior_deg[..., 1].double())
    mats = symmetry_matrices(symmetry, device=d.device, dtype=torch.float64)
    mates = torch.einsum("kij,mj->kmi", mats, d)  # (k, m, 3)
    best = torch.einsum("kmi,...i->...km", mates, prior).amax(dim=-2)
    return best >= math.cos(math.radians(cone_deg)) - 1e-12


def oversample_directions(order: int, pixels, oversampling: int, *, device=None,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Finer directions of NESTED pixels: ``(m, 4**s, 2)`` ``(rot, tilt)`` of their children at
    ``order + s`` (``s = oversampling``)."""
    if not isinstance(oversampling, int) or oversampling < 0:
        raise InputError(f"oversampling must be an integer >= 0, got {oversampling!r}",
                         field="oversampling")
    pix = _pixels(order, pixels, device).reshape(-1)
    n_child = 4 ** oversampling
    children = pix[:, None] * n_child + torch.arange(n_child, device=pix.device)
    fine = healpix_directions(order + oversampling, children.reshape(-1), device=device, dtype=dtype)
    return fine.reshape(len(pix), n_child, 2)


def _sub_offsets(step: float, oversampling: int, device, dtype) -> torch.Tensor:
    """``(2**s,)`` offsets ``-step/2 + (j + 1/2) step / 2**s`` of a sample's sub-samples."""
    if not isinstance(oversampling, int) or oversampling < 0:
        raise InputError(f"oversampling must be an integer >= 0, got {oversampling!r}",
                         field="oversampling")
    n = 2 ** oversampling
    j = torch.arange(n, device=device, dtype=torch.float64)
    return (-0.5 * step + (j + 0.5) * step / n).to(dtype)


def oversample_psi(psi_deg: torch.Tensor, step_deg: float, oversampling: int) -> torch.Tensor:
    """Finer psi angles ``(..., 2**s)`` around coarse ones ``(...)`` of step ``step_deg``."""
    return psi_deg[..., None] + _sub_offsets(step_deg, oversampling, psi_deg.device, psi_deg.dtype)


def oversample_translations(offsets_px: torch.Tensor, step_px: float, oversampling: int) -> torch.Tensor:
    """Finer offsets ``(..., 4**s, 2)`` around coarse ones ``(..., 2)`` (x, y) of step ``step_px``."""
    sub = _sub_offsets(step_px, oversampling, offsets_px.device, offsets_px.dtype)
    sy, sx = torch.meshgrid(sub, sub, indexing="ij")
    grid = torch.stack([sx.reshape(-1), sy.reshape(-1)], -1)
    return offsets_px[..., None, :] + grid

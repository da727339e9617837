"""Symmetric assemblies (Cn, Dn, T, O, I) built from copies of one chain, for symmetry tests.

The chain's centre of mass is moved to ``radius_angst · u`` and copy ``k`` is ``R_k (x)`` for
every operator ``R_k`` of the group (:func:`vitrify.core.symmetry.symmetry_matrices`, RELION's
orientations), so the assembly is exactly invariant under the group about the origin, which is
its centre of mass. ``u`` is the direction (from a fine set of candidates) whose symmetry mates
are farthest apart, so neighbouring copies sit as far from each other as the group allows; for
Cn it lies in the xy-plane (a ring about z).

Without ``radius_angst`` the smallest radius is found at which no two atoms of different copies
come closer than ``clash_angst`` (bisection; chains over 4000 atoms are thinned for the check):
a compact, touching assembly.
"""

from __future__ import annotations

import string

import numpy as np
import torch
from scipy.spatial import cKDTree

from vitrify.core.sampling import healpix_vectors
from vitrify.core.symmetry import parse_symmetry, symmetry_matrices
from vitrify.io.atomic_model import AtomicModel, concatenate_models
from vitrify.io.errors import InputError

__all__ = ["build_assembly", "assembly_operators", "placement_direction"]

_CHAIN_NAMES = string.ascii_uppercase + string.ascii_lowercase + string.digits
_MAX_CHECK_ATOMS = 4000


def assembly_operators(symmetry: str) -> np.ndarray:
    """``(n_ops, 3, 3)`` float64 rotations of ``symmetry`` (identity first)."""
    return symmetry_matrices(symmetry, dtype=torch.float64).numpy()


def placement_direction(symmetry: str) -> np.ndarray:
    """``(3,)`` unit vector whose images under the group are as far apart as possible.

    Searched over HEALPix order-4 pixel centres (3072 directions, ~3.7° apart); for Cn the
    candidates are restricted to the xy-plane (copies form a ring about the z axis).
    """
    group, number = parse_symmetry(symmetry)
    mats = assembly_operators(symmetry)
    if group == "C":
        angles = np.deg2rad(np.arange(0.0, 360.0, 1.0) + 0.5)
        candidates = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], -1)
    else:
        candidates = healpix_vectors(4, dtype=torch.float64).numpy()
    if len(mats) == 1:
        return candidates[0]
    images = np.einsum("kij,cj->cki", mats[1:], candidates)
    min_sep = np.linalg.norm(images - candidates[:, None], axis=-1).min(axis=1)
    return candidates[int(np.argmax(min_sep))]


def _place(chain: AtomicModel, mats: np.ndarray, u: np.ndarray, radius_angst: float) -> AtomicModel:
    """Copies ``R_k (x - com + radius u)`` of ``chain``, chains named A, B, ... ."""
    centred = chain.transformed(np.eye(3), radius_angst * u - chain.centre_of_mass_angst())
    names = [_CHAIN_NAMES[k] if k < len(_CHAIN_NAMES) else f"C{k}" for k in range(len(mats))]
    return concatenate_models([centred.transformed(m, np.zeros(3), chain_id=name)
                               for m, name in zip(mats, names)])


def _clashes(points: np.ndarray, mats: np.ndarray, u: np.ndarray, radius_angst: float,
             clash_angst: float) -> bool:
    """Whether atoms ``(m, 3)`` (centred chain) of different copies come within ``clash_angst``.

    By symmetry every pair of copies ``(i, j)`` is congruent to ``(0, k)`` with ``R_k = R_iᵀ R_j``,
    so copy 0 (the identity) is checked against all the others.
    """
    copies = np.einsum("kij,mj->kmi", mats, points + radius_angst * u)
    tree = cKDTree(copies[1:].reshape(-1, 3))
    dist, _ = tree.query(copies[0], distance_upper_bound=clash_angst)
    return bool(np.isfinite(dist).any())


def _touching_radius(chain: AtomicModel, mats: np.ndarray, u: np.ndarray, clash_angst: float) -> float:
    """Smallest radius (Å, to 0.5 Å) at which copies do not clash."""
    points = chain.positions_angst - chain.centre_of_mass_angst()
    step = max(1, len(points) // _MAX_CHECK_ATOMS)
    points = points[::step]
    extent = float(np.linalg.norm(points, axis=1).max()) + clash_angst
    min_sep = np.linalg.norm(np.einsum("kij,j->ki", mats[1:], u) - u, axis=1).min()
    low, high = 0.0, 2.0 * extent / min_sep + 1.0  # at ``high`` the copies' spheres are apart
    while high - low > 0.5:
        mid = 0.5 * (low + high)
        low, high = (mid, high) if _clashes(points, mats, u, mid, clash_angst) else (low, mid)
    return high


def build_assembly(chain: AtomicModel, symmetry: str, radius_angst: float | None = None, *,
                   clash_angst: float = 3.0) -> AtomicModel:
    """An assembly of copies of ``chain`` with point-group symmetry about the origin.

    Parameters
    ----------
    chain
        Atoms of one chain (any position; its centre of mass is used).
    symmetry
        ``C1``, ``Cn``, ``Dn``, ``T``, ``O``, ``I`` / ``I1`` ... ``I4`` (RELION orientations).
    radius_angst
        Distance (Å) of each copy's centre of mass from the symmetry centre; default: the
        smallest without clashes (atoms of different copies at least ``clash_angst`` apart).
    clash_angst
        Closest allowed approach (Å) of atoms of different copies for the default radius.

    Returns
    -------
    AtomicModel
        ``n_ops · n_atoms`` atoms, copy ``k`` (operator ``k``) named ``A``, ``B``, ...; for C1
        the chain centred at the origin.
    """
    if chain.n_atoms == 0:
        raise InputError("the chain has no atoms", field="structure")
    mats = assembly_operators(symmetry)
    if len(mats) == 1:
        return _place(chain, mats, np.array([0.0, 0.0, 1.0]), 0.0)
    if radius_angst is not None and not radius_angst > 0:
        raise InputError(f"assembly radius must be > 0 Å, got {radius_angst}", field="radius_angst")
    if not clash_angst > 0:
        raise InputError(f"clash distance must be > 0 Å, got {clash_angst}", field="clash_angst")
    u = placement_direction(symmetry)
    radius = _touching_radius(chain, mats, u, clash_angst) if radius_angst is None else radius_angst
    return _place(chain, mats, u, float(radius))

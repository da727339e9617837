"""Symmetric assemblies from one chain: exact atom symmetry, no clashes, invariant maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from vitrify.core.euler import euler_to_matrix
from vitrify.core.symmetry import rotate_volume, symmetry_matrices
from vitrify.io.atomic_model import read_atomic_model
from vitrify.io.errors import InputError
from vitrify.sim.assemblies import build_assembly
from vitrify.sim.maps import MapOptions, simulate_map
from vitrify.sim.structures import load_structure


@pytest.fixture(scope="module")
def chain(adk_pdb):
    return read_atomic_model(adk_pdb).select_chain()


@pytest.fixture(scope="module")
def sparse_chain(chain):
    """Every 4th atom: same shape, 4x cheaper maps."""
    return chain.select(np.arange(chain.n_atoms) % 4 == 0)


@pytest.mark.parametrize("name", ["C3", "D4", "T", "O", "I", "I1", "I3"])
def test_operators_map_the_assembly_onto_itself(chain, name):
    few = chain.select(np.arange(chain.n_atoms) % 20 == 0)
    atoms = build_assembly(few, name)
    n_ops = len(symmetry_matrices(name))
    assert atoms.n_atoms == n_ops * few.n_atoms
    assert len(atoms.chain_names()) == n_ops
    assert np.abs(atoms.centre_of_mass_angst()).max() < 1e-6
    tree = cKDTree(atoms.positions_angst)
    for rot in symmetry_matrices(name, dtype=torch.float64).numpy():
        dist, _ = tree.query(atoms.positions_angst @ rot.T)
        assert dist.max() < 1e-6
    # a rotation outside the group does not
    other = euler_to_matrix(17.0, 23.0, 41.0).double().numpy()
    assert tree.query(atoms.positions_angst @ other.T)[0].max() > 3.0


def _copy_gap_angst(atoms) -> float:
    """Closest approach (Å) of chain A's atoms to other chains' (all pairs alike by symmetry)."""
    first = atoms.chain_ids == atoms.chain_names()[0]
    dist, _ = cKDTree(atoms.positions_angst[~first]).query(atoms.positions_angst[first])
    return float(dist.min())


@pytest.mark.parametrize("name", ["C5", "D2", "O"])
def test_default_radius_packs_copies_without_clashes(chain, name):
    atoms = build_assembly(chain, name)
    gap = _copy_gap_angst(atoms)
    assert 3.0 <= gap < 6.0  # touching, not overlapping
    loose = build_assembly(chain, name, radius_angst=200.0)
    centres = [loose.select(loose.chain_ids == c).centre_of_mass_angst() for c in loose.chain_names()]
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 200.0, rtol=1e-9)
    assert _copy_gap_angst(loose) >= 12.0


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a.reshape(a.shape[0], -1) - a.reshape(a.shape[0], -1).mean(1, keepdim=True)
    b = b.reshape(1, -1) - b.mean()
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm())


@pytest.mark.parametrize("name,box_px,pixel_angst", [("C4", 32, 5.0), ("D3", 32, 5.0), ("T", 40, 5.0),
                                                      ("O", 40, 5.0), ("I", 40, 8.0)])
def test_assembly_map_is_invariant_under_the_group(sparse_chain, name, box_px, pixel_angst):
    atoms = build_assembly(sparse_chain, name)
    options = MapOptions(box_px, pixel_angst, bfactor_angst2=300.0)
    vol = torch.as_tensor(simulate_map(atoms, options, centre_angst=np.zeros(3)))
    mats = symmetry_matrices(name)
    corr = _pearson(rotate_volume(vol, mats[1:]), vol)
    assert float(corr.min()) > 0.95
    off = _pearson(rotate_volume(vol, euler_to_matrix(torch.tensor([17.0]), torch.tensor([23.0]),
                                                      torch.tensor([41.0]))), vol)
    assert float(off[0]) < 0.8


def test_c1_bad_input_and_load_structure(chain):
    single = build_assembly(chain, "C1")
    assert single.n_atoms == chain.n_atoms
    assert np.abs(single.centre_of_mass_angst()).max() < 1e-6
    for bad in ("C0", "X3"):
        with pytest.raises(InputError):
            build_assembly(chain, bad)
    with pytest.raises(InputError):
        build_assembly(chain, "C2", radius_angst=-5.0)
    trimer = load_structure("adk", symmetry="C3")
    assert trimer.n_atoms == 3 * chain.n_atoms and trimer.chain_names() == ["A", "B", "C"]


def test_simulated_particles_of_an_assembly_have_a_symmetric_truth_map(tmp_path):
    from vitrify.io.mrc import read_mrc
    from vitrify.sim.particles import ParticleOptions, simulate_particles

    options = ParticleOptions(structures=("adk",), n_particles=4, box_px=48, pixel_size_angst=3.0,
                              snr=1.0, seed=3, symmetry="C3")
    result = simulate_particles(options, tmp_path / "c3")
    vol, _ = read_mrc(result.truth_maps[0])
    vol = torch.as_tensor(np.asarray(vol, dtype=np.float32))
    corr = _pearson(rotate_volume(vol, symmetry_matrices("C3")[1:]), vol)
    assert float(corr.min()) > 0.95

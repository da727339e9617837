"""Atomic models -> maps: element fixing, compression, mass scaling and centring."""

from __future__ import annotations

import bz2
import gzip
import shutil

import gemmi
import numpy as np
import pytest

from vitrify.io.atomic_model import read_atomic_model, write_atomic_model
from vitrify.io.errors import InputError
from vitrify.sim.maps import MapOptions, map_centre_of_mass_px, map_integral, simulate_map


def _f_e0_sum(model) -> float:
    """Sum over atoms of the electron scattering factor at zero angle (Å)."""
    return float(sum(sum(gemmi.Element(e).c4322.a) * occ
                     for e, occ in zip(model.elements, model.occupancies)))


def test_adk_elements_are_fixed_and_mass_is_adenylate_kinase(adk_pdb):
    model = read_atomic_model(adk_pdb)
    assert set(model.elements) == {"C", "H", "N", "O", "S"}
    # adenylate kinase (E. coli, 214 residues) weighs about 23.6 kDa
    assert model.masses_dalton.sum() == pytest.approx(23_600, rel=0.02)


@pytest.mark.parametrize("opener,suffix", [(gzip.open, ".pdb.gz"), (bz2.open, ".pdb.bz2")])
def test_compressed_files_read_the_same(adk_pdb, tmp_path, opener, suffix):
    target = tmp_path / f"adk{suffix}"
    with open(adk_pdb, "rb") as src, opener(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain, packed = read_atomic_model(adk_pdb), read_atomic_model(target)
    np.testing.assert_allclose(packed.positions_angst, plain.positions_angst)
    assert list(packed.elements) == list(plain.elements)


def test_mmcif_round_trip(adk_pdb, tmp_path):
    model = read_atomic_model(adk_pdb)
    path = write_atomic_model(tmp_path / "adk.cif", model)
    back = read_atomic_model(path)
    np.testing.assert_allclose(back.positions_angst, model.positions_angst, atol=1e-3)
    assert list(back.elements) == list(model.elements)


def test_unreadable_file_is_an_input_error(tmp_path):
    bad = tmp_path / "junk.pdb"
    bad.write_text("hello\n")
    with pytest.raises(InputError, match="junk.pdb"):
        read_atomic_model(bad)
    with pytest.raises(InputError, match="not found"):
        read_atomic_model(tmp_path / "missing.cif")


@pytest.mark.parametrize("box_px,pixel_size_angst", [(64, 1.5), (48, 2.5)])
def test_map_integral_is_the_scattering_mass_and_centred(adk_pdb, box_px, pixel_size_angst):
    model = read_atomic_model(adk_pdb)
    volume = simulate_map(model, MapOptions(box_px, pixel_size_angst))
    assert volume.shape == (box_px,) * 3 and volume.dtype == np.float32
    # integral over space = sum of f_e(0) over atoms, whatever the pixel size
    assert map_integral(volume, pixel_size_angst) == pytest.approx(_f_e0_sum(model), rel=0.02)
    # proteins: ~0.2 Å of f_e(0) per Dalton
    assert 0.15 < map_integral(volume, pixel_size_angst) / model.masses_dalton.sum() < 0.25
    np.testing.assert_allclose(map_centre_of_mass_px(volume), [box_px // 2] * 3, atol=0.3)


def test_extra_bfactor_blurs_but_keeps_the_integral(adk_pdb):
    model = read_atomic_model(adk_pdb)
    sharp = simulate_map(model, MapOptions(48, 2.0))
    blurred = simulate_map(model, MapOptions(48, 2.0, bfactor_angst2=200.0))
    assert blurred.max() < 0.8 * sharp.max()
    assert map_integral(blurred, 2.0) == pytest.approx(map_integral(sharp, 2.0), rel=0.01)

"""``vitrify initialmodel --continue``: a run continued from a written iteration ends exactly where the
uninterrupted run ends; bad continue input is one line."""

from __future__ import annotations

import numpy as np
import pytest

from vitrify.io.mrc import read_mrc
from vitrify.io.star import read_star
from vitrify.jobs.initialmodel import Options, run
from vitrify.sim.particles import ParticleOptions, simulate_particles


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("adk3d")
    simulate_particles(ParticleOptions(structures=("adk",), n_particles=160, box_px=24, pixel_size_angst=5.0,
                                       snr=0.3, seed=5), out)
    return out


def test_continue_ends_where_the_uninterrupted_run_ends(small_set, tmp_path):
    common = dict(input_star=str(small_set / "particles.star"), particle_diameter_angst=100.0, ini_subset=40,
                  fin_subset=80, healpix_order="1", grad_write_iter=3, seed=3, threads=1)
    run(Options(nr_iter=6, **common), tmp_path / "full")
    # from the files of iteration 3 (what a run stopped after it leaves), in another job directory, with only
    # the runtime settings of the continuing command (the schedule is the continued run's: 6 iterations)
    run(Options(continue_from=str(tmp_path / "full" / "run_it003_optimiser.star"), threads=1), tmp_path / "cont")
    full = read_mrc(tmp_path / "full" / "run_it006_class001.mrc")[0]
    cont = read_mrc(tmp_path / "cont" / "run_it006_class001.mrc")[0]
    assert np.array_equal(full, cont)
    assert not np.array_equal(full, read_mrc(tmp_path / "full" / "run_it003_class001.mrc")[0])
    a = read_star(tmp_path / "full" / "run_it006_data.star")["particles"]
    b = read_star(tmp_path / "cont" / "run_it006_data.star")["particles"]
    for col in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst"):
        assert np.allclose(a[col].to_numpy(float), b[col].to_numpy(float)), col
    assert not (tmp_path / "cont" / "run_it000_class001.mrc").exists()
    assert (tmp_path / "cont" / "initial_model.mrc").exists()


def test_continue_refuses_a_finished_run_and_a_missing_state(small_set, tmp_path):
    from vitrify.io.errors import InputError

    common = dict(input_star=str(small_set / "particles.star"), particle_diameter_angst=100.0, ini_subset=40,
                  fin_subset=80, healpix_order="1", grad_write_iter=2, seed=3, threads=1)
    run(Options(nr_iter=2, **common), tmp_path / "job")
    star = tmp_path / "job" / "run_it002_optimiser.star"
    with pytest.raises(InputError, match="already reached"):
        run(Options(continue_from=str(star), nr_iter=2), tmp_path / "again")
    (tmp_path / "job" / "run_it002_vitrify_state.npz").unlink()
    with pytest.raises(InputError, match="state file"):
        run(Options(continue_from=str(star), nr_iter=4), tmp_path / "again2")

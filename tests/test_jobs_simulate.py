"""The ``simulate`` job driven by job.star values (as the pipeliner runs it)."""

from __future__ import annotations

import pytest

from vitrify.io.errors import InputError
from vitrify.io.star import read_star
from vitrify.jobs.base import EXIT_SUCCESS, run_job
from vitrify.jobs.simulate import options_from_job_star, run


def test_particles_from_job_star_values_run_to_the_contract_files(tmp_path):
    options = options_from_job_star({
        "fn_in": "adk", "nr_particles": "10", "box_size": "32", "angpix": "3", "snr": "0.5",
        "junk_fraction": "0.2", "do_ctf": "No", "do_noise": "Yes", "random_seed": "4", "device": "cpu"})
    assert options.kind == "particles" and options.device == "cpu"
    assert (options.sim.n_particles, options.sim.box_px, options.sim.seed) == (10, 32, 4)
    assert options.sim.pixel_size_angst == 3.0 and not options.sim.apply_ctf and options.sim.add_noise
    run_job(run, options, tmp_path / "Simulate" / "job001")
    job = tmp_path / "Simulate" / "job001"
    assert (job / EXIT_SUCCESS).exists() and (job / "truth_map.mrc").exists()
    assert len(read_star(job / "particles.star")["particles"]) == 10
    assert "rlnDefocusU" not in read_star(job / "particles.star")["particles"].columns


def test_movies_from_job_star_values(tmp_path):
    options = options_from_job_star({
        "simulate": "movies", "nr_micrographs": "1", "size": "96", "angpix": "2", "nr_particles": "2",
        "nr_frames": "3", "dose_per_frame": "2.5", "movie_format": "mrc", "random_seed": "1"})
    assert options.sim.size_px == (96, 96) and options.sim.movie_format == "mrc"
    data = run(options, tmp_path)
    assert [f.name for f in data.files] == ["mov_00001.mrc"]
    assert len(read_star(data.truth_star)["global_motion"]) == 3


@pytest.mark.parametrize("values,field", [
    ({"nr_particles": "many"}, "nr_particles"),
    ({"box_size": "32.5"}, "box_size"),
    ({"simulate": "tomograms"}, "simulate"),
    ({"simulate": "micrographs", "size": "x"}, "size"),
])
def test_bad_job_star_values_name_the_option(values, field):
    with pytest.raises(InputError, match=rf"^{field}: "):
        options_from_job_star(values)

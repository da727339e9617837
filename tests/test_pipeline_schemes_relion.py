"""RELION 4's own prep scheme, set up as relion_it does, runs end-to-end on vitrify's jobs.

Simulated movies (vitrify simulate movies) → importmovies → motioncorr → ctffind → WAIT →
EXIT_maxtime stops the scheme, all through ``vitrify schemer`` in a subprocess.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_shared, shared_fixtures
from _schemes_util import load, processes
from vitrify.io.star import read_star_optics

FIXTURES = shared_fixtures("relion4_schemes")


def _vitrify(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vitrify", "-q", *args], cwd=root,
                          capture_output=True, text=True, timeout=400)


@needs_shared("relion4_schemes")
@pytest.mark.slow
def test_relion_prep_scheme_runs_on_vitrify_jobs(tmp_path):
    sim = _vitrify(tmp_path, "simulate", "movies", "--n", "1", "--size", "256", "--frames", "4",
                   "--particles", "5", "--device", "cpu", "--out", "Sim")
    assert sim.returncode == 0, sim.stderr
    shutil.copytree(FIXTURES / "prep", tmp_path / "Schemes" / "prep")
    options = {"importmovies": {"fn_in_raw": "Sim/Movies/*.tiff", "angpix": "1.5", "kV": "300"},
               "motioncorr": {"fn_gain_ref": "Sim/Movies/gain.mrc", "dose_per_frame": "5",
                              "bin_factor": "1", "patch_x": "1", "patch_y": "1"},
               "ctffind": {"box": "128", "dfmax": "30000"}}
    args = [f"{job}:{k}={v}" for job, values in options.items() for k, v in values.items()]
    setup = _vitrify(tmp_path, "schemer", "--scheme", "prep", "--set_var", "wait_sec=0",
                     "--set_var", "maxtime_hr=0.0001", *sum((["--set_job_option", a] for a in args), []))
    assert setup.returncode == 0, setup.stderr
    run = _vitrify(tmp_path, "schemer", "--scheme", "prep", "--run", "--poll", "0.2")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "stopped by EXIT_maxtime" in run.stdout
    assert processes(tmp_path) == {"Import/job001/": "Succeeded", "MotionCorr/job002/": "Succeeded",
                                   "CtfFind/job003/": "Succeeded"}
    scheme = load(tmp_path, "prep")
    assert scheme.current_node == "EXIT_maxtime" and scheme.jobs["ctffind"].name == "CtfFind/job003/"
    assert scheme.floats["wait_sec"] == 0.0
    ctf = read_star_optics(tmp_path / "CtfFind/job003/micrographs_ctf.star", "micrographs").data
    assert len(ctf) == 1 and float(ctf["rlnDefocusU"].iloc[0]) > 1000

"""Round trip: ``vitrify simulate movies`` writes a session, ``vitrify mdcatch`` recovers it.

The expected values are the ones given to the simulator on its command line; the movies and the
gain reference are the files the simulator wrote (its movies.star lists the movies).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import needs_shared, shared_fixtures
from vitrify.cli.main import build_app
from vitrify.io.star import read_star


def _invoke(*args: str):
    result = CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("movie_format", ["tiff", "mrc"])
def test_mdcatch_recovers_a_simulated_session(tmp_path, movie_format):
    sim = tmp_path / "sim"
    _invoke("simulate", "movies", "--n", "3", "--size", "64", "--frames", "6", "--particles", "1",
            "--pixel-size", "0.83", "--dose-per-frame", "1.25", "--voltage", "200", "--cs", "1.4",
            "--format", movie_format, "--device", "cpu", "--out", str(sim))
    project = tmp_path / "project"
    _invoke("mdcatch", str(sim), "--project", str(project), "--particle-diameter", "150")

    record = json.loads((project / "acquisition.json").read_text())
    acq = record["acquisition"]
    assert acq["pixel_size_angst"] == pytest.approx(0.83)
    assert acq["voltage_kv"] == pytest.approx(200.0)
    assert acq["cs_mm"] == pytest.approx(1.4)
    assert acq["n_frames"] == 6
    assert acq["dose_per_frame_e_per_angst2"] == pytest.approx(1.25)
    assert acq["total_dose_e_per_angst2"] == pytest.approx(6 * 1.25)
    assert acq["super_resolution"] is False
    # every value the processing needs says which file and field it came from
    for name in ("pixel_size_angst", "voltage_kv", "cs_mm", "n_frames", "dose_per_frame_e_per_angst2"):
        assert acq["sources"][name]["file"].startswith("mov_00001"), name
    given = {k for k, v in acq.items() if v is not None and k not in ("sources", "missing", "source_path")}
    assert given == set(acq["sources"])  # every value has its (file, field), nothing else has one
    assert all(entry["source"] for entry in record["processing"].values())

    # the movies: the pattern (relative to the project, through its Movies link) finds exactly
    # the simulator's movies and not its gain reference
    simulated = sorted((sim / name).resolve() for name in
                       read_star(sim / "movies.star")["movies"]["rlnMicrographMovieName"])
    options = record["scheme_options"]
    found = sorted(p.resolve() for p in project.glob(options["prep__importmovies__fn_in_raw"]))
    assert found == simulated and record["movies_found"] == 3
    gain = project / options["prep__motioncorr__fn_gain_ref"]
    assert gain.resolve() == (sim / "Movies" / "gain.mrc").resolve()

    processing = record["processing"]
    assert processing["pixel_size_angst"]["value"] == pytest.approx(0.83)
    assert float(options["prep__motioncorr__dose_per_frame"]) == pytest.approx(1.25)
    assert options["prep__importmovies__kV"] == "200" and options["prep__importmovies__Cs"] == "1.4"
    assert options["proc__extract__extract_size"] == "280"  # 1.5 x 150 / 0.83 = 271.1 -> 280


SCHEMES = shared_fixtures("relion4_schemes")


@pytest.mark.slow
@needs_shared("relion4_schemes")
def test_simulated_session_runs_through_relion4_prep_scheme(tmp_path):
    """simulate → mdcatch (into RELION 4's own prep scheme) → the printed schemer commands."""
    import shutil
    import subprocess
    import sys

    from vitrify.io.star import read_star_optics

    sim = tmp_path / "sim"
    # 128 px: enough spectrum samples for CtfFind to fit (a job that can process nothing fails)
    _invoke("simulate", "movies", "--n", "2", "--size", "128", "--frames", "4", "--particles", "1",
            "--pixel-size", "0.83", "--dose-per-frame", "1.25", "--voltage", "200", "--cs", "1.4",
            "--device", "cpu", "--out", str(sim))
    project = tmp_path / "project"
    shutil.copytree(SCHEMES / "prep", project / "Schemes" / "prep")
    for path in project.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    # one pass only: no wait between passes, and the time limit already reached at the second
    result = _invoke("mdcatch", str(sim), "--project", str(project), "--particle-diameter", "150",
                     "--set", "prep__wait_sec=0", "--set", "prep__maxtime_hr=0")
    commands = result.output.splitlines()
    start = commands.index(f"cd {project.resolve()}")
    assert commands[start + 1] == "vitrify schemer --scheme prep --reset"
    vitrify = [sys.executable, "-m", "vitrify"]
    for args in (["--reset"], ["--run"]):
        done = subprocess.run(vitrify + ["schemer", "--scheme", "prep", *args], cwd=project,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
    optics = read_star_optics(project / "Import/job001/movies.star", "movies")
    assert optics.optics["rlnMicrographOriginalPixelSize"].tolist() == pytest.approx([0.83])
    assert optics.optics["rlnVoltage"].tolist() == pytest.approx([200.0])
    assert optics.optics["rlnSphericalAberration"].tolist() == pytest.approx([1.4])
    assert len(optics.data) == 2
    assert (project / "MotionCorr/job002/RELION_JOB_EXIT_SUCCESS").exists()
    assert (project / "CtfFind/job003/RELION_JOB_EXIT_SUCCESS").exists()

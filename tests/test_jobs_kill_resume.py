"""Every job killed with SIGKILL mid-run, then continued or rerun, ends as an uninterrupted run.

A killed run is a ``vitrify <job> ...`` subprocess that SIGKILLs itself at a chosen point: just
after (or just before) the N-th file whose name matches a pattern is renamed into place by an
atomic write (the wrapper :data:`KILLER` patches ``os.replace``). The
point therefore lands mid-run by construction (the process ends with -SIGKILL, without an exit
marker). The job is then rerun with the same command in the same directory (the preprocessing
jobs keep finished micrographs, as RELION's continue) or, for Class2D, continued from its last
complete iteration; every output (STAR text, MRC data, Class2D state) must equal the
uninterrupted run's, and nothing half-written may count as done.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from vitrify.pipeline.project import Project

#: python -c program: kill this process at the N-th os.replace onto a name matching PATTERN
KILLER = r"""
import os, re, signal, sys
pattern, nth, when = re.compile(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
real_replace, seen = os.replace, [0]
def replace(src, dst, *args, **kwargs):
    hit = bool(pattern.search(os.fspath(dst)))
    seen[0] += hit
    if hit and seen[0] == nth and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, *args, **kwargs)
    if hit and seen[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from vitrify.cli.main import main
main(sys.argv[4:])
"""
SKIP_NAMES = {"run.log", "run.out", "run.err", "note.txt", ".vitrify_heartbeat", "job.star", "job_pipeline.star",
              "RELION_JOB_EXIT_SUCCESS"}


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


def vitrify(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``vitrify ARGS`` to the end (status 0 expected)."""
    done = subprocess.run([sys.executable, "-m", "vitrify", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def vitrify_killed(args: list[str], cwd: Path, pattern: str, nth: int = 1, when: str = "after") -> None:
    """Run ``vitrify ARGS`` and SIGKILL it at the ``nth`` atomic write onto a name matching ``pattern``."""
    done = subprocess.run([sys.executable, "-c", KILLER, pattern, str(nth), when, *args], cwd=cwd,
                          env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == -signal.SIGKILL, f"not killed mid-run: {done.returncode} {done.stderr[-2000:]}"


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*")
            if p.is_file() and p.name not in SKIP_NAMES}


def assert_same_outputs(reference: Path, other: Path) -> None:
    """Same files; same STAR text (the job directory names made equal), MRC data, npz arrays."""
    ref, got = _files(reference), _files(other)
    assert sorted(got) == sorted(ref)
    names = [(str(other.resolve()), str(reference.resolve())), (other.name, reference.name)]
    for rel, path in ref.items():
        mine = got[rel]
        if path.suffix == ".star":
            text = mine.read_text()
            for new, old in names:
                text = text.replace(new, old)
            assert text == path.read_text(), rel
        elif path.suffix in (".mrc", ".mrcs", ".ctf"):
            assert np.array_equal(mrcfile.read(mine), mrcfile.read(path)), rel
        elif path.suffix == ".npz":
            with np.load(mine) as a, np.load(path) as b:
                assert all(np.array_equal(a[k], b[k]) for k in b.files if k != "options_json"), rel
        elif path.suffix in (".tiff", ".xml", ".mdoc", ".txt"):
            assert mine.read_bytes() == path.read_bytes(), rel


def assert_not_done(root: Path, job: str) -> None:
    """A killed job has no success marker and the pipeline does not call it Succeeded."""
    assert not (root / job / "RELION_JOB_EXIT_SUCCESS").exists()
    if (root / "default_pipeline.star").exists() and re.fullmatch(r"\w+/job\d+", job):
        assert Project.open(root).job_status(job + "/") == "Failed"


def assert_no_temps(folder: Path) -> None:
    assert not [p for p in folder.rglob(".*.tmp*")], "temporary files left behind"


MOVIE_ARGS = ["simulate", "movies", "--n", "2", "--size", "256", "--frames", "4", "--particles", "8",
              "--device", "cpu", "--seed", "3"]
PREPROCESS = {  # job: (command without --o, job directory of the reference chain)
    "import": (["import", "--i", "Sim/Movies/*.tiff", "--angpix", "1.5"], "Import/job001"),
    "motioncorr": (["motioncorr", "--i", "Import/job001/movies.star", "--gain", "Sim/Movies/gain.mrc",
                    "--patch-x", "2", "--patch-y", "2", "--dose-per-frame", "5", "--device", "cpu"],
                   "MotionCorr/job002"),
    "ctffind": (["ctffind", "--i", "MotionCorr/job002/corrected_micrographs.star", "--box", "128",
                 "--device", "cpu"], "CtfFind/job003"),
    "autopick": (["autopick", "--i", "CtfFind/job003/micrographs_ctf.star", "--log-diameter-min", "40",
                  "--log-diameter-max", "60", "--device", "cpu"], "AutoPick/job004"),
    "extract": (["extract", "--i", "CtfFind/job003/micrographs_ctf.star", "--coords",
                 "AutoPick/job004/autopick.star", "--box", "48", "--rescale", "32", "--device", "cpu"],
                "Extract/job005"),
    "select": (["select", "--i", "CtfFind/job003/micrographs_ctf.star", "--max", "30"], "Select/job006"),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project with the uninterrupted reference chain: simulated movies → ... → Select."""
    root = tmp_path_factory.mktemp("project")
    vitrify([*MOVIE_ARGS, "--out", "Sim"], root)
    for args, job in PREPROCESS.values():
        vitrify([*args, "--o", job], root)
    return root


def _next_job(job: str, number: int) -> str:
    return f"{job.split('/')[0]}/job{number:03d}"


#: job → [(pattern, nth, before/after)]: where the killed runs stop
KILL_POINTS = {
    "import": [(r"movies\.star$", 1, "before"), (r"movies\.star$", 1, "after")],
    "motioncorr": [(r"mov_00001_shifts\.png$", 1, "after"), (r"mov_00002\.mrc$", 1, "before")],
    "ctffind": [(r"mov_00001\.ctf$", 1, "after"), (r"_ctf\.star$", 1, "after")],
    "autopick": [(r"_autopick\.star$", 1, "after"), (r"_autopick\.star$", 2, "before")],
    "extract": [(r"\.mrcs$", 1, "after"), (r"particles\.star$", 1, "after")],
    "select": [(r"micrographs\.star$", 1, "before"), (r"micrographs\.star$", 1, "after")],
}


@pytest.mark.slow
@pytest.mark.parametrize("job", list(KILL_POINTS))
def test_preprocessing_job_killed_then_rerun_ends_as_uninterrupted(project, job):
    args, reference = PREPROCESS[job]
    for number, (pattern, nth, when) in enumerate(KILL_POINTS[job], start=20):
        name = _next_job(reference, number)
        vitrify_killed([*args, "--o", name], project, pattern, nth, when)
        assert_not_done(project, name)
        vitrify([*args, "--o", name], project)  # the same command again: continue where it stopped
        assert (project / name / "RELION_JOB_EXIT_SUCCESS").exists()
        assert_no_temps(project / name)
        assert_same_outputs(project / reference, project / name)


@pytest.mark.slow
def test_simulate_killed_then_rerun_ends_as_uninterrupted(project, tmp_path):
    for i, (pattern, nth, when) in enumerate([(r"mov_00001\.tiff$", 1, "after"),
                                             (r"truth\.star$", 1, "before")]):
        out = tmp_path / f"Sim{i}"
        vitrify_killed([*MOVIE_ARGS, "--out", out.name], tmp_path, pattern, nth, when)
        assert_not_done(tmp_path, out.name)
        vitrify([*MOVIE_ARGS, "--out", out.name], tmp_path)
        assert_no_temps(out)
        assert_same_outputs(project / "Sim", out)


CLASS2D = ["class2d", "--K", "2", "--iter", "6", "--grad-write-iter", "2", "--particle-diameter", "100",
           "--psi-step", "15", "--threads", "1", "--device", "cpu", "--seed", "3"]


def _last_optimiser(job_dir: Path) -> Path:
    """The newest complete iteration (its optimiser.star is written last)."""
    return max(job_dir.glob("run_it*_optimiser.star"), key=lambda p: int(p.name[6:9]))


@pytest.fixture(scope="module")
def particles(tmp_path_factory) -> Path:
    """Simulated particles whose image names are relative to their STAR file's folder."""
    root = tmp_path_factory.mktemp("class2d")
    vitrify(["simulate", "particles", "--n", "40", "--box", "32", "--pixel-size", "4", "--seed", "1",
             "--device", "cpu", "--out", "sim"], root)
    assert "@particles.mrcs" in (root / "sim/particles.star").read_text()
    return root


@pytest.mark.slow
def test_class2d_killed_then_continued_from_elsewhere_ends_as_uninterrupted(particles):
    root = particles
    for cwd in ("w0", "w1", "w2", "w3"):
        (root / cwd).mkdir(exist_ok=True)
    vitrify([*CLASS2D, "--i", "../sim/particles.star", "--o", "../ref"], root / "w0")
    for i, (pattern, nth, when) in enumerate([(r"run_it004_data\.star$", 1, "after"),
                                             (r"_optimiser\.star$", 2, "after")]):
        out = root / f"killed{i}"
        vitrify_killed([*CLASS2D, "--i", "../sim/particles.star", "--o", f"../{out.name}"], root / "w1",
                       pattern, nth, when)
        assert_not_done(root, out.name)
        last = _last_optimiser(out)
        assert last.name == "run_it002_optimiser.star"
        # continued from another working directory, into the same job directory
        vitrify(["class2d", "--continue", str(last), "--o", str(out), "--threads", "1", "--device", "cpu"],
                root / "w2")
        assert_no_temps(out)
        assert_same_outputs(root / "ref", out)
    # a later job reads the data.star from yet another directory
    vitrify(["class2d", "--i", str(root / "killed0/run_it006_data.star"), "--o", "../second", "--K", "2",
             "--iter", "1", "--algorithm", "em", "--particle-diameter", "100", "--threads", "1",
             "--device", "cpu"], root / "w3")
    assert (root / "second/run_it001_data.star").exists()


def test_class2d_names_resolve_from_the_project_or_anywhere(particles, tmp_path):
    """In a project, names are project-relative (RELION); outside, absolute; both read from elsewhere."""
    from vitrify.io.star import read_star
    from vitrify.jobs.class2d import Options, run

    options = {"n_classes": 2, "particle_diameter_angst": 100.0, "algorithm": "em", "nr_iter": 1,
               "psi_step_deg": 30.0, "threads": 1, "device": "cpu"}
    proj = tmp_path / "proj"
    (proj / "Extract/job001").mkdir(parents=True)
    (proj / "default_pipeline.star").write_text("")
    for name in ("particles.star", "particles.mrcs"):
        (proj / "Extract/job001" / name).write_bytes((particles / "sim" / name).read_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(elsewhere)  # not the project: names must still come out project-relative
        run(Options(input_star=str(proj / "Extract/job001/particles.star"), **options), proj / "Class2D/job002")
        run(Options(input_star=str(particles / "sim/particles.star"), **options), tmp_path / "out")
    finally:
        os.chdir(cwd)
    data = read_star(proj / "Class2D/job002/run_it001_data.star")["particles"]
    assert data["rlnImageName"].iloc[0] == "000001@Extract/job001/particles.mrcs"
    optimiser = read_star(proj / "Class2D/job002/run_it001_optimiser.star")["optimiser_general"]
    assert optimiser["rlnModelStarFile"] == "Class2D/job002/run_it001_model.star"
    outside = read_star(tmp_path / "out/run_it001_data.star")["particles"]["rlnImageName"].iloc[0]
    assert outside == f"000001@{(particles / 'sim/particles.mrcs').resolve().as_posix()}"
    # continue each from a third directory
    for opt in (proj / "Class2D/job002/run_it001_optimiser.star", tmp_path / "out/run_it001_optimiser.star"):
        os.chdir(tmp_path)
        try:
            out = run(Options(continue_from=str(opt), nr_iter=2, threads=1, device="cpu"), opt.parent)
        finally:
            os.chdir(cwd)
        assert out.name == "run_it002_data.star"


def test_leftover_temp_files_are_never_taken_for_outputs(tmp_path):
    """A writer killed before its rename leaves ``.name.XXXXXXXX.tmp.ext``: not a job output, not
    found by the output globs, and removed when the job runs again."""
    from vitrify.io.atomic import remove_stale_temps
    from vitrify.jobs.base import run_job
    from vitrify.pipeline._nodes import output_nodes

    job = tmp_path / "Class2D/job001"
    (job / "sub").mkdir(parents=True)
    (job / "run_it002_data.star").write_text("data_\n")
    stale = [job / ".run_it009_data.star.a1B2c3D4.tmp.star", job / "sub/.x.mrcs.zz_99xyz.tmp.mrcs"]
    for path in stale:
        path.write_text("half")
    nodes = dict(output_nodes(tmp_path, "Class2D/job001/", "relion.class2d"))
    assert "Class2D/job001/run_it002_data.star" in nodes and not any(".tmp" in n for n in nodes)
    assert [p.name for p in remove_stale_temps(job)] == sorted(p.name for p in stale)
    for path in stale:
        path.write_text("half")
    run_job(lambda options, job_dir: None, None, job)
    assert not any(p.exists() for p in stale) and (job / "RELION_JOB_EXIT_SUCCESS").exists()
    assert (job / "run_it002_data.star").exists()

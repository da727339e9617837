"""The 3D engine jobs data-parallel under torchrun (gloo on CPU) give what one process gives.

refine3d, class3d and initialmodel as one process (the default) and as ``torchrun --standalone
--nproc-per-node 2 -m vitrify ...`` with the same seed, on particles from our simulator: each rank
reads only its shard of the particles (refine3d: of each half set, whose sums are all-reduced
over the ranks for that half alone), the E-step sums are all-reduced and rank 0 gathers the
assignments and writes. The outputs must agree: the same files, >= 98 % of the particles with the
same class and pose, maps within float tolerance (the sums are only added in another order).
More ranks than a half set holds is a user error, before any rank joins.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from vitrify.io.errors import InputError

SRC = Path(__file__).resolve().parents[1] / "src"
COMMON = ["--particle-diameter", "80", "--threads", "1", "--device", "cpu"]
POSES = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst")
JOBS = {
    "refine3d": ["refine3d", "--i", "sim/particles.star", "--ref", "sim/truth_map.mrc", "--iter", "2",
                 "--healpix-order", "1", "--local-order", "2", "--max-order", "2", *COMMON],
    "class3d": ["class3d", "--i", "sim/particles.star", "--ref", "sim/truth_map.mrc", "--K", "2", "--iter", "2",
                "--healpix-order", "1", "--seed", "1", *COMMON],
    "initialmodel": ["initialmodel", "--i", "sim/particles.star", "--iter", "4", "--ini-subset", "40",
                     "--fin-subset", "96", "--healpix-order", "1", "--grad-write-iter", "2", "--seed", "1", *COMMON],
}
#: refine3d with local searches from the start, from the poses of the 2-rank global refinement
LOCAL = ["refine3d", "--i", "two/refine3d/run_data.star", "--ref", "sim/truth_map.mrc", "--iter", "1",
         "--healpix-order", "2", "--local-order", "2", "--max-order", "3", *COMMON]
#: each job continued from an iteration of its 2-rank run (``two/JOB``) for one more iteration
CONTINUE = {"refine3d": ("run_it001_optimiser.star", ["--iter", "2"]),
            "class3d": ("run_it001_optimiser.star", ["--iter", "2"]),
            "initialmodel": ("run_it002_optimiser.star", [])}


def _continued(job: str, out: str) -> list[str]:
    name, extra = CONTINUE[job]
    return [job, "--continue", f"two/{job}/{name}", *extra, "--threads", "1", "--o", f"{out}/{job}"]


@pytest.mark.slow
@pytest.mark.parametrize("job, maps, data", [
    ("refine3d", ("run_class001.mrc", "run_half1_class001_unfil.mrc"), "run_data.star"),
    ("class3d", ("run_it002_class001.mrc", "run_it002_class002.mrc"), "run_it002_data.star"),
    ("initialmodel", ("initial_model.mrc",), "run_it004_data.star")])
def test_a_run_continued_on_two_ranks_goes_on_as_one_process(runs, job, maps, data):
    """Each rank takes its shard's assignments (refine3d: of each half) from the iteration's files."""
    one, two = _pair(runs, job, "one_c", "two_c")
    for name in maps:
        assert _map_difference(one, two, name) <= 1e-4, name
    assert _same_pose_fraction(one, two, data, POSES) >= 0.98


def _main(argv: list[str], capsys=None) -> tuple[int, str]:
    """``vitrify -q ARGV`` in this process: (exit status, captured output)."""
    from vitrify.cli.main import main

    if capsys is not None:
        capsys.readouterr()
    try:
        main(["-q", *argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    if capsys is None:
        return code, ""
    out, err = capsys.readouterr()
    return code, out + err


@pytest.fixture(scope="module")
def adk(tmp_path_factory) -> Path:
    """``sim/``: 96 CTF-modulated particles of adenylate kinase, 24 px at 4.5 Å, SNR 0.2."""
    from vitrify.sim.particles import ParticleOptions, simulate_particles

    out = tmp_path_factory.mktemp("ranks3d")
    simulate_particles(ParticleOptions(structures=("adk",), n_particles=96, box_px=24, pixel_size_angst=4.5,
                                       snr=0.2, seed=4), out / "sim")
    return out


@pytest.fixture(scope="module")
def runs(adk: Path) -> Path:
    """Every job of :data:`JOBS` run as one process (into ``one/JOB``) and on two gloo ranks (``two/JOB``,
    one torchrun launch for all three), then continued (:data:`CONTINUE`) on two ranks (``two_c/JOB``, the same
    launch) and as one process (``one_c/JOB``)."""
    out = adk
    commands = [json.dumps([*args, "--o", f"two/{job}"]) for job, args in JOBS.items()]
    commands += [json.dumps(_continued(job, "two_c")) for job in JOBS]
    commands.append(json.dumps([*LOCAL, "--o", "two/refine3d_local"]))
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "VITRIFY_QUIET": "1"}
    script = Path(__file__).with_name("_ranks_jobs.py")
    ranks = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                              str(script), *commands], cwd=out, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    cwd = Path.cwd()
    try:
        os.chdir(out)
        for job, args in JOBS.items():  # meanwhile, one process each
            assert _main([*args, "--o", f"one/{job}"])[0] == 0, job
    finally:
        os.chdir(cwd)
    _, err = ranks.communicate(timeout=600)
    assert ranks.returncode == 0, err[-3000:]
    try:
        os.chdir(out)
        for job in JOBS:
            assert _main(_continued(job, "one_c"))[0] == 0, job
        assert _main([*LOCAL, "--o", "one/refine3d_local"])[0] == 0
    finally:
        os.chdir(cwd)
    return out


def _pair(runs: Path, job: str, one: str = "one", two: str = "two") -> tuple[Path, Path]:
    one, two = runs / one / job, runs / two / job
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    return one, two


def _map_difference(one: Path, two: Path, name: str) -> float:
    """Largest voxel difference of map ``name`` between the two runs, relative to the first map's largest value."""
    a, b = mrcfile.read(one / name), mrcfile.read(two / name)
    return float(np.abs(b - a).max() / np.abs(a).max())


def _same_pose_fraction(one: Path, two: Path, name: str, columns: tuple[str, ...]) -> float:
    """Fraction of the 96 particles whose ``columns`` (angles, offsets, class, half) agree between the runs."""
    from vitrify.io.star import read_star

    a, b = (read_star(d / name)["particles"] for d in (one, two))
    assert len(a) == len(b) == 96
    same = np.ones(len(a), dtype=bool)
    for column in columns:
        same &= np.isclose(a[column].to_numpy(float), b[column].to_numpy(float), atol=1e-2)
    return float(same.mean())


@pytest.mark.slow
def test_refine3d_on_two_ranks_refines_as_one_process(runs):
    one, two = _pair(runs, "refine3d")
    for name in ("run_class001.mrc", "run_half1_class001_unfil.mrc", "run_half2_class001_unfil.mrc"):
        assert _map_difference(one, two, name) <= 1e-4, name
    assert _same_pose_fraction(one, two, "run_data.star", (*POSES, "rlnRandomSubset")) >= 0.98
    log = (two / "run.log").read_text()  # rank 0's; the other rank writes nothing
    assert "half 1: 48 particles" in log and "bytes all-reduced by each of 2 ranks" in log
    assert log.count("final resolution") == 1


@pytest.mark.slow
def test_refine3d_local_searches_on_two_ranks_as_one_process(runs):
    one, two = _pair(runs, "refine3d_local")
    for name in ("run_class001.mrc", "run_half1_class001_unfil.mrc", "run_half2_class001_unfil.mrc"):
        assert _map_difference(one, two, name) <= 1e-4, name
    assert _same_pose_fraction(one, two, "run_data.star", POSES) >= 0.98
    assert "local" in (two / "run.log").read_text()


@pytest.mark.slow
def test_class3d_on_two_ranks_classifies_as_one_process(runs):
    one, two = _pair(runs, "class3d")
    for k in (1, 2):
        assert _map_difference(one, two, f"run_it002_class00{k}.mrc") <= 1e-4, f"run_it002_class00{k}.mrc"
    assert _same_pose_fraction(one, two, "run_it002_data.star", (*POSES, "rlnClassNumber")) >= 0.98
    assert "bytes all-reduced by each of 2 ranks" in (two / "run.log").read_text()


@pytest.mark.slow
def test_initialmodel_on_two_ranks_gives_the_model_of_one_process(runs):
    one, two = _pair(runs, "initialmodel")  # VDAM mini-batches: drawn over all particles, each rank runs its own
    for name in ("run_it004_class001.mrc", "initial_model.mrc"):
        assert _map_difference(one, two, name) <= 1e-4, name
    assert _same_pose_fraction(one, two, "run_it004_data.star", POSES) >= 0.98


@pytest.mark.parametrize("job, world, text", [
    ("refine3d", 60, "60 ranks for 48/48 particles per half set"),
    ("class3d", 200, "200 ranks for 96 particles"),
    ("initialmodel", 200, "200 ranks for 96 particles")])
def test_more_ranks_than_particles_stops_a_3d_job_in_one_line(adk, tmp_path, monkeypatch, capsys, job, world, text):
    monkeypatch.setenv("WORLD_SIZE", str(world))  # checked before any rank joins the group
    sim = adk / "sim"
    ref = ["--ref", str(sim / "truth_map.mrc")] if job != "initialmodel" else ["--ini-subset", "40"]
    code, output = _main([job, "--i", str(sim / "particles.star"), *ref, "--o", str(tmp_path / job),
                          "--particle-diameter", "80", "--threads", "1"], capsys)
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and text in lines[0], output


def test_more_ranks_than_a_half_set_holds_is_a_user_error(monkeypatch):
    from vitrify.jobs._ranks import check_rank_count, join_ranks

    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(InputError, match="3 ranks for 2 particles"):
        join_ranks(torch.device("cpu"), 2)
    with pytest.raises(InputError, match="3 ranks for 4/2 particles per half set") as err:
        join_ranks(torch.device("cpu"), 6, [4, 2])
    assert "at most 1 ranks" in str(err.value)
    check_rank_count(2, [4, 4])  # two shards of 2 each: fine
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert join_ranks(torch.device("cpu"), 2, [1, 1]) == (None, torch.device("cpu"))


def test_each_rank_holds_a_shard_of_each_half_set():
    from vitrify.jobs._ranks import half_shards
    from vitrify.ml.optimiser import Ranks

    subsets = torch.tensor([1, 2, 2, 1, 1, 2, 1, 2, 1, 1, 2, 2])
    parts = [half_shards(subsets, Ranks(r, 2, 12)) for r in range(2)]
    rows = np.concatenate([p[0] for p in parts])
    assert sorted(rows.tolist()) == list(range(12))  # every particle once
    for rows_r, local, index in parts:
        assert (subsets[rows_r] == local).all()  # each row keeps its half set
        assert [i.tolist() for i in index] == [[0, 3, 4, 6, 8, 9], [1, 2, 5, 7, 10, 11]]
    assert [int((p[1] == 1).sum()) for p in parts] == [2, 4]  # shard_rows(6, 2, r): even starts
    alone = half_shards(subsets, None)
    assert alone[0].tolist() == list(range(12)) and torch.equal(alone[1], subsets)


@pytest.mark.slow
def test_queue_template_runs_refine3d_on_the_launchers_copies(adk, tmp_path, monkeypatch):
    """RELION's queue submission (do_queue, nr_mpi 2, an mpirun template) starts refine3d's 2 ranks."""
    from test_class2d_queue import TEMPLATE, use_stand_in_queue

    from vitrify.io.star import read_star
    from vitrify.jobs.options.refine3d import Options, job_star_from_options
    from vitrify.pipeline.project import Project

    use_stand_in_queue(tmp_path, monkeypatch)
    root = tmp_path / "project"
    project = Project.open(root)
    (root / "sim").symlink_to(adk / "sim")
    (root / "qsub.sh").write_text(TEMPLATE)
    options = Options(input_star="sim/particles.star", reference="sim/truth_map.mrc", particle_diameter_angst=80.0,
                      max_iter=1, healpix_order=1, local_order=2, max_order=2, threads=1, device="cpu")
    name = project.add_job("relion.refine3d", {**job_star_from_options(options), "do_queue": "Yes", "nr_mpi": "2",
                                               "qsub": "sbatch", "qsubscript": "qsub.sh"})
    monkeypatch.chdir(root)
    assert project.run_job(name, wait=True) == "Succeeded", (root / name / "run.err").read_text()[-2000:]
    assert "#SBATCH --ntasks=2" in (root / name / "run_submit.script").read_text()
    log = (root / name / "run.log").read_text()
    assert "bytes all-reduced by each of 2 ranks" in log and log.count("final resolution") == 1
    data = read_star(root / name / "run_data.star")["particles"]
    assert len(data) == 96 and (data["rlnMaxValueProbDistribution"].to_numpy() > 0).all()  # both ranks' poses

"""Per-micrograph jobs on Dask (vitrify.jobs.scaleout): same outputs as in one process, faults, bad input.

A small simulated session (3 movies of 256², 4 frames) goes through motioncorr → ctffind →
autopick → extract in this process (``workers 1``, the reference). Then:

- ctffind, autopick and extract run on a running Dask cluster (``--scheduler tcp://...``: a
  LocalCluster of 2 workers in this process, reached over TCP so every task and result is
  pickled) and write the same files;
- motioncorr runs as ``vitrify motioncorr --workers 2`` (2 worker processes) while a preload
  module SIGKILLs one worker process mid-task (after its first micrograph is renamed into place,
  before the task returns): the task runs again and the outputs match the reference;
- the job process itself is SIGKILLed by a worker after the first movie; the same command again
  finishes only what is missing (the first movie's files are not rewritten);
- an address where no scheduler listens fails in one line with exit status 1 within the connect
  timeout, and a worker that cannot see the project folder is named before any task is sent.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest

from vitrify.io.errors import InputError
from vitrify.jobs.scaleout import ParallelOptions

distributed = pytest.importorskip("distributed")

SRC = Path(__file__).resolve().parents[1] / "src"
MOTION = ["motioncorr", "--i", "Import/job001/movies.star", "--gain", "Sim/Movies/gain.mrc", "--patch-x", "2",
          "--patch-y", "2", "--dose-per-frame", "5", "--device", "cpu"]

#: worker preload: SIGKILL this worker (or the whole job: its process group) at the first os.replace
#: onto a name matching $SCALEOUT_KILL_PATTERN, once over all workers ($SCALEOUT_KILL_MARK is created)
PRELOAD = r'''
import os, re, signal
_pattern = re.compile(os.environ["SCALEOUT_KILL_PATTERN"])
_real = getattr(os.replace, "real_replace", os.replace)  # a preload may run twice in one worker
def _replace(src, dst, *args, **kwargs):
    _real(src, dst, *args, **kwargs)
    if _pattern.search(os.fspath(dst)):
        try:
            os.close(os.open(os.environ["SCALEOUT_KILL_MARK"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        if os.environ["SCALEOUT_KILL_WHO"] == "worker":
            os.kill(os.getpid(), signal.SIGKILL)
        elif os.getpgid(0) != os.getpgid(int(os.environ["SCALEOUT_TEST_PID"])):  # never the test's own group
            os.killpg(os.getpgid(0), signal.SIGKILL)  # the job: its process and all its workers at once
_replace.real_replace = _real
os.replace = _replace
'''


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "VITRIFY_QUIET": "1", **extra}


def _vitrify(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``vitrify ARGS`` in a process group of its own (the job and its workers)."""
    return subprocess.run([sys.executable, "-m", "vitrify", *args], cwd=cwd, env=_env(**env), capture_output=True,
                          text=True, timeout=240, check=False, start_new_session=True)


def _cli(args: list[str]) -> None:
    from vitrify.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code in (0, None)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Simulated movies and the reference chain, run in this process (``workers 1``)."""
    root = tmp_path_factory.mktemp("scaleout")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        _cli(["simulate", "movies", "--n", "3", "--size", "256", "--frames", "4", "--particles", "8", "--device",
              "cpu", "--seed", "3", "--out", "Sim"])
        _cli(["import", "--i", "Sim/Movies/*.tiff", "--angpix", "1.5", "--o", "Import/job001"])
        _cli([*MOTION, "--o", "MotionCorr/job002"])
        for args in CHAIN.values():
            _cli(args("job0"))
    finally:
        os.chdir(cwd)
    return root


CHAIN = {  # job → command for job directory <Type>/<prefix>NN
    "ctffind": lambda p: ["ctffind", "--i", "MotionCorr/job002/corrected_micrographs.star", "--box", "128",
                          "--device", "cpu", "--o", f"CtfFind/{p}03"],
    "autopick": lambda p: ["autopick", "--i", "CtfFind/job003/micrographs_ctf.star", "--log-diameter-min", "40",
                           "--log-diameter-max", "60", "--device", "cpu", "--o", f"AutoPick/{p}04"],
    "extract": lambda p: ["extract", "--i", "CtfFind/job003/micrographs_ctf.star", "--coords",
                          "AutoPick/job004/autopick.star", "--box", "48", "--rescale", "32", "--device", "cpu",
                          "--o", f"Extract/{p}05"],
}
SKIP = {"run.log", "run.out", "run.err", "note.txt", "job.star", "job_pipeline.star", "timing.tsv",
        ".vitrify_heartbeat"}


def _outputs(job: Path) -> dict[str, Path]:
    return {p.relative_to(job).as_posix(): p for p in job.rglob("*")
            if p.is_file() and p.name not in SKIP and p.suffix != ".png"}


def _star_tables(path: Path, job_names: tuple[str, str]) -> dict:
    from vitrify.io.star import read_star

    text = path.read_text().replace(*job_names)
    tmp = path.with_name(f".cmp_{path.name}")
    tmp.write_text(text)
    try:
        return read_star(tmp)
    finally:
        tmp.unlink()


def assert_same_outputs(reference: Path, other: Path, exact: bool) -> None:
    """Same files; STAR tables equal (numbers within float tolerance unless ``exact``); MRC data too."""
    ref, got = _outputs(reference), _outputs(other)
    assert sorted(got) == sorted(ref)
    names = (f"{other.parent.name}/{other.name}", f"{reference.parent.name}/{reference.name}")
    for rel, path in ref.items():
        if path.suffix == ".star":
            mine, theirs = _star_tables(got[rel], names), _star_tables(path, ("", ""))
            assert mine.keys() == theirs.keys(), rel
            for block, table in theirs.items():
                if isinstance(table, pd.DataFrame):
                    pd.testing.assert_frame_equal(mine[block], table, check_exact=exact, rtol=1e-4, atol=1e-3)
                else:
                    assert mine[block] == table if exact else mine[block].keys() == table.keys(), rel
        elif path.suffix in (".mrc", ".mrcs", ".ctf"):
            a, b = mrcfile.read(got[rel]), mrcfile.read(path)
            if exact:
                assert np.array_equal(a, b), rel
            else:
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()), err_msg=rel)


@pytest.fixture
def tcp_cluster(project, monkeypatch):
    """A running 2-worker Dask cluster (threads of this process, reached over TCP), cwd = project."""
    monkeypatch.chdir(project)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None, silence_logs=40) as cluster:
        yield cluster.scheduler_address


@pytest.mark.parametrize("job", list(CHAIN))
def test_jobs_on_a_running_cluster_write_the_reference_outputs(project, tcp_cluster, job):
    from vitrify.cli.main import main

    args = CHAIN[job]("job1") + ["--scheduler", tcp_cluster]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code in (0, None)
    job_dir = project / args[-3]
    reference = project / args[-3].replace("job1", "job0")
    assert_same_outputs(reference, job_dir, exact=True)
    assert "on 2 Dask worker(s)" in (job_dir / "run.log").read_text()


def warn_or_skip(item: int, shared: str) -> int:
    """A task for map_items: logs a warning, skips negative items, returns the item doubled."""
    import logging

    logging.getLogger(f"vitrify.job.{shared}").warning("item %d seen", item)
    if item < 0:
        raise InputError("negative item", path=f"item{item}")
    return 2 * item


def test_skips_and_worker_log_records_come_back_in_order(project, tcp_cluster, caplog):
    from vitrify.jobs.scaleout import map_items

    job = project / "Scratch"
    job.mkdir(exist_ok=True)
    outcomes = map_items(warn_or_skip, [3, -1, 5], "scratch", ParallelOptions(scheduler=tcp_cluster), job, "x")
    assert [(o.index, o.value, o.skipped) for o in outcomes] == [
        (0, 6, ""), (1, None, "item-1: negative item"), (2, 10, "")]
    assert [o.records for o in outcomes] == [((30, f"item {i} seen"),) for i in (3, -1, 5)]


def _kill_env(tmp_path: Path, pattern: str, who: str) -> dict[str, str]:
    preload = tmp_path / "scaleout_kill.py"
    preload.write_text(PRELOAD)
    return {"DASK_DISTRIBUTED__WORKER__PRELOAD": f'["{preload}"]', "SCALEOUT_KILL_PATTERN": pattern,
            "SCALEOUT_KILL_MARK": str(tmp_path / "killed"), "SCALEOUT_KILL_WHO": who,
            "SCALEOUT_TEST_PID": str(os.getpid())}


@pytest.mark.slow
def test_motioncorr_on_two_workers_survives_a_killed_worker(project, tmp_path):
    """--workers 2 vs --workers 1: the same micrographs (float tolerance), one worker SIGKILLed mid-task."""
    done = _vitrify([*MOTION, "--o", "MotionCorr/job012", "--workers", "2"], project,
                    **_kill_env(tmp_path, r"mov_0000\d\.mrc$", "worker"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "killed").exists(), "no worker was killed"
    assert (project / "MotionCorr/job012/RELION_JOB_EXIT_SUCCESS").exists()
    log = (project / "MotionCorr/job012/run.log").read_text()
    assert re.search(r"[1-3] task\(s\) were on a worker that died and ran again", log), log[-2000:]
    assert_same_outputs(project / "MotionCorr/job002", project / "MotionCorr/job012", exact=False)


@pytest.mark.slow
def test_motioncorr_killed_then_rerun_finishes_only_what_is_missing(project, tmp_path):
    job = project / "MotionCorr/job022"
    done = _vitrify([*MOTION, "--o", "MotionCorr/job022", "--workers", "2"], project,
                    **_kill_env(tmp_path, r"mov_0000\d\.star$", "job"))
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert not (job / "RELION_JOB_EXIT_SUCCESS").exists() and not (job / "corrected_micrographs.star").exists()
    stems = {p.stem for p in job.rglob("mov_*.star")}  # the metadata STAR is a movie's last file
    finished = {p: p.stat().st_mtime_ns for p in job.rglob("mov_*") if p.name.split(".")[0].split("_noDW")[0]
                in stems and p.suffix in (".mrc", ".star")}
    assert 1 <= len(stems) < 3, stems  # killed mid-run: some movies done, not all
    done = _vitrify([*MOTION, "--o", "MotionCorr/job022"], project)  # the same job again, in this process
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished, "finished movies were corrected again"
    assert_same_outputs(project / "MotionCorr/job002", job, exact=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_fails_in_one_line_within_the_timeout(project):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    done = _vitrify(CHAIN["ctffind"]("job9") + ["--scheduler", address], project,
                    DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s")
    assert time.monotonic() - start < 60
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"no Dask scheduler answered at {address} within 2 s" in lines[0]


def test_a_worker_without_the_project_folder_is_named_before_any_task(project, tcp_cluster):
    from vitrify.jobs.scaleout import check_workers, project_problem

    with distributed.Client(tcp_cluster, set_as_default=False) as client:
        assert check_workers(client, str(project), Path("CtfFind/job003")) == 2
        with pytest.raises(InputError, match=r"2 of 2 Dask worker\(s\) cannot work in the project.*has no folder"):
            check_workers(client, str(project / "elsewhere"), Path("CtfFind/job003"))
    # a folder of the same name that is not the shared one: the job's probe file is not there
    assert "not the same file system" in project_problem(str(project), "CtfFind/job003/run.log", "token")
    assert project_problem(str(project)) == ""


def test_parallel_settings_travel_through_the_job_star():
    from vitrify.jobs import motioncorr
    from vitrify.jobs.jobstar_values import options_from_values
    from vitrify.jobs.motioncorr import Options, job_star_from_options, options_from_job_star

    options = Options("movies.star", parallel=ParallelOptions(workers=4, scheduler="tcp://head:8786"))
    values = job_star_from_options(options)
    assert values["nr_mpi"] == "4" and values["vitrify_parallel.scheduler"] == "tcp://head:8786"
    assert options_from_values(motioncorr, values) == options
    relion = options_from_job_star({"input_star_mics": "movies.star", "nr_mpi": "3", "nr_threads": "8"})
    assert relion.parallel == ParallelOptions(workers=3)
    assert not ParallelOptions().distributed and ParallelOptions(workers=2).distributed
    from vitrify.core.threads import usable_cpus
    from vitrify.jobs.scaleout import local_workers

    assert local_workers(ParallelOptions(workers=64), 3) == min(3, usable_cpus())
    assert local_workers(ParallelOptions(workers=2), 1) == 1  # one item: in the job process
    for bad, field in ((dict(workers=0), "nr_mpi"), (dict(scheduler="head:8786"), "scheduler")):
        with pytest.raises(InputError, match=field):
            ParallelOptions(**bad)


FACILITY = """
[dask]
system = "slurm"
queue = "gpu"
account = "cryoem"
cores = 8
processes = 2
memory = "32GB"
walltime = "02:00:00"
gpus = 1
job_extra = ["--constraint=a100"]
"""


def test_facility_dask_section_names_a_jobqueue_cluster(tmp_path):
    from vitrify.io.facility import load_facility_config

    path = tmp_path / "facility.toml"
    path.write_text(FACILITY)
    config = load_facility_config(path).dask
    assert (config.system, config.queue, config.cores, config.processes, config.gpus) == ("slurm", "gpu", 8, 2, 1)
    assert load_facility_config(None).dask is None
    for bad, what in (('system = "condor"', "unknown batch system"), ("cores = 0", "cores"),
                      ('nodes = "4"', "unknown key")):
        path.write_text(f"[dask]\n{bad}\n")
        with pytest.raises(InputError, match=what):
            load_facility_config(path)
    jobqueue = pytest.importorskip("dask_jobqueue")
    assert jobqueue
    from vitrify.jobs.scaleout import jobqueue_cluster

    cluster = jobqueue_cluster(config)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -A cryoem", "#SBATCH --cpus-per-task=8", "#SBATCH -t 02:00:00",
                 "#SBATCH --gres=gpu:1", "#SBATCH --constraint=a100", "--nworkers 2"):
        assert line in script, (line, script)


def test_jobqueue_scheduler_waits_for_batch_workers_but_obeys_an_abort(tmp_path, monkeypatch):
    """--scheduler jobqueue:FILE builds the facility's cluster and waits for its first batch job;
    an abort request (RELION_JOB_ABORT_NOW) ends the wait (no SLURM here: no job ever starts)."""
    pytest.importorskip("dask_jobqueue")
    from vitrify.jobs.base import JobAborted
    from vitrify.jobs.scaleout import map_items

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch: submitting fails, no worker comes
    (tmp_path / "site.toml").write_text(FACILITY)
    job = tmp_path / "CtfFind/job001"
    job.mkdir(parents=True)
    (job / "RELION_JOB_ABORT_NOW").touch()
    with pytest.raises(JobAborted):
        map_items(abs, [-1, -2], None, ParallelOptions(scheduler=f"jobqueue:{tmp_path / 'site.toml'}"), job, "x")

"""class2d through RELION's queue submission, on torch.distributed ranks across the launcher's copies.

A project's class2d job with ``do_queue Yes`` and ``nr_mpi 2`` is submitted with a RELION template
(``mpirun -n XXXmpinodesXXX XXXcommandXXX``); a stand-in ``sbatch`` runs the filled script and a
stand-in ``mpirun`` starts the copies with Open MPI's rank variables, as on a cluster's nodes. The
copies meet through the job folder, become the job's 2 ranks, each holds half of the particles, and
rank 0 writes every particle's assignment. The launcher variables, the meeting file and its
failures are checked without a launcher.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from vitrify.io.errors import InputError
from vitrify.pipeline.ranks import ADDRESS_FILE, LaunchedRank, launched_rank, meet_in_job_folder, torch_rank

TEMPLATE = """#!/bin/bash
#SBATCH --ntasks=XXXmpinodesXXX
#SBATCH --cpus-per-task=XXXthreadsXXX
#SBATCH --job-name=XXXnameXXX
mpirun -n XXXmpinodesXXX XXXcommandXXX >> XXXoutfileXXX 2>> XXXerrfileXXX
"""
SBATCH = '#!/bin/bash\necho "Submitted batch job 7"\nexec bash "$1"\n'
#: Open MPI's mpirun on one node: N copies of the command with its rank variables, fails if one fails
MPIRUN = """#!/bin/bash
n=$2; shift 2
pids=()
for ((r = 0; r < n; r++)); do
  OMPI_COMM_WORLD_RANK=$r OMPI_COMM_WORLD_SIZE=$n OMPI_COMM_WORLD_LOCAL_RANK=$r OMPI_COMM_WORLD_LOCAL_SIZE=$n \\
    "$@" & pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""


def test_launcher_variables_give_the_rank_and_a_batch_script_alone_is_one_process():
    ompi = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}
    assert launched_rank(ompi) == LaunchedRank(1, 4, 1, 2)
    assert launched_rank({"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1"}) == \
        LaunchedRank(3, 8, 1, 1)
    assert launched_rank({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "5"}) is None  # sbatch script
    assert launched_rank({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1"}) is None
    assert torch_rank({"RANK": "2", "WORLD_SIZE": "4"}) == (2, 4) and torch_rank({}) == (0, 1)


def test_ranks_meet_through_the_job_folder_and_a_stale_address_is_not_used(tmp_path):
    (tmp_path / ADDRESS_FILE).write_text("41\nold-host\n1234\n")  # an earlier batch job's rank 0
    with pytest.raises(InputError, match="rank 0 left no address within 0 s"):
        meet_in_job_folder(tmp_path, LaunchedRank(1, 2), timeout_s=0.3, env={"SLURM_JOB_ID": "42"})
    first = meet_in_job_folder(tmp_path, LaunchedRank(0, 2), env={"SLURM_JOB_ID": "42"})
    second = meet_in_job_folder(tmp_path, LaunchedRank(1, 2, 1, 2), timeout_s=5, env={"SLURM_JOB_ID": "42"})
    assert (first["MASTER_ADDR"], first["MASTER_PORT"]) == (second["MASTER_ADDR"], second["MASTER_PORT"])
    assert int(second["MASTER_PORT"]) > 0 and second["MASTER_ADDR"] != "old-host"
    assert (second["RANK"], second["WORLD_SIZE"], second["LOCAL_WORLD_SIZE"]) == ("1", "2", "2")
    with pytest.raises(InputError, match="left no address"):  # an abort request ends the wait
        meet_in_job_folder(tmp_path / "none", LaunchedRank(1, 2), timeout_s=60, aborted=lambda: True)


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def use_stand_in_queue(tmp_path: Path, monkeypatch) -> None:
    """Stand-in ``sbatch`` and ``mpirun`` first on the PATH, this checkout's sources on PYTHONPATH, and no
    torch.distributed or SLURM variables of the process running the tests."""
    src = Path(__file__).resolve().parents[1] / "src"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "sbatch", SBATCH)
    _executable(bin_dir / "mpirun", MPIRUN)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_JOB_ID", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("VITRIFY_QUIET", "1")


@pytest.mark.slow
def test_queue_template_runs_class2d_on_the_launchers_copies(tmp_path, monkeypatch):
    from _ml_synth import write_star_dataset

    from vitrify.io.star import read_star
    from vitrify.jobs.options.class2d import Options, job_star_from_options
    from vitrify.pipeline.project import Project

    use_stand_in_queue(tmp_path, monkeypatch)
    root = tmp_path / "project"
    project = Project.open(root)
    write_star_dataset(root / "sim", n_per_class=20, n=32)  # 60 particles
    (root / "qsub.sh").write_text(TEMPLATE)
    options = Options(input_star="sim/particles.star", n_classes=2, nr_iter=1, algorithm="em",
                      particle_diameter_angst=84.0, psi_step_deg=15.0, threads=1, device="cpu", seed=1)
    name = project.add_job("relion.class2d", {**job_star_from_options(options), "do_queue": "Yes", "nr_mpi": "2",
                                              "qsub": "sbatch", "qsubscript": "qsub.sh"})
    monkeypatch.chdir(root)
    assert project.run_job(name, wait=True) == "Succeeded", (root / name / "run.err").read_text()[-2000:]
    script = (root / name / "run_submit.script").read_text()
    assert "#SBATCH --ntasks=2" in script
    assert f"mpirun -n 2 {sys.executable} -m vitrify run-job --job {name}job.star >> {name}run.out" in script
    log = (root / name / "run.log").read_text()
    assert "rank 0 of 2 held 30 of 60 particles" in log and "rank 1 of 2 held 30 of 60 particles" in log
    data = read_star(root / name / "run_it001_data.star")["particles"]
    assert len(data) == 60
    assert (data["rlnMaxValueProbDistribution"].to_numpy() > 0).all()  # rank 1's particles came back too
    assert np.isin(data["rlnClassNumber"].to_numpy(), [1, 2]).all()
    given = read_star(root / "sim/particles.star")["particles"]["rlnImageName"]
    assert [n.split("@")[0] for n in data["rlnImageName"]] == [n.split("@")[0] for n in given]  # in input order

"""Ranks of a job that a queue's launcher started N times, for jobs that run on torch.distributed.

RELION's queue templates run the job's command N times (``mpirun -n XXXmpinodesXXX
XXXcommandXXX``, ``srun XXXcommandXXX``). vitrify's jobs are not MPI programs. A job that runs
data-parallel on torch.distributed (its module says ``RUNS_ON_RANKS = True``: class2d) turns the N
copies into its N ranks: rank, world size and local rank come from the launcher's variables
(:data:`LAUNCHERS`), and rank 0's address reaches the others through a file in the job folder,
which every node sees on the shared file system (:func:`meet_in_job_folder`). Any other job runs on
rank 0 alone while the other copies exit. Under torchrun (``RANK``/``WORLD_SIZE`` set, e.g.
``srun --ntasks-per-node 1 torchrun --no-python ... XXXcommandXXX``) torchrun's ranks are used as
they are. Nothing here imports torch.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vitrify.io.errors import InputError

#: (rank, size, local rank, local size) variables that launchers set, first match wins: Open MPI,
#: MVAPICH, MPICH / Intel MPI (hydra), srun (its step's tasks; a batch script alone is no step)
LAUNCHERS = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", ""),
)
#: variables naming the batch job (or launch) all copies belong to: tells a stale address file apart
JOB_IDS = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID", "OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE")
#: the file in the job folder where rank 0 leaves its address
ADDRESS_FILE = ".vitrify_ranks"


@dataclass(frozen=True)
class LaunchedRank:
    """Where this process stands among the ``world`` copies a launcher started."""

    rank: int
    world: int
    local_rank: int = 0
    local_world: int = 1


def _int(env: dict, name: str, default: int) -> int:
    value = env.get(name, "").strip() if name else ""
    return int(value) if value.isdigit() else default


def launched_rank(env: dict | None = None) -> LaunchedRank | None:
    """The launcher's rank of this process when it started more than one copy, else None."""
    env = os.environ if env is None else env
    for rank, size, local, local_size in LAUNCHERS:
        world = _int(env, size, 0)
        if rank in env and world > 1:
            return LaunchedRank(_int(env, rank, 0), world, _int(env, local, 0), _int(env, local_size, 1))
    return None


def torch_rank(env: dict | None = None) -> tuple[int, int]:
    """(``RANK``, ``WORLD_SIZE``) as torchrun sets them; (0, 1) outside torchrun."""
    env = os.environ if env is None else env
    return _int(env, "RANK", 0), max(_int(env, "WORLD_SIZE", 1), 1)


def _token(env: dict) -> str:
    return next((env[name] for name in JOB_IDS if env.get(name)), "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def meet_in_job_folder(job_dir: Path, me: LaunchedRank, *, timeout_s: float = 600.0,
                       env: dict | None = None, aborted: Callable[[], bool] = lambda: False) -> dict[str, str]:
    """torch.distributed's environment for ``me``: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` (for ``os.environ``).

    Rank 0 writes its host name and a free port (and the launcher's job id) into ``job_dir``
    / :data:`ADDRESS_FILE`; the others wait for a file of the same job id (without one, a file
    written since they started) for up to ``timeout_s`` or until ``aborted()``, else InputError.
    """
    from vitrify.io.atomic import atomic_write

    env = os.environ if env is None else env
    token = _token(env)
    path = Path(job_dir) / ADDRESS_FILE
    if me.rank == 0:
        host, port = socket.gethostname(), _free_port()
        atomic_write(path, f"{token}\n{host}\n{port}\n")
    else:
        host, port = _wait_for_address(path, token, timeout_s, aborted)
    return {"RANK": str(me.rank), "WORLD_SIZE": str(me.world), "LOCAL_RANK": str(me.local_rank),
            "LOCAL_WORLD_SIZE": str(me.local_world), "MASTER_ADDR": host, "MASTER_PORT": str(port)}


def _wait_for_address(path: Path, token: str, timeout_s: float, aborted: Callable[[], bool]) -> tuple[str, int]:
    started = time.time()
    while True:
        try:
            text, mtime = path.read_text(), path.stat().st_mtime
        except OSError:
            text, mtime = "", 0.0
        lines = text.splitlines()
        fresh = lines[0] == token if token else mtime >= started - 120
        if len(lines) >= 3 and fresh and lines[2].isdigit():
            return lines[1], int(lines[2])
        if aborted() or time.time() - started > timeout_s:
            raise InputError(f"rank 0 left no address within {timeout_s:.0f} s", path=path,
                             expected="every rank to see the project folder (a shared file system) and "
                                      "rank 0 to start")
        time.sleep(0.2)

"""The ``parallel`` settings group shared by the per-micrograph jobs (:mod:`vitrify.jobs.scaleout`).

RELION runs these jobs on ``nr_mpi`` MPI ranks, each taking a share of the micrographs; vitrify
takes ``nr_mpi`` as the number of Dask workers (1: the job's own process, as RELION without
MPI). ``nr_threads`` is not used by these jobs: a LocalCluster gives each worker an equal share
of the CPUs, a running cluster keeps its workers' own settings. The scheduler has no RELION
name and travels as the ``vitrify_parallel.scheduler`` row.
"""

from __future__ import annotations

from vitrify.jobs.fields import Group, Setting

PARALLEL = Group(
    help="Where the per-micrograph tasks run (vitrify.jobs.scaleout.ParallelOptions).",
    cls="vitrify.jobs.scaleout:ParallelOptions",
    members={
        "workers": Setting("Worker processes: 1 runs in this process; N > 1 starts a Dask LocalCluster of N "
                           "workers here (with --scheduler jobqueue: N batch jobs).", flag="--workers",
                           star="nr_mpi", default=1),
        "scheduler": Setting("Dask scheduler to join: tcp://HOST:PORT (workers must share the project folder), "
                             "or jobqueue[:FACILITY.toml] for the [dask] cluster of the facility file "
                             "(default $VITRIFY_FACILITY_CONFIG).", flag="--scheduler", default=""),
    })

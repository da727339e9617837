"""Running one job in this process: what ``vitrify run-job --job <Dir/jobNNN/job.star>`` does.

:func:`execute_job` reads the job.star, finds the job module (:mod:`vitrify.jobs.registry`),
builds its ``Options`` with ``options_from_job_star`` (plus vitrify's own ``vitrify_*``
rows, :mod:`vitrify.jobs.jobstar_values`) and runs it through
:func:`vitrify.jobs.base.run_job` (exit markers, run.log, abort checks). Whatever happens
(an unknown or unavailable job type, bad options, a crash) the job ends with an exit
marker and the pipeline records its final status and, on success, its output nodes.
Job modules (and torch) are imported only here, at run time.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from vitrify.io.errors import InputError
from vitrify.jobs.base import JobAborted, check_abort, clear_markers, run_job
from vitrify.jobs.status import EXIT_FAILURE, JobStatus
from vitrify.jobs.status import exit_marker_status as marker_status
from vitrify.jobs.jobstar_values import options_from_values
from vitrify.jobs.registry import resolve_job
from vitrify.pipeline import _heartbeat, _notes
from vitrify.pipeline._jobstar import JobStar, read_job_star, write_job_star
from vitrify.pipeline._pipeline_star import normalise_job_name
from vitrify.pipeline.project import Project

#: Options fields switched on when a job is continued (only where the job's Options has them).
CONTINUE_FIELDS: dict[str, object] = {"only_new": True}

#: environment variables that MPI launchers (Open MPI, MPICH/Intel, PMIx, MVAPICH, srun) set to the rank
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK", "SLURM_PROCID")


def secondary_rank() -> int:
    """The MPI rank of this process when it is not rank 0, else 0.

    vitrify jobs are not MPI programs: a queue template that starts ``mpirun -n XXXmpinodesXXX
    XXXcommandXXX`` must not run the job N times, so only rank 0 works and the others exit.
    """
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def job_name_of(job_star: Path, root: Path) -> str:
    """``CtfFind/job003/`` for ``<root>/CtfFind/job003/job.star``; InputError outside the project."""
    job_dir = (root / job_star).resolve().parent
    try:
        return normalise_job_name(job_dir.relative_to(root.resolve()).as_posix())
    except ValueError:
        raise InputError("job.star is not inside the project directory", path=job_star,
                         expected=f"a path below {root}") from None


def continued(options: object, module: ModuleType | None = None, job_dir: Path | None = None) -> object:
    """``options`` with the continue switches of :data:`CONTINUE_FIELDS` that it has turned on; a job
    whose module says ``CONTINUES_FROM_JOB_DIR`` (refine3d: ``--continue <job dir>`` goes on from its last
    optimiser.star) gets ``continue_from = job_dir`` unless job.star names a file."""
    names = {f.name for f in dataclasses.fields(options)} if dataclasses.is_dataclass(options) else set()
    changes = {k: v for k, v in CONTINUE_FIELDS.items() if k in names}
    if (job_dir is not None and getattr(module, "CONTINUES_FROM_JOB_DIR", False) and "continue_from" in names
            and not getattr(options, "continue_from")):
        changes["continue_from"] = str(job_dir)
    return dataclasses.replace(options, **changes) if changes else options


def _stderr_is(path: Path) -> bool:
    try:
        a, b = os.fstat(sys.stderr.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _report(job_dir: Path, err: BaseException) -> None:
    """Put the error in run.err (and on stderr when that is elsewhere) BEFORE any exit marker,
    so whoever sees the marker finds the message: one line for user errors, else a traceback."""
    if isinstance(err, InputError):
        text = f"error: {err}\n"
    else:
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    sys.stderr.write(text)
    sys.stderr.flush()
    if not _stderr_is(job_dir / "run.err"):
        _notes.append_text(job_dir / "run.err", text)


def _prepare(job_star: Path, continue_: bool):
    job = read_job_star(job_star)
    if continue_ and not job.is_continue:  # job.star says how the job last ran, as in RELION
        write_job_star(job_star, JobStar(job.type_label, job.options, True))
    module = resolve_job(job.type_label, job.options)
    options = options_from_values(module, job.options)  # RELION options + vitrify_* rows
    return module, (continued(options, module, job_star.parent) if continue_ or job.is_continue else options)


def execute_job(job_star: str | Path, *, continue_: bool = False, root: str | Path = ".") -> JobStatus:
    """Run the job of ``job_star`` (inside project ``root``, the current directory) here and now.

    Returns the final status: "Succeeded"; "Failed" after a user error or a crash (message or
    traceback in run.err, written before RELION_JOB_EXIT_FAILURE); "Aborted" after an abort request.
    """
    project = _open_here(root)
    name = job_name_of(Path(job_star), project.root)
    job_dir = project.root / name
    _mark_running(project, name)
    stop_heartbeat = _heartbeat.start(job_dir)
    try:
        try:
            module, options = _prepare(job_dir / "job.star", continue_)
        except Exception as err:  # noqa: BLE001 - every failure ends with a marker and a message
            _report(job_dir, err)
            clear_markers(job_dir)
            (job_dir / EXIT_FAILURE).touch()
            return project.job_status(name)
        return _run_here(project, name, module, options)[0]
    finally:
        stop_heartbeat()


def execute_options(name: str, module: ModuleType, options: object, *,
                    root: str | Path = ".") -> tuple[JobStatus, object]:
    """Run ``module.run(options)`` as the project's job ``name`` (already recorded, e.g. by
    :meth:`Project.register_job`) in this process: status Running while it runs (with a
    heartbeat), then the final status and, on success, the output nodes.

    Returns (final status, what ``module.run`` returned or None); the error of a failed run is
    in run.err and on stderr.
    """
    project = _open_here(root)
    name = normalise_job_name(name)
    _mark_running(project, name)
    stop_heartbeat = _heartbeat.start(project.root / name)
    try:
        return _run_here(project, name, module, options)
    finally:
        stop_heartbeat()


def runs_on_ranks(job_star: str | Path) -> bool:
    """True when the job of ``job_star`` runs data-parallel on torch.distributed ranks (its module
    says ``RUNS_ON_RANKS = True``)."""
    job = read_job_star(job_star)
    return bool(getattr(resolve_job(job.type_label, job.options), "RUNS_ON_RANKS", False))


def execute_rank(job_star: str | Path, *, continue_: bool = False, root: str | Path = ".") -> int:
    """A torch.distributed rank other than 0 of the job of ``job_star``: its share of the work,
    without the pipeline's records, markers or logs (rank 0 keeps them). Returns the exit code
    (a failure's message on stderr: one line for user errors)."""
    project = _open_here(root)
    name = job_name_of(Path(job_star), project.root)
    try:
        job = read_job_star(project.root / name / "job.star")
        module = resolve_job(job.type_label, job.options)
        options = options_from_values(module, job.options)
        run_job(module.run, continued(options, module, Path(name)) if continue_ or job.is_continue else options,
                Path(name))
    except JobAborted:
        return 2
    except Exception as err:  # noqa: BLE001 - reported like rank 0's failures
        sys.stderr.write(f"error: {err}\n" if isinstance(err, InputError) else
                         "".join(traceback.format_exception(type(err), err, err.__traceback__)))
        return 1
    return 0


def _open_here(root: str | Path) -> Project:
    project = Project.open(root)
    if Path.cwd().resolve() != project.root:
        raise InputError("jobs run from the project directory (paths in STAR files are relative to it)",
                         path=project.root, expected=f"the current directory to be {project.root}")
    return project


def _mark_running(project: Project, name: str) -> None:
    job_dir = project.root / name
    if project.job_status(name) != JobStatus.RUNNING:  # run directly, not launched by Project.run_job:
        clear_markers(job_dir)                    # markers of an earlier run are stale
        _notes.clear_run_files(job_dir)
        project.record_status(name, JobStatus.RUNNING)


def _run_here(project: Project, name: str, module: ModuleType, options: object) -> tuple[JobStatus, object]:
    job_dir = project.root / name
    result: list[object] = [None]

    def run(opts: object, directory: Path) -> object:
        if (job_dir / _notes.ABORT_REQUEST).exists():  # asked before run_job cleared ABORT_NOW
            raise JobAborted(f"abort requested in {directory}")
        check_abort(directory)
        try:
            result[0] = module.run(opts, directory)
            return result[0]
        except JobAborted:
            raise
        except Exception as err:
            _report(job_dir, err)
            raise

    try:
        run_job(run, options, Path(name))
    except JobAborted:
        pass
    except Exception:  # noqa: BLE001 - reported above; run_job wrote the failure marker
        if marker_status(job_dir) is None:
            (job_dir / EXIT_FAILURE).touch()
    return project.job_status(name), result[0]

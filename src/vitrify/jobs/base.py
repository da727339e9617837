"""What every job shares: the job directory, its log, exit markers and abort requests.

A job is an ``Options`` frozen dataclass and a function ``run(options, job_dir)``.
:func:`run_job` wraps that function with the duties RELION's pipeline expects: the
job directory exists, a log goes to ``job_dir/run.log``, the exit marker files
``RELION_JOB_EXIT_SUCCESS|FAILURE|ABORTED`` are written at the end, and an abort
request (``RELION_JOB_ABORT_NOW``) stops the job at its next :func:`check_abort`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vitrify.io.errors import InputError
from vitrify.jobs.status import ABORT_NOW, EXIT_ABORTED, EXIT_FAILURE, EXIT_SUCCESS

MARKERS = (EXIT_SUCCESS, EXIT_FAILURE, EXIT_ABORTED, ABORT_NOW)

Opts = TypeVar("Opts")
R = TypeVar("R")


class JobAborted(Exception):
    """Raised inside a job when the user asked it to stop (RELION_JOB_ABORT_NOW)."""


def check_abort(job_dir: str | Path) -> None:
    """Raise :class:`JobAborted` if an abort was requested for ``job_dir``."""
    if (Path(job_dir) / ABORT_NOW).exists():
        raise JobAborted(f"abort requested in {job_dir}")


def clear_markers(job_dir: str | Path) -> None:
    """Remove the exit and abort marker files before a (re)run."""
    for name in MARKERS:
        (Path(job_dir) / name).unlink(missing_ok=True)


def job_logger(job_dir: str | Path) -> logging.Logger:
    """A logger that writes to ``job_dir/run.log`` (and propagates to the console)."""
    job_dir = Path(job_dir)
    logger = logging.getLogger(f"vitrify.job.{job_dir.resolve()}")
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        handler = logging.FileHandler(job_dir / "run.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    return logger


def is_secondary_rank() -> bool:
    """True in a torchrun rank other than 0 (``RANK`` > 0 of ``WORLD_SIZE`` > 1): rank 0 keeps the
    job's log, markers and pipeline record."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and int(os.environ.get("RANK", "0") or 0) > 0


def run_job(run: Callable[[Opts, Path], R], options: Opts, job_dir: str | Path) -> R:
    """Run ``run(options, job_dir)`` with the pipeline's duties around it.

    Sizes the CPU thread pools (:func:`vitrify.core.threads.configure_threads`, from the
    options' ``threads`` if they have one), creates ``job_dir``, clears old markers and the
    temporary files of writes an earlier (killed) run left unfinished, logs start and end, and touches
    ``RELION_JOB_EXIT_SUCCESS`` on success, ``..._ABORTED`` on :class:`JobAborted` and
    ``..._FAILURE`` on any other exception (which is re-raised for the caller). A torchrun rank
    other than 0 only runs (:func:`is_secondary_rank`).
    """
    from vitrify.core.threads import configure_threads
    from vitrify.io.atomic import remove_stale_temps

    if is_secondary_rank():
        configure_threads(getattr(options, "threads", 0) or 0)
        return run(options, Path(job_dir))
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    clear_markers(job_dir)
    log = job_logger(job_dir)
    for stale in remove_stale_temps(job_dir):  # a killed earlier run's half-written files
        log.info("removed %s (left by an interrupted write)", stale)
    log.info("start %s with %r", getattr(run, "__module__", run), options)
    log.info("%s", configure_threads(getattr(options, "threads", 0) or 0).describe())
    try:
        result = run(options, job_dir)
    except JobAborted:
        log.warning("aborted on request")
        (job_dir / EXIT_ABORTED).touch()
        raise
    except InputError as err:
        log.error("input error: %s", err)
        (job_dir / EXIT_FAILURE).touch()
        raise
    except BaseException:
        log.exception("failed")
        (job_dir / EXIT_FAILURE).touch()
        raise
    log.info("finished")
    (job_dir / EXIT_SUCCESS).touch()
    return result

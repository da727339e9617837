"""Running a job command (``vitrify ctffind ... --o DIR``), as a pipeline job when DIR says so.

When ``--o`` is ``<JobTypeDir>/jobNNN`` of the command's job type (relative to the current
directory, or absolute inside it), the current directory is the project, as in RELION:
default_pipeline.star is created if absent, the job is recorded under that name (a new
process, or the existing one continued) with a job.star in RELION-4 option names (so
``vitrify run-job --job DIR/job.star`` re-runs the same thing), and it runs here through
:func:`vitrify.pipeline.pipeliner.execute_options` (Running, then the final status and the
output nodes). Any other ``--o`` runs the job in DIR and records nothing.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import typer

from vitrify.jobs.status import EXIT_CODES, JobStatus

#: job module → job type label written to job.star and the pipeline (RELION-4's labels)
TYPE_LABELS: dict[str, str] = {
    "import_": "relion.import.movies", "motioncorr": "relion.motioncorr.own",
    "ctffind": "relion.ctffind.ctffind4", "autopick": "relion.autopick", "extract": "relion.extract",
    "select": "relion.select.onvalue", "class2d": "relion.class2d", "class_ranker": "relion.select.class2dauto",
    "initialmodel": "relion.initialmodel", "class3d": "relion.class3d", "refine3d": "relion.refine3d",
    "mask_create": "relion.maskcreate",
    "postprocess": "relion.postprocess",
}
#: job module → {options.method: RELION-4 sub-label}; a method not listed keeps TYPE_LABELS' label
METHOD_LABELS: dict[str, dict[str, str]] = {
    "autopick": {"log": "relion.autopick.log", "template": "relion.autopick.ref2d",
                 "topaz": "relion.autopick.topaz"},
}
_JOB = re.compile(r"job\d{3,}")


def type_label_of(module_name: str, options: object) -> str:
    """The job type label a command's job gets (``relion.autopick.log`` for LoG picking)."""
    by_method = METHOD_LABELS.get(module_name, {})
    return by_method.get(getattr(options, "method", None), TYPE_LABELS[module_name])


def pipeline_job_name(out: Path, type_label: str, cwd: Path | None = None) -> str | None:
    """``CtfFind/job003/`` when ``out`` is a job directory of ``type_label`` in ``cwd``; else None."""
    from vitrify.jobs.registry import job_directory

    cwd = (cwd or Path.cwd()).resolve()
    path = Path(os.path.normpath(out if Path(out).is_absolute() else cwd / out))
    try:
        parts = path.relative_to(cwd).parts  # not resolved: an alias (symlink) is not a job name
    except ValueError:
        return None
    if len(parts) == 2 and parts[0] == job_directory(type_label) and _JOB.fullmatch(parts[1]):
        return f"{parts[0]}/{parts[1]}/"
    return None


def run_command_job(module_name: str, options: object, out: Path) -> object:
    """Run job module ``module_name`` with ``options`` in ``out``; return what its ``run`` returned.

    Inside a project (``out`` = ``JobType/jobNNN``) the job is recorded in default_pipeline.star
    and a failed or aborted job exits the command with status 1 or 2 (the error is in run.err
    and on stderr). Elsewhere the job runs in ``out`` as before; errors propagate.
    """
    from vitrify.jobs.base import is_secondary_rank, run_job

    module = importlib.import_module(f"vitrify.jobs.{module_name}")
    type_label = type_label_of(module_name, options)
    name = pipeline_job_name(out, type_label)
    if name is None or is_secondary_rank():  # torchrun: rank 0 alone records the job
        return run_job(module.run, options, out)
    from vitrify.pipeline.pipeliner import execute_options
    from vitrify.pipeline.project import Project

    project = Project.open(".")
    existed = project.register_job(name, type_label, module.job_star_from_options(options))
    typer.echo(f"{name}: {'continuing the job' if existed else 'new job'} in {project.root}")
    status, result = execute_options(name, module, options)
    if status != JobStatus.SUCCEEDED:  # a failure's message is already on stderr (one line for user errors)
        if status == JobStatus.ABORTED:
            typer.echo(f"{name}: aborted", err=True)
        raise typer.Exit(EXIT_CODES.get(status, 1))
    return result

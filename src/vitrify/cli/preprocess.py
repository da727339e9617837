"""Preprocessing commands: ``vitrify import | motioncorr | ctffind | autopick | extract | select``.

Each command's options are the fields of its job's ``Options`` (:mod:`vitrify.jobs.options`:
flags, defaults and help on the fields); the command runs the job with
:func:`vitrify.jobs.base.run_job` in ``--o`` (run.log and exit markers included); an
``--o JobType/jobNNN`` in the current directory makes it a pipeline job
(:mod:`vitrify.cli._record`). Heavy modules are imported inside the command bodies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import typer

from vitrify.cli._job_options import add_job_command, output_option

#: command → (job module, what the command does; the ``--help`` summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "import": ("import_", "Import movies or micrographs → DIR/movies.star or DIR/micrographs.star."),
    "motioncorr": ("motioncorr", "Correct beam-induced motion → DIR/corrected_micrographs.star."),
    "ctffind": ("ctffind", "Estimate the CTF of each micrograph → DIR/micrographs_ctf.star."),
    "autopick": ("autopick", "Pick particles → per-micrograph coordinate STAR files + DIR/autopick.star."),
    "extract": ("extract", "Extract particles → DIR/particles.star and per-micrograph .mrcs stacks."),
    "select": ("select", "Keep rows whose --label value lies between --min and --max → DIR/micrographs.star "
                         "or particles.star."),
}


def _runner(module_name: str) -> Callable[..., None]:
    def run(options: object, output_dir: Path) -> None:
        from vitrify.cli._record import run_command_job

        typer.echo(f"wrote {run_command_job(module_name, options, output_dir)}")
    return run


def register(app: typer.Typer) -> None:
    """Add the preprocessing commands to ``app``."""
    for command, (module_name, summary) in COMMANDS.items():
        options = importlib.import_module(f"vitrify.jobs.options.{module_name}").Options
        add_job_command(app, command, options, _runner(module_name), own=[output_option()], help=summary)

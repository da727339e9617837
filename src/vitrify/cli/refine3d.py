"""``vitrify refine3d``: gold-standard 3D auto-refinement (RELION relion.refine3d).

Options are the fields of :class:`vitrify.jobs.options.refine3d.Options`; ``--o`` is the command's own
(a pipeline job for ``--o Refine3D/jobNNN``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from vitrify.cli._job_options import add_job_command, output_option


def _refine3d(options: object, output_dir: Path) -> None:
    """Gold-standard 3D refinement from a reference (run_itNNN_*, run_class001.mrc, half maps, run_model.star)."""
    from vitrify.cli._record import run_command_job

    path = run_command_job("refine3d", options, output_dir)
    typer.echo(f"refined map: {path}")


def register(app: typer.Typer) -> None:
    """Add the ``refine3d`` command to ``app``."""
    from vitrify.jobs.options.refine3d import Options

    add_job_command(app, "refine3d", Options, _refine3d,
                    own=[output_option(help="Output (job) directory; Refine3D/jobNNN: a pipeline job.")])

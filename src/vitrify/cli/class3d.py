"""``vitrify class3d``: 3D classification (RELION relion.class3d) from a reference map.

The options are the fields of :class:`vitrify.jobs.options.class3d.Options`; ``--o`` is the
command's own.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vitrify.cli._job_options import add_job_command, output_option


def _class3d(options: object, output_dir: Path) -> None:
    """3D classification: K classes from a low-passed reference (EM; --grad for VDAM); writes run_itNNN_*."""
    from vitrify.cli._record import run_command_job

    path = run_command_job("class3d", options, output_dir)
    typer.echo(f"3D classes: {path}")


def register(app: typer.Typer) -> None:
    """Add the ``class3d`` command to ``app``."""
    from vitrify.jobs.options.class3d import Options

    add_job_command(app, "class3d", Options, _class3d,
                    own=[output_option(help="Output (job) directory; Class3D/jobNNN: a pipeline job.")])

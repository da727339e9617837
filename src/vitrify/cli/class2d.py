"""``vitrify class2d``: 2D classification with VDAM (default) or EM, RELION-4 outputs.

The options are the fields of :class:`vitrify.jobs.options.class2d.Options` (flags, defaults
and help on the fields); ``--o`` is the command's own.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vitrify.cli._job_options import add_job_command, output_option


def _class2d(options: object, output_dir: Path) -> None:
    """Classify particles into K 2D classes (writes run_itNNN_{classes.mrcs,model,data,optimiser}.star)."""
    from vitrify.cli._record import run_command_job

    data_star = run_command_job("class2d", options, output_dir)
    typer.echo(f"classified particles: {data_star}")


def register(app: typer.Typer) -> None:
    """Add the ``class2d`` command to ``app``."""
    from vitrify.jobs.options.class2d import Options

    add_job_command(app, "class2d", Options, _class2d,
                    own=[output_option(help="Output (job) directory; Class2D/jobNNN: a pipeline job.")])

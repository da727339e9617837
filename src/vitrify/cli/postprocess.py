"""Mask and post-processing commands: ``vitrify mask-create | postprocess``.

Options are the fields of the jobs' ``Options`` (:mod:`vitrify.jobs.options.mask_create`,
:mod:`vitrify.jobs.options.postprocess`); each runs through :func:`vitrify.cli._record.run_command_job`
in ``--o`` (run.log, exit markers; a pipeline job for ``--o MaskCreate/jobNNN`` or ``PostProcess/jobNNN``).
"""

from __future__ import annotations

import importlib

import typer

from vitrify.cli._job_options import add_job_command, output_option
from vitrify.cli.preprocess import _runner

#: command → (job module, ``--help`` summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "mask-create": ("mask_create", "Soft solvent mask from a map (threshold, extension, soft edge) → DIR/mask.mrc."),
    "postprocess": ("postprocess", "Masked, phase-randomisation-corrected FSC, B-factor and sharpening of two "
                                   "half-maps → DIR/postprocess.mrc, postprocess_masked.mrc, postprocess.star."),
}


def register(app: typer.Typer) -> None:
    """Add ``mask-create`` and ``postprocess`` to ``app``."""
    for command, (module_name, summary) in COMMANDS.items():
        options = importlib.import_module(f"vitrify.jobs.options.{module_name}").Options
        add_job_command(app, command, options, _runner(module_name), own=[output_option()], help=summary)

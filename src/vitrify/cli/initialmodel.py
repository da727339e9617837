"""``vitrify initialmodel`` (3D initial model, RELION relion.initialmodel) and ``vitrify align-symmetry``.

The initial model's options are the fields of :class:`vitrify.jobs.options.initialmodel.Options`;
``--o`` is the command's own. ``align-symmetry`` is RELION's ``relion_align_symmetry``: it finds
the symmetry axes of a map for a point group and turns the map into RELION's standard orientation.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vitrify.cli._job_options import add_job_command, output_option


def _initialmodel(options: object, output_dir: Path) -> None:
    """3D initial model from particles alone (VDAM from Gaussian blobs; writes run_itNNN_* and initial_model.mrc)."""
    from vitrify.cli._record import run_command_job

    path = run_command_job("initialmodel", options, output_dir)
    typer.echo(f"initial model: {path}")


def align_symmetry(
    input_map: Path = typer.Option(..., "--i", help="Input map (MRC)."),
    symmetry: str = typer.Option(..., "--sym", help="Point group (Cn, Dn, T, O, I...)."),
    output_map: Path = typer.Option(..., "--o", help="Output map in the group's standard orientation."),
    apply_sym: bool = typer.Option(False, "--apply-sym", help="Also symmetrise the aligned map."),
) -> None:
    """Find a map's symmetry axes and rotate it into RELION's standard orientation for the group."""
    import torch

    from vitrify.core.symmetry import parse_symmetry
    from vitrify.io.errors import InputError
    from vitrify.io.mrc import read_mrc, write_mrc
    from vitrify.jobs.options.initialmodel import SYMMETRY_GROUPS, is_symmetry_name
    from vitrify.ml.mapalign import find_symmetry_axes
    from vitrify.ml.vdam3d import symmetrise

    if not is_symmetry_name(symmetry):
        raise InputError(f"unknown point group {symmetry!r}", field="--sym", expected=SYMMETRY_GROUPS)
    parse_symmetry(symmetry)
    if not input_map.exists():
        raise InputError("file not found", path=input_map, field="--i", expected="an MRC map")
    data, pixel = read_mrc(input_map)
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise InputError(f"map of shape {data.shape}", path=input_map, field="--i", expected="a cubic 3D map")
    found = find_symmetry_axes(torch.as_tensor(data).float(), symmetry)
    out = symmetrise(found.aligned[None], symmetry)[0] if apply_sym else found.aligned
    write_mrc(output_map, out.numpy(), pixel)
    typer.echo(f"{symmetry}: correlation with the symmetrised map {found.correlation:.3f} after alignment "
               f"({found.correlation_before:.3f} as given); wrote {output_map}")


def register(app: typer.Typer) -> None:
    """Add the ``initialmodel`` and ``align-symmetry`` commands to ``app``."""
    from vitrify.jobs.options.initialmodel import Options

    add_job_command(app, "initialmodel", Options, _initialmodel,
                    own=[output_option(help="Output (job) directory; InitialModel/jobNNN: a pipeline job.")])
    app.command("align-symmetry")(align_symmetry)

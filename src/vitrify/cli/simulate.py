"""``vitrify simulate particles|micrographs|movies``: ground-truth data sets.

Each subcommand's options are the settings of its kind in
:class:`vitrify.jobs.options.simulate.Options` (the simulator's options, declared with
flags, defaults and help on the job's fields); the command runs the ``simulate`` job
(:mod:`vitrify.jobs.simulate`) in ``--out`` (run.log and exit markers included).
Heavy modules are imported inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vitrify.cli._job_options import add_job_command, output_option

#: subcommand → its ``--help`` summary
KIND_HELP: dict[str, str] = {
    "particles": "Simulate particle images with ground truth: particles.star/.mrcs, truth.star, truth_map.mrc.",
    "micrographs": "Simulate motion-corrected micrographs with particles at known coordinates "
                   "(micrographs.star, truth.star, coordinates/, EPU/mdoc metadata).",
    "movies": "Simulate movies (drift, dose, Poisson counts, gain) with movies.star, gain.mrc, "
              "EPU/mdoc metadata and the truth (coordinates, defocus, drift).",
}


def _simulate(options, output_dir: Path) -> None:
    from vitrify.jobs.base import run_job
    from vitrify.jobs.simulate import run

    result = run_job(run, options, output_dir)
    if options.kind == "particles":
        typer.echo(f"wrote {options.sim.n_particles} images to {result.particles_star} "
                   f"(truth: {result.truth_star})")
    else:
        typer.echo(f"wrote {len(result.files)} {options.kind} and {result.star} (truth: {result.truth_star})")


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command group to ``app``."""
    from vitrify.jobs.options.simulate import Options

    sim = typer.Typer(help="Simulate cryo-EM data with ground truth (particles, micrographs, movies).",
                      no_args_is_help=True)
    out = output_option("--out", "Output directory.")
    for kind, summary in KIND_HELP.items():
        add_job_command(sim, kind, Options, _simulate, own=[out], own_at=None,
                        variant=kind, fixed={"kind": kind}, help=summary)
    app.add_typer(sim, name="simulate")

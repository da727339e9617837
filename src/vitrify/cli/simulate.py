"""``vitrify simulate particles|micrographs|movies``: ground-truth data sets."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command group to ``app``."""
    sim = typer.Typer(help="Simulate cryo-EM data with ground truth (particles, micrographs, movies).",
                      no_args_is_help=True)

    @sim.command("particles")
    def particles() -> None:
        """Simulate particle images (work in progress)."""
        raise typer.Exit(1)

    app.add_typer(sim, name="simulate")

"""``vitrify demo``: simulate a small data set from a real structure and process it."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""

    @app.command("demo")
    def demo(out: str = typer.Option("demo", "--out", help="Output directory.")) -> None:
        """Simulate a small data set and run the most complete job available (work in progress)."""
        raise typer.Exit(1)

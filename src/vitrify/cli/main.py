"""The ``vitrify`` command: one typer app, commands registered from a table of modules.

Each module named in :data:`COMMAND_MODULES` defines ``register(app)`` and adds its
commands; heavy imports (torch) happen inside the command functions, so ``vitrify
--help`` and ``vitrify schemer`` start fast. User errors (:class:`InputError`) print
one line and exit with status 1, without a traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from vitrify import __version__
from vitrify._progress import set_quiet
from vitrify.io.errors import InputError

#: Modules that add commands to the app: ``module.register(app)``.
COMMAND_MODULES: tuple[str, ...] = (
    "vitrify.cli.preprocess",
    "vitrify.cli.simulate",
    "vitrify.cli.class2d",
    "vitrify.cli.demo",
    "vitrify.cli.mdcatch",
    "vitrify.cli.pipeline",
    "vitrify.cli.schemer",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vitrify {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """Create the typer app with every registered command."""
    app = typer.Typer(
        name="vitrify",
        help="Automated cryo-EM single-particle analysis, RELION-4 compatible.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _root(
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
        version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                     help="Print the version and exit."),
    ) -> None:
        set_quiet(quiet)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; returns only through ``sys.exit``."""
    app = build_app()
    try:
        app(args=argv, prog_name="vitrify")
    except InputError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(1)

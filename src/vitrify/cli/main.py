"""The ``vitrify`` command: one typer app, commands registered from a table of modules.

Each module named in :data:`COMMAND_MODULES` defines ``register(app)`` and adds its
commands; heavy imports (torch) happen inside the command functions, so ``vitrify
--help`` and ``vitrify schemer`` start fast. User errors (:class:`InputError`) print
one line and exit with status 1, without a traceback.
"""

from __future__ import annotations

import importlib
import io
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from vitrify import __version__
from vitrify._progress import set_quiet
from vitrify.core.threads import apply_thread_env
from vitrify.io.errors import InputError

#: Modules that add commands to the app: ``module.register(app)``.
COMMAND_MODULES: tuple[str, ...] = (
    "vitrify.cli.preprocess",
    "vitrify.cli.simulate",
    "vitrify.cli.class2d",
    "vitrify.cli.class_ranker",
    "vitrify.cli.initialmodel",
    "vitrify.cli.class3d",
    "vitrify.cli.refine3d",
    "vitrify.cli.postprocess",
    "vitrify.cli.demo",
    "vitrify.cli.mdcatch",
    "vitrify.cli.pipeline",
    "vitrify.cli.schemer",
    "vitrify.cli.auto",
    "vitrify.web.command",  # L4 beside cli: named here, imported by name (the web extra loads lazily)
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


#: Exit status when the reader of our output went away (``vitrify ... | head``): 128 + SIGPIPE,
#: what a shell reports for Unix tools stopped by a closed pipe.
CLOSED_PIPE_EXIT = 141


class _PipeGuard:
    """``sys.stdout`` proxy: once the reading end of the pipe is closed, further output is dropped.

    Python ignores SIGPIPE, so a write to a closed pipe raises :class:`BrokenPipeError` (click then
    exits 1, or the interpreter prints "Exception ignored" at exit). Here the stream is pointed at
    ``/dev/null`` instead and the command ends quietly (see :data:`CLOSED_PIPE_EXIT`).
    """

    def __init__(self, stream) -> None:
        self.stream = stream
        self.closed_pipe = False

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._silence()

    def _silence(self) -> None:
        self.closed_pipe = True
        try:  # what is still buffered goes to /dev/null at exit, not to the closed pipe
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; returns only through ``sys.exit``.

    User errors print one line and exit 1; a closed output pipe ends the command quietly with
    status :data:`CLOSED_PIPE_EXIT` (a failure status of the command itself is kept).
    The CPU thread policy reaches the environment first, before any command loads torch
    (:mod:`vitrify.core.threads`: libgomp reads it once, at load).
    """
    apply_thread_env()
    app = build_app()
    guard = _PipeGuard(sys.stdout)
    sys.stdout = guard
    try:
        _run_app(app, argv, guard)
    finally:
        sys.stdout = guard.stream


def _run_app(app: typer.Typer, argv: list[str] | None, guard: _PipeGuard) -> None:
    code: int | str | None = 0
    try:
        try:
            app(args=argv, prog_name="vitrify")
        finally:
            guard.flush()
    except InputError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        code = 1
    except SystemExit as exc:
        code = exc.code
    if guard.closed_pipe and not code:
        code = CLOSED_PIPE_EXIT
    sys.exit(code)

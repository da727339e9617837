"""``vitrify dashboard``: the live web page of a project (registered by :mod:`vitrify.cli.main`).

The web layer sits beside the CLI (both L4); the CLI's command table names this module, so the
command appears in ``vitrify --help`` while Starlette and uvicorn (the optional ``web`` extra) are
imported only when the command runs.
"""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from vitrify.io.errors import InputError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def register(app: typer.Typer) -> None:
    """Add ``vitrify dashboard``."""
    app.command("dashboard")(dashboard)


def _require_web_extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise InputError("the dashboard needs Starlette and uvicorn, which are not installed",
                         expected="pip install 'vitrify[web]'") from None


def dashboard(
    project: Path = typer.Option(..., "--project", help="Project directory (default_pipeline.star, Schemes/)."),
    port: int = typer.Option(0, "--port", help="TCP port (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but this machine's "
                                                       "loopback makes the page reachable from the network "
                                                       "(plain HTTP, token still required)."),
    poll: float = typer.Option(1.0, "--poll", help="Seconds between checks of the project for changes."),
) -> None:
    """Serve a live dashboard of a project: schemes, jobs, per-micrograph figures, classes, maps.

    Prints the URL to open, access token included; requests without the token are refused.
    """
    _require_web_extra()
    from vitrify.web.server import bind_socket, create_app, dashboard_url, new_token, serve

    if not 0 <= port <= 65535:
        raise InputError(f"{port} out of range", field="--port", expected="0..65535")
    if poll <= 0:
        raise InputError(f"{poll} must be positive", field="--poll", expected="seconds > 0")
    token = new_token()
    app = create_app(project, token, poll_s=poll)
    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    typer.echo(f"vitrify dashboard of {Path(project).resolve()}")
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host  # all addresses: name this machine
    typer.echo(f"open: {dashboard_url(shown, bound, token)}")
    if host not in LOOPBACK:
        typer.echo(f"warning: listening on {host}: reachable from other machines (plain HTTP; keep the token "
                   "secret)", err=True)
    typer.echo("stop with Ctrl-C")
    serve(app, sock)

"""``vitrify auto SESSION_DIR --project DIR``: process a session on the fly, nobody in the loop.

MDCatch reads the metadata and sets up the project and the prep and proc schemes; the schemes
then run in rounds as movies become ready, up to ``--until`` (default: the last stage vitrify
has the jobs for), until no movie has arrived for ``--idle`` minutes and nothing is left to do
(:mod:`vitrify.pipeline.auto`). Ctrl-C or ``vitrify auto --stop --project DIR`` stops it cleanly;
the same command again goes on where it stopped. ``--dashboard`` also serves the live page
(``vitrify dashboard`` as a child process; its address is printed).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from vitrify.io.errors import InputError

_SYMMETRY = re.compile(r"^(C[1-9]\d*|D[1-9]\d*|T|O|I[1-5]?)$")
_DASHBOARD_WAIT_S = 60.0
_STOP_WAIT_S = 600.0


def register(app: typer.Typer) -> None:
    """Add ``vitrify auto``."""
    app.command("auto")(auto)


def _prepare(values: dict, console: Console):
    """MDCatch for the first run (waits for the first complete metadata file up to --idle)."""
    from vitrify.cli.mdcatch import _settings, print_params, print_setup
    from vitrify.io.facility import load_facility_config
    from vitrify.pipeline.autosetup import SetupOptions
    from vitrify.pipeline.mdcatch import SessionRequest, prepare_session

    settings = _settings(values["settings"])
    if values["sym"] != "C1":
        settings = {"proc__inimodel3d__sym_name": values["sym"], "proc__refine3d__sym_name": values["sym"],
                    **settings}
    request = SessionRequest(
        session_dir=values["session_dir"], project_dir=values["project"], overrides={},
        options=SetupOptions(particle_diameter_angst=values["particle_diameter"]),
        facility=load_facility_config(values["config"]), watch=True, poll_s=values["poll"],
        timeout_s=max(60.0 * values["idle"], values["poll"]), settings=settings)

    def prepare() -> None:
        params, setup = prepare_session(
            request, warn=lambda message: console.print(f"[yellow]warning:[/] {escape(message)}"))
        print_params(params, console)
        print_setup(setup, console)
    return prepare


class _Dashboard:
    """``python -m vitrify dashboard --project DIR`` as a child process; prints its ``open:`` line."""

    def __init__(self, project: Path, console: Console) -> None:
        self.project, self.console, self.process = project, console, None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vitrify", "dashboard", "--project", str(self.project)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True)
        lines: list[str] = []
        reader = threading.Thread(target=self._read, args=(lines,), daemon=True)
        reader.start()
        reader.join(_DASHBOARD_WAIT_S)
        url = next((line for line in lines if line.startswith("open:")), None)
        if url is None:
            self.console.print(f"[yellow]warning:[/] the dashboard did not start: "
                               f"{escape(lines[-1] if lines else 'no output')}", soft_wrap=True)
        else:
            self.console.print(f"dashboard {escape(url)}", soft_wrap=True, highlight=False)

    def _read(self, lines: list[str]) -> None:
        for line in self.process.stdout:
            lines.append(line.strip())
            if line.startswith("open:"):
                break

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.console.print("dashboard stopped (vitrify dashboard --project "
                               f"{escape(str(self.project))} serves it again)", soft_wrap=True)


def _stop(project: Path, console: Console) -> None:
    from vitrify.pipeline.auto import PID_FILE, auto_dir, request_stop

    request_stop(project)
    console.print(f"asked vitrify auto on {escape(str(project))} to stop; waiting for its schemes")
    deadline = time.monotonic() + _STOP_WAIT_S
    while (auto_dir(project) / PID_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    console.print("stopped" if not (auto_dir(project) / PID_FILE).exists() else "still stopping")


def _sigterm(*_args) -> None:
    raise KeyboardInterrupt


def _report(result, console: Console) -> None:
    for name, reason in result.skipped.items():
        console.print(f"skipped {escape(name)}: {escape(reason)}", soft_wrap=True)
    rounds = ", ".join(f"{scheme} {len(statuses)} round(s)" for scheme, statuses in result.rounds.items())
    console.print(f"vitrify auto {result.state} (stage {result.stage}; {result.ready} movies; {rounds}): "
                  f"{escape(result.message)}", soft_wrap=True)


def auto(
    session_dir: Optional[Path] = typer.Argument(None, help="Session folder the microscope writes into."),
    project: Path = typer.Option(..., "--project", help="Project directory (created; reused by a rerun)."),
    particle_diameter: Optional[float] = typer.Option(None, "--particle-diameter",
                                                      help="Particle diameter (Å); box and mask sizes follow."),
    config: Optional[Path] = typer.Option(None, "--config", help="Facility TOML file (see vitrify mdcatch)."),
    sym: str = typer.Option("C1", "--sym", help="Point-group symmetry for 3D (C1, C2, D2, T, O, I...)."),
    until: Optional[str] = typer.Option(None, "--until", help="Last stage: ctf | 2d | 3d | refine "
                                        "(default: the last one vitrify has the jobs for)."),
    batch: int = typer.Option(1, "--batch", help="Run proc (picking, 2D, 3D) again once this many more "
                              "micrographs are ready (and once more when the session goes quiet)."),
    idle: float = typer.Option(10.0, "--idle", help="End after this many minutes without a new movie."),
    stable: float = typer.Option(2.0, "--stable", help="Seconds a movie must stay unchanged before it is read."),
    poll: float = typer.Option(1.0, "--poll", help="Seconds between scans of the session (and job checks)."),
    dashboard: bool = typer.Option(False, "--dashboard", help="Serve the live dashboard while it runs."),
    stop: bool = typer.Option(False, "--stop", help="Ask the vitrify auto running on --project to stop."),
    settings: list[str] = typer.Option([], "--set", help="relion_it key=value for the schemes "
                                       "(as vitrify mdcatch --set; first run only)."),
) -> None:
    """Process a session on the fly: movies -> motion, CTF -> picking -> 2D (-> 3D as available)."""
    from vitrify.pipeline.auto import AutoSettings, run_auto

    console = Console()
    if stop:
        _stop(project, console)
        return
    if session_dir is None:
        raise InputError("give SESSION_DIR (or --stop)", field="vitrify auto", expected="vitrify auto SESSION_DIR "
                         "--project DIR")
    if not _SYMMETRY.match(sym):
        raise InputError(f"unknown symmetry {sym!r}", field="--sym", expected="C<n>, D<n>, T, O or I<n>")
    if idle < 0:
        raise InputError(f"{idle:g} minutes", field="--idle", expected="minutes >= 0")
    options = AutoSettings(until=until, batch=batch, idle_s=60.0 * idle, stable_s=stable, poll_s=poll,
                           scheme_poll_s=poll)
    server = _Dashboard(project, console) if dashboard else None
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _sigterm) if in_main else None   # `kill PID` stops as Ctrl-C does
    try:
        result = run_auto(session_dir, project, _prepare(dict(locals()), console), options,
                          say=lambda text: console.print(escape(text), soft_wrap=True, highlight=False),
                          started=server.start if server else lambda: None)
    except KeyboardInterrupt:
        console.print("stopped (interrupted); run the same command again to continue")
        raise typer.Exit(130) from None
    finally:
        if server is not None:
            server.stop()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    _report(result, console)
    if result.state == "failed":
        raise typer.Exit(1)

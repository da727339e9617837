"""``vitrify schemer``: run and control RELION-4 Schemes (``Schemes/NAME/scheme.star``).

Run from the project directory. Actions in one call are applied in this order:
``--init``, ``--reset``, ``--set_var``, ``--set_job_option``, ``--set_current_node``,
``--abort``, ``--run``, ``--status``. Exit code of ``--run``: 0 finished, 1 failed, 2 aborted.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

EXIT_CODES = {"Succeeded": 0, "Failed": 1, "Aborted": 2}


def _edits(project: Path, scheme: str, set_var: list[str], set_original: bool,
           set_job_option: list[str], set_current_node: str | None) -> None:
    from vitrify.pipeline.schemes import control

    if set_var:
        values = dict(control.parse_assignment(text) for text in set_var)
        control.set_variables(project, scheme, values, also_reset=set_original)
        typer.echo(f"set {', '.join(f'{k}={v}' for k, v in values.items())}")
    for text in set_job_option:
        job_option, value = control.parse_assignment(text)
        job, option = control.parse_assignment(job_option, ":")
        path = control.set_job_option(project, scheme, job, option, value)
        typer.echo(f"set {option}={value} in {path}")
    if set_current_node is not None:
        control.set_current_node(project, scheme, set_current_node)
        typer.echo(f"current node: {set_current_node}")


def _run(project: Path, scheme: str, poll: float, stop_on_failure: bool) -> None:
    from vitrify.pipeline.schemes.runner import RunSettings, run_scheme

    result = run_scheme(project, scheme, RunSettings(poll_s=poll, stop_on_failure=stop_on_failure))
    typer.echo(f"scheme {scheme}: {result.status} at node {result.current_node}: {result.message}")
    if result.status != "Succeeded":
        raise typer.Exit(EXIT_CODES.get(result.status, 1))


def register(app: typer.Typer) -> None:
    """Add ``vitrify schemer``."""

    @app.command("schemer")
    def schemer(
        scheme: str = typer.Option(..., "--scheme", help="Scheme name: Schemes/NAME/scheme.star."),
        run: bool = typer.Option(False, "--run", help="Run the scheme from its current node."),
        abort: bool = typer.Option(False, "--abort", help="Ask the running scheme (and its job) to stop."),
        reset: bool = typer.Option(False, "--reset", help="Variables to reset values, jobs unstarted, "
                                                          "current node to the start."),
        status: bool = typer.Option(False, "--status", help="Show the scheme's state."),
        as_json: bool = typer.Option(False, "--json", help="With --status: print JSON."),
        set_var: list[str] = typer.Option([], "--set_var", "--set-var", help="NAME=VALUE (repeatable)."),
        set_original: bool = typer.Option(False, "--original_value", "--original-value",
                                          help="With --set_var: also set the reset values."),
        set_job_option: list[str] = typer.Option([], "--set_job_option", "--set-job-option",
                                                 help="JOB:OPTION=VALUE in the job's template (repeatable)."),
        set_current_node: str = typer.Option(None, "--set_current_node", "--set-current-node",
                                             help="Node to (re)start from."),
        init: str = typer.Option(None, "--init", help="Copy vitrify's template scheme (prep | proc) "
                                                       "into Schemes/NAME/."),
        project: Path = typer.Option(Path("."), "--project", help="Project directory."),
        poll: float = typer.Option(1.0, "--poll", help="Seconds between job status checks."),
        stop_on_failure: bool = typer.Option(False, "--stop_on_failure", "--stop-on-failure",
                                             help="Stop at the first failed job (RELION's way)."),
        pipeline_control: str = typer.Option(None, "--pipeline_control",
                                             help="Accepted for relion_schemer compatibility; unused."),
    ) -> None:
        """Run or control a RELION-4 scheme (relion_schemer)."""
        from vitrify.pipeline.schemes import control

        if init:
            from vitrify.pipeline.schemes.templates_data import install_scheme

            typer.echo(f"installed {install_scheme(project, init, scheme)}")
        if reset:
            control.reset_scheme(project, scheme)
            typer.echo(f"scheme {scheme} reset")
        _edits(project, scheme, set_var, set_original, set_job_option, set_current_node)
        if abort:
            for path in control.abort_scheme(project, scheme):
                typer.echo(f"touched {path}")
        if run:
            _run(project, scheme, poll, stop_on_failure)
        if status:
            state = control.scheme_status(project, scheme)
            typer.echo(json.dumps(state, indent=1) if as_json else control.format_status(state))

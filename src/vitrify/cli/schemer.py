"""``vitrify schemer``: run and control RELION-4 Schemes (``Schemes/NAME/scheme.star``).

Run from the project directory. Actions in one call are applied in this order:
``--add``, ``--init``, ``--reset``, ``--set_var``, ``--set_job_option``, ``--set_job_mode``,
``--set_has_started``, ``--set_current_node``, ``--abort``, ``--run``, ``--status``.
Exit code of ``--run``: 0 finished, 1 failed, 2 aborted. RELION's prep and proc schemes watch for
new movies until their ``maxtime_hr`` (48 h) has passed; ``--run --once`` stops after one pass
over the movies there now.

Both forms work: ``--set_var NAME=VALUE`` (repeatable) and relion_schemer's
``--set_var NAME --value VALUE [--original_value RESET]``; likewise ``--set_job_mode JOB
--value new`` and ``--set_has_started JOB --value False``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import typer

from vitrify.io.errors import InputError
from vitrify.jobs.status import EXIT_CODES, JobStatus

_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class Edits:
    """The edit options of one ``vitrify schemer`` call."""

    set_var: tuple[str, ...] = ()
    value: str | None = None
    original_value: str | None = None
    also_reset: bool = False
    set_job_option: tuple[str, ...] = ()
    set_job_mode: str | None = None
    set_has_started: str | None = None
    set_current_node: str | None = None


def _variables(edits: Edits) -> tuple[dict[str, str], dict[str, str]]:
    """``({name: value}, {name: reset value})`` from either form of ``--set_var``."""
    from vitrify.pipeline.schemes.control import parse_assignment

    if edits.value is not None and len(edits.set_var) == 1 and "=" not in edits.set_var[0]:
        name = edits.set_var[0]
        resets = {} if edits.original_value is None else {name: edits.original_value}
        return {name: edits.value}, resets
    values = dict(parse_assignment(text) for text in edits.set_var)
    resets = {} if edits.original_value is None else {k: edits.original_value for k in values}
    return values, resets


def _job_fields(project: Path, scheme: str, edits: Edits) -> None:
    from vitrify.pipeline.schemes import control

    for job, field, convert in ((edits.set_job_mode, "mode", str),
                                (edits.set_has_started, "has_started", _as_bool)):
        if job is None:
            continue
        if edits.value is None:
            raise InputError(f"--set_{field if field != 'mode' else 'job_mode'} needs --value",
                             field="--value", expected="new | continue, or True | False")
        control.set_job_fields(project, scheme, job, **{field: convert(edits.value)})
        typer.echo(f"{job}: {field} = {edits.value}")


def _as_bool(text: str) -> bool:
    if text.strip().lower() not in _BOOL_WORDS:
        raise InputError(f"not a boolean: {text!r}", field="--value", expected="True | False | 1 | 0")
    return _BOOL_WORDS[text.strip().lower()]


def _apply_edits(project: Path, scheme: str, edits: Edits) -> None:
    from vitrify.pipeline.schemes import control

    if edits.set_var:
        values, resets = _variables(edits)
        control.set_variables(project, scheme, values, also_reset=edits.also_reset, reset_values=resets)
        typer.echo(f"set {', '.join(f'{k}={v}' for k, v in values.items())}")
    for text in edits.set_job_option:
        job_option, value = control.parse_assignment(text)
        job, option = control.parse_assignment(job_option, ":")
        path = control.set_job_option(project, scheme, job, option, value)
        typer.echo(f"set {option}={value} in {path}")
    _job_fields(project, scheme, edits)
    if edits.set_current_node is not None:
        control.set_current_node(project, scheme, edits.set_current_node)
        typer.echo(f"current node: {edits.set_current_node}")


def _run(project: Path, scheme: str, settings: dict) -> None:
    from vitrify.pipeline.schemes.runner import RunSettings, run_scheme

    result = run_scheme(project, scheme, RunSettings(**settings))
    typer.echo(f"scheme {scheme}: {result.status} at node {result.current_node}: {result.message}")
    if result.status != JobStatus.SUCCEEDED:
        raise typer.Exit(EXIT_CODES.get(result.status, 1))


def _actions(project: Path, scheme: str, init: str | None, reset: bool, edits: Edits) -> None:
    from vitrify.pipeline.schemes import control

    if init:
        from vitrify.pipeline.schemes.templates_data import install_scheme

        typer.echo(f"installed {install_scheme(project, init, scheme)}")
    if reset:
        control.reset_scheme(project, scheme)
        typer.echo(f"scheme {scheme} reset")
    _apply_edits(project, scheme, edits)


def register(app: typer.Typer) -> None:
    """Add ``vitrify schemer``."""
    app.command("schemer")(schemer)


def _add(project: Path, scheme: str, addition_fields: tuple) -> None:
    from vitrify.pipeline.schemes.build import Addition, add_to_scheme

    typer.echo(f"added {add_to_scheme(project, scheme, Addition(*addition_fields))}")


def schemer(
    scheme: str = typer.Option(..., "--scheme", help="Scheme name: Schemes/NAME/scheme.star."),
    run: bool = typer.Option(False, "--run", help="Run the scheme from its current node. prep/proc "
                                                 "keep watching for new movies until maxtime_hr "
                                                 "(48 h) unless --once."),
    once: bool = typer.Option(False, "--once", help="With --run: stop after one pass, when the "
                                                    "scheme is back at its wait operator."),
    abort: bool = typer.Option(False, "--abort", help="Ask the running scheme (and its job) to stop."),
    reset: bool = typer.Option(False, "--reset", help="Variables to reset values, jobs unstarted, "
                                                      "current node to the start."),
    status: bool = typer.Option(False, "--status", help="Show the scheme's state."),
    as_json: bool = typer.Option(False, "--json", help="With --status: print JSON."),
    set_var: list[str] = typer.Option([], "--set_var", "--set-var",
                                      help="NAME=VALUE (repeatable), or NAME with --value."),
    value: str = typer.Option(None, "--value", help="Value for --set_var NAME, --set_job_mode, "
                                                     "--set_has_started (relion_schemer form)."),
    original_value: str = typer.Option(None, "--original_value", "--original-value",
                                       help="With --set_var: the reset value."),
    also_reset: bool = typer.Option(False, "--also_reset", "--also-reset",
                                    help="With --set_var: reset values = the new values."),
    set_job_option: list[str] = typer.Option([], "--set_job_option", "--set-job-option",
                                             help="JOB:OPTION=VALUE in the job's template (repeatable)."),
    set_job_mode: str = typer.Option(None, "--set_job_mode", help="JOB (with --value new|continue)."),
    set_has_started: str = typer.Option(None, "--set_has_started",
                                        help="JOB (with --value True|False)."),
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
    add: str = typer.Option(None, "--add", help="variable | operator | job | edge | fork "
                                                 "(with --name --value --type --i --i2 --o --o2 --bool --mode)."),
    name: str = typer.Option("", "--name", help="With --add: variable/operator (job) name."),
    type_: str = typer.Option("", "--type", help="With --add operator: e.g. float=plus."),
    i: str = typer.Option("undefined", "--i", help="With --add: input1 / edge start / job dir."),
    i2: str = typer.Option("undefined", "--i2", help="With --add operator: input2."),
    o: str = typer.Option("undefined", "--o", help="With --add: output / edge end / fork if true."),
    o2: str = typer.Option("undefined", "--o2", help="With --add fork: node if false."),
    bool_: str = typer.Option("undefined", "--bool", help="With --add fork: the bool variable."),
    mode: str = typer.Option("continue", "--mode", help="With --add job: new | continue."),
) -> None:
    """Run or control a RELION-4 scheme (relion_schemer)."""
    from vitrify.pipeline.schemes import control

    if add:
        _add(project, scheme, (add, name, value, original_value, type_, i, i2, o, o2, bool_, mode))
    edits = Edits(tuple(set_var), None if add else value, None if add else original_value,
                  also_reset, tuple(set_job_option), set_job_mode, set_has_started, set_current_node)
    _actions(project, scheme, init, reset, edits)
    if abort:
        for path in control.abort_scheme(project, scheme):
            typer.echo(f"touched {path}")
    if run:
        _run(project, scheme, {"poll_s": poll, "stop_on_failure": stop_on_failure, "once": once})
    if status:
        state = control.scheme_status(project, scheme)
        typer.echo(json.dumps(state, indent=1) if as_json else control.format_status(state))

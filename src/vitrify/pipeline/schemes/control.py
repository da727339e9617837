"""Everything ``vitrify schemer`` does besides ``--run``: edit, reset, abort, report status.

Edits follow ``relion_schemer``: take the scheme lock, write ``scheme.star.bck``, change,
write ``scheme.star`` (atomically). A running schemer holds the lock, so edits wait for it
(and then fail naming the lock). ``abort`` and ``status`` take no lock.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.jobs.status import JobStatus, exit_marker_status
from vitrify.pipeline.schemes import _state
from vitrify.pipeline.schemes.lock import SchemeLock, lock_dir, lock_holder_alive, lock_owner
from vitrify.pipeline.schemes.model import MODES, UNDEFINED, Scheme
from vitrify.pipeline.schemes.runner import scheme_dir
from vitrify.pipeline.schemes.star import read_scheme, write_scheme
from vitrify.pipeline.schemes.templates import set_template_option, template_path



def _scheme_file(project_dir: str | Path, name: str) -> Path:
    path = scheme_dir(project_dir, name) / "scheme.star"
    if not path.exists():
        raise InputError(f"no scheme {name}", path=path, expected=f"Schemes/{name}/scheme.star")
    return path


def edit_scheme(project_dir: str | Path, name: str, change: Callable[[Scheme], None],
                lock_timeout_s: float = 5.0) -> Scheme:
    """Apply ``change`` to the scheme under its lock (backup ``scheme.star.bck`` first)."""
    path = _scheme_file(project_dir, name)
    with SchemeLock(project_dir, name, lock_timeout_s):
        scheme = read_scheme(path)
        shutil.copyfile(path, path.with_name("scheme.star.bck"))
        change(scheme)
        write_scheme(path, scheme)
    return scheme


def reset_scheme(project_dir: str | Path, name: str) -> Scheme:
    """RELION ``--reset``: values ← reset values, jobs not started, back to the start node."""
    def change(scheme: Scheme) -> None:
        scheme.reset()
        (scheme_dir(project_dir, name) / _state.STATE_FILE).unlink(missing_ok=True)
    return edit_scheme(project_dir, name, change)


def parse_assignment(text: str, separator: str = "=") -> tuple[str, str]:
    """``"name=value"`` → ``("name", "value")``; InputError otherwise."""
    key, sep, value = text.partition(separator)
    if not sep or not key.strip():
        raise InputError(f"cannot read {text!r}", field="assignment", expected=f"name{separator}value")
    return key.strip(), value


def set_variables(project_dir: str | Path, name: str, values: dict[str, str],
                  also_reset: bool = False, reset_values: dict[str, str] | None = None) -> Scheme:
    """Set variables, converting to their type; reset values too with ``also_reset`` (same
    value) or from ``reset_values`` (RELION's ``--original_value``)."""
    reset_values = reset_values or {}
    path = scheme_dir(project_dir, name) / "scheme.star"

    def change(scheme: Scheme) -> None:
        for variable, value in values.items():
            if scheme.variable_kind(variable) is None:
                raise InputError(f"no variable {variable!r} in scheme {name}", path=path,
                                 expected=", ".join(sorted([*scheme.floats, *scheme.bools, *scheme.strings])))
            try:
                scheme.set_variable(variable, value,
                                    reset_values.get(variable, value if also_reset else None))
            except ValueError as err:
                raise InputError(f"variable {variable}: {err}", path=path,
                                 expected=f"a {scheme.variable_kind(variable)} value") from None
    return edit_scheme(project_dir, name, change)


def set_current_node(project_dir: str | Path, name: str, node: str) -> Scheme:
    """Restart point: the node the next ``--run`` starts at."""
    def change(scheme: Scheme) -> None:
        if node != UNDEFINED and not scheme.is_node(node):
            raise InputError(f"no node {node!r} in scheme {name}", field="--set_current_node",
                             expected=", ".join(sorted([*scheme.operators, *scheme.jobs])))
        scheme.current_node = node
    return edit_scheme(project_dir, name, change)


def set_job_option(project_dir: str | Path, name: str, job: str, option: str, value: str) -> Path:
    """Change an option of a job template; a continue-mode job then re-runs as a new job."""
    path = _scheme_file(project_dir, name)
    with SchemeLock(project_dir, name):
        scheme = read_scheme(path)
        if job not in scheme.jobs:
            raise InputError(f"no job {job!r} in scheme {name}", path=path,
                             expected=", ".join(sorted(scheme.jobs)) or "a job of the scheme")
        template = template_path(project_dir, scheme, job)
        set_template_option(template, option, value)
    return template


def set_job_fields(project_dir: str | Path, name: str, job: str, *, mode: str | None = None,
                   has_started: bool | None = None) -> Scheme:
    """RELION ``--set_job_mode`` / ``--set_has_started``."""
    def change(scheme: Scheme) -> None:
        if job not in scheme.jobs:
            raise InputError(f"no job {job!r} in scheme {name}", expected=", ".join(sorted(scheme.jobs)))
        if mode is not None:
            if mode not in MODES:
                raise InputError(f"mode {mode!r}", field="--set_job_mode", expected="new or continue")
            scheme.jobs[job].mode = mode
        if has_started is not None:
            scheme.jobs[job].has_started = has_started
    return edit_scheme(project_dir, name, change)


def abort_scheme(project_dir: str | Path, name: str) -> list[Path]:
    """Touch the scheme's abort marker and the current job's; return the files touched."""
    path = _scheme_file(project_dir, name)
    scheme = read_scheme(path, validate=False)
    touched = [path.parent / _state.ABORT_NOW]
    job = scheme.jobs.get(scheme.current_node)
    if job is not None and job.has_started and job.name != job.original_name:
        job_dir = Path(project_dir) / job.name
        if job_dir.is_dir():
            touched.append(job_dir / _state.ABORT_NOW)
    for marker in touched:
        marker.touch()
    return touched


def _job_status(project_dir: Path, job_name: str, started: bool, original: str) -> str:
    if not started or job_name == original:
        return "not started"
    job_dir = project_dir / job_name
    status = exit_marker_status(job_dir)
    if status is not None:
        return status
    if not job_dir.is_dir():
        return "missing"
    running = (job_dir / "run.pid").exists() or (job_dir / "run.out").exists()
    return JobStatus.RUNNING if running else JobStatus.SCHEDULED


#: final status of a scheme run → its state word in ``--status``
_RUN_STATES = {JobStatus.SUCCEEDED: "finished", JobStatus.FAILED: "failed", JobStatus.ABORTED: "aborted"}


def _run_state(project_dir: Path, name: str) -> tuple[str, int | None]:
    directory = lock_dir(project_dir, name)
    owner = lock_owner(directory)
    if directory.exists() and lock_holder_alive(directory) is not False:
        return "running", owner[0] if owner else None
    final = _state.scheme_exit_status(scheme_dir(project_dir, name))
    return _RUN_STATES.get(final, "idle"), None


def scheme_status(project_dir: str | Path, name: str) -> dict:
    """The scheme's state as plain data (for ``--status --json`` and the dashboard)."""
    project_dir = Path(project_dir)
    scheme = read_scheme(_scheme_file(project_dir, name), validate=False)
    state, pid = _run_state(project_dir, name)
    jobs = [{"node": j.original_name, "job": j.name, "mode": j.mode, "has_started": j.has_started,
             "status": _job_status(project_dir, j.name, j.has_started, j.original_name)}
            for j in (scheme.jobs[k] for k in sorted(scheme.jobs))]
    return {"scheme": name, "state": state, "pid": pid, "current_node": scheme.current_node,
            "current_node_kind": "job" if scheme.current_node in scheme.jobs else
            "operator" if scheme.current_node in scheme.operators else UNDEFINED,
            "variables": {**scheme.floats, **scheme.bools, **scheme.strings}, "jobs": jobs,
            "log": str(scheme_dir(project_dir, name) / _state.LOG_FILE)}


def format_status(status: dict) -> str:
    """``scheme_status`` as a few human-readable lines."""
    lines = [f"scheme {status['scheme']}: {status['state']}"
             + (f" (pid {status['pid']})" if status["pid"] else "")
             + f", current node {status['current_node']}"]
    for job in status["jobs"]:
        lines.append(f"  {job['node']:<16} {job['mode']:<9} {job['job']:<22} {job['status']}")
    for variable, value in status["variables"].items():
        lines.append(f"  {variable} = {value}")
    return "\n".join(lines)

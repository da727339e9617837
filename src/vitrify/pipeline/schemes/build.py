"""Build a scheme from the command line: relion_schemer's ``--add variable|operator|job|edge|fork``.

Each addition takes the scheme lock, creates ``Schemes/<name>/scheme.star`` if it does not
exist yet, checks the result (the same validation as before a run, so an operator with a
wrong argument or an edge to a missing node is refused) and writes it atomically.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.pipeline.schemes.lock import SchemeLock
from vitrify.pipeline.schemes.model import MODES, UNDEFINED, Edge, Operator, Scheme, SchemeJob
from vitrify.pipeline.schemes.runner import scheme_dir
from vitrify.pipeline.schemes.star import read_scheme, write_scheme
from vitrify.pipeline.schemes.validate import validate_scheme


@dataclass(frozen=True)
class Addition:
    """What to add (relion_schemer's option names in brackets).

    ``kind``: variable | operator | job | edge | fork. ``name`` [--name], ``value``
    [--value], ``original_value`` [--original_value], ``type`` [--type], ``input1`` [--i],
    ``input2`` [--i2], ``output`` [--o], ``output2`` [--o2], ``bool_variable`` [--bool],
    ``mode`` [--mode].
    """

    kind: str
    name: str = ""
    value: str | None = None
    original_value: str | None = None
    type: str = ""
    input1: str = UNDEFINED
    input2: str = UNDEFINED
    output: str = UNDEFINED
    output2: str = UNDEFINED
    bool_variable: str = UNDEFINED
    mode: str = "continue"

    def __post_init__(self) -> None:
        if self.kind not in _ADDERS:
            raise InputError(f"cannot add {self.kind!r}", field="--add", expected=" | ".join(_ADDERS))


def _need(value: str | None, option: str, what: str) -> str:
    if value is None or value in ("", UNDEFINED):
        raise InputError(f"adding {what} needs {option}", field=option)
    return value


def _add_variable(scheme: Scheme, add: Addition, directory: Path) -> str:
    name = _need(add.name, "--name", "a variable")
    kind = scheme.add_variable(name, _need(add.value, "--value", "a variable"), add.original_value)
    return f"{kind} variable {name}"


def _add_operator(scheme: Scheme, add: Addition, directory: Path) -> str:
    name = _need(add.name, "--name", "an operator")
    if name in scheme.jobs:
        raise InputError(f"{name} is already a job", field="--name", expected="a new node name")
    scheme.operators[name] = Operator(name, _need(add.type, "--type", "an operator"),
                                      add.output, add.input1, add.input2)
    return f"operator {name} ({add.type})"


def _add_job(scheme: Scheme, add: Addition, directory: Path) -> str:
    source = Path(_need(add.input1, "--i", "a job (directory with job.star)"))
    template = source / "job.star" if source.is_dir() else source
    if not template.exists():
        raise InputError("no job.star to add", path=template, expected="a job directory with job.star")
    if add.mode not in MODES:
        raise InputError(f"mode {add.mode!r}", field="--mode", expected="new or continue")
    name = add.name or (source if source.is_dir() else source.parent).resolve().name
    if name in scheme.operators:
        raise InputError(f"{name} is already an operator", field="--i", expected="a new node name")
    (directory / name).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, directory / name / "job.star")
    scheme.jobs[name] = SchemeJob(name, name, add.mode, False)
    return f"job {name} ({add.mode})"


def _add_edge(scheme: Scheme, add: Addition, directory: Path) -> str:
    start = _need(add.input1, "--i", "an edge")
    scheme.edges.append(Edge(start, _need(add.output, "--o", "an edge")))
    return f"edge {start} -> {add.output}"


def _add_fork(scheme: Scheme, add: Addition, directory: Path) -> str:
    start = _need(add.input1, "--i", "a fork")
    scheme.edges.append(Edge(start, _need(add.output2, "--o2", "a fork (node if false)"), True,
                             _need(add.output, "--o", "a fork (node if true)"),
                             _need(add.bool_variable, "--bool", "a fork")))
    return f"fork {start} -> {add.output} if {add.bool_variable} else {add.output2}"


_ADDERS: dict[str, Callable[[Scheme, Addition, Path], str]] = {
    "variable": _add_variable, "operator": _add_operator, "job": _add_job,
    "edge": _add_edge, "fork": _add_fork,
}


def add_to_scheme(project_dir: str | Path, name: str, addition: Addition) -> str:
    """Add one item to scheme ``name`` (created if absent); returns what was added, in words."""
    directory = scheme_dir(project_dir, name)
    path = directory / "scheme.star"
    with SchemeLock(project_dir, name):
        if path.exists():
            scheme = read_scheme(path)
            shutil.copyfile(path, path.with_name("scheme.star.bck"))
        else:
            scheme = Scheme(name=f"Schemes/{name}/")
        text = _ADDERS[addition.kind](scheme, addition, directory)
        if scheme.current_node == UNDEFINED:
            scheme.current_node = scheme.start_node()
        validate_scheme(scheme, path)
        write_scheme(path, scheme)
    return text

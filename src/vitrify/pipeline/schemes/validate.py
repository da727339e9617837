"""Check a scheme before it runs: every error names the scheme file and the row.

Edges must join existing nodes, forks need a bool variable, operators must have a known
type and arguments of the kinds :data:`~vitrify.pipeline.schemes.operators.SIGNATURES`
lists, job nodes need their ``job.star`` template, the current node must exist.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.pipeline.schemes.model import UNDEFINED, Edge, Operator, Scheme, parse_literal
from vitrify.pipeline.schemes.operators import SIGNATURES


def _where(scheme: Scheme, table: str, key: str, what: str) -> str:
    line = scheme.rows.get((table, key))
    return f"data_{table} line {line} ({what})" if line else f"data_{table} ({what})"


def _is_number(scheme: Scheme, name: str) -> bool:
    return name in scheme.floats or parse_literal(name) is not None


#: argument kind -> test on (scheme, variable name)
_KIND_TESTS: dict[str, Callable[[Scheme, str], bool]] = {
    "float": lambda s, n: n in s.floats,
    "bool": lambda s, n: n in s.bools,
    "string": lambda s, n: n in s.strings,
    "number": _is_number,
}
_KIND_WORDS = {"float": "a float variable", "bool": "a bool variable",
               "string": "a string variable", "number": "a float variable or a number"}


def _check_argument(scheme: Scheme, op: Operator, slot: str, value: str, kind: str | None,
                    path: Path) -> None:
    if kind is None:
        return
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if optional and value == UNDEFINED:
        return
    if not _KIND_TESTS[kind](scheme, value):
        raise InputError(f"operator {op.name} ({op.type}): {slot} {value!r} is not {_KIND_WORDS[kind]}",
                         path=path, field=_where(scheme, "scheme_operators", op.name, op.name),
                         expected=_KIND_WORDS[kind] + (" or undefined" if optional else ""))


def _check_operator(scheme: Scheme, op: Operator, path: Path) -> None:
    signature = SIGNATURES.get(op.type)
    if signature is None:
        raise InputError(f"operator {op.name} has unknown type {op.type!r}", path=path,
                         field=_where(scheme, "scheme_operators", op.name, op.name),
                         expected="one of " + ", ".join(sorted(SIGNATURES)))
    for slot, value, kind in zip(("output", "input1", "input2"),
                                 (op.output, op.input1, op.input2), signature):
        _check_argument(scheme, op, slot, value, kind, path)


def _check_edge(scheme: Scheme, index: int, edge: Edge, path: Path) -> None:
    where = _where(scheme, "scheme_edges", str(index), f"edge {edge.input} -> {edge.output}")
    targets = [("input node", edge.input, False), ("output node", edge.output, True)]
    if edge.is_fork:
        targets.append(("output node if true", edge.output_if_true, True))
        if edge.bool_variable not in scheme.bools:
            raise InputError(f"fork from {edge.input} uses {edge.bool_variable!r}, which is no bool "
                             "variable", path=path, field=where, expected="a bool variable")
    for what, node, may_end in targets:
        if not scheme.is_node(node) and not (may_end and node == UNDEFINED):
            raise InputError(f"{what} {node!r} is neither an operator nor a job", path=path,
                             field=where, expected="a node of this scheme")


def _check_job(scheme: Scheme, name: str, path: Path) -> None:
    template = path.parent / name / "job.star"
    if not template.exists():
        raise InputError(f"job {name} has no template {template}", path=path,
                         field=_where(scheme, "scheme_jobs", name, name),
                         expected=f"{name}/job.star next to scheme.star")


def _check_names(scheme: Scheme, path: Path) -> None:
    for name in scheme.operators:
        if name in scheme.jobs:
            raise InputError(f"{name} is both an operator and a job", path=path,
                             field=_where(scheme, "scheme_jobs", name, name),
                             expected="unique node names")
    current = scheme.current_node
    if current != UNDEFINED and not scheme.is_node(current):
        raise InputError(f"current node {current!r} is neither an operator nor a job", path=path,
                         field="data_scheme_general _rlnSchemeCurrentNodeName",
                         expected="a node of this scheme or undefined")


def validate_scheme(scheme: Scheme, path: str | Path, *, check_templates: bool = True) -> None:
    """Raise :class:`InputError` naming ``path`` and the row at the first problem found."""
    path = Path(path)
    _check_names(scheme, path)
    for op in scheme.operators.values():
        _check_operator(scheme, op, path)
    for index, edge in enumerate(scheme.edges):
        _check_edge(scheme, index, edge, path)
    if check_templates:
        for name in scheme.jobs:
            _check_job(scheme, name, path)

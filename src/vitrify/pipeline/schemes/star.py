"""``scheme.star`` both ways, exactly as RELION 4 lays it out, on top of ``vitrify.io.star``.

Seven tables (general, floats, bools, strings, operators, jobs, edges); empty ones are not
written; variables, operators and jobs are written sorted by name, edges in their order.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vitrify.io.errors import InputError
from vitrify.pipeline._star import read_blocks, row_line, write_blocks
from vitrify.pipeline.schemes.model import (
    MODES, UNDEFINED, Edge, Operator, Scheme, SchemeJob, parse_float,
)
from vitrify.pipeline.schemes.validate import validate_scheme

_VARIABLE_TABLES = {  # kind -> (block, name label, value label, reset label)
    "float": ("scheme_floats", "rlnSchemeFloatVariableName", "rlnSchemeFloatVariableValue",
              "rlnSchemeFloatVariableResetValue"),
    "bool": ("scheme_bools", "rlnSchemeBooleanVariableName", "rlnSchemeBooleanVariableValue",
             "rlnSchemeBooleanVariableResetValue"),
    "string": ("scheme_strings", "rlnSchemeStringVariableName", "rlnSchemeStringVariableValue",
               "rlnSchemeStringVariableResetValue"),
}
_OPERATOR_LABELS = ("rlnSchemeOperatorName", "rlnSchemeOperatorType", "rlnSchemeOperatorOutput",
                    "rlnSchemeOperatorInput1", "rlnSchemeOperatorInput2")
_JOB_LABELS = ("rlnSchemeJobNameOriginal", "rlnSchemeJobName", "rlnSchemeJobMode",
               "rlnSchemeJobHasStarted")
_EDGE_LABELS = ("rlnSchemeEdgeInputNodeName", "rlnSchemeEdgeOutputNodeName", "rlnSchemeEdgeIsFork",
                "rlnSchemeEdgeOutputNodeNameIfTrue", "rlnSchemeEdgeBooleanVariable")


def _rows(blocks: dict, block: str, labels: tuple[str, ...], path: Path):
    """Yield ``(line number, values)`` of a loop block, checking its labels."""
    table = blocks.get(block)
    if table is None or (isinstance(table, dict) and not table):
        return
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"data_{block} must be a loop_ table", path=path)
    missing = [label for label in labels if label not in table.columns]
    if missing:
        raise InputError(f"data_{block} lacks _{missing[0]}", path=path,
                         expected=" ".join("_" + lab for lab in labels))
    for i, row in enumerate(table[list(labels)].itertuples(index=False)):
        yield row_line(table, i), [str(v) for v in row]


def _number(text: str, path: Path, block: str, line: int, integer: bool = False) -> float:
    value = parse_float(text)
    if value is None or (integer and value not in (0.0, 1.0)):
        raise InputError(f"value {text!r} in data_{block}", path=path, field=f"line {line}",
                         expected="0 or 1" if integer else "a number")
    return value


def read_scheme(path: str | Path, *, validate: bool = True) -> Scheme:
    """Read ``scheme.star`` into a :class:`Scheme` (validated unless ``validate=False``)."""
    path = Path(path)
    if not path.exists():
        raise InputError("scheme file not found", path=path)
    blocks = read_blocks(path)
    general = blocks.get("scheme_general")
    if not isinstance(general, dict) or "rlnSchemeName" not in general:
        raise InputError("no data_scheme_general with _rlnSchemeName", path=path)
    name = str(general["rlnSchemeName"])
    scheme = Scheme(name=name if name.endswith("/") else name + "/",
                    current_node=str(general.get("rlnSchemeCurrentNodeName", UNDEFINED)))
    _read_variables(scheme, blocks, path)
    _read_nodes(scheme, blocks, path)
    if scheme.current_node == UNDEFINED:
        scheme.current_node = scheme.start_node()
    if validate:
        validate_scheme(scheme, path)
    return scheme


def _read_variables(scheme: Scheme, blocks: dict, path: Path) -> None:
    for kind, (block, *labels) in _VARIABLE_TABLES.items():
        values, resets = getattr(scheme, kind + "s"), getattr(scheme, kind + "s_reset")
        for line, (name, value, reset) in _rows(blocks, block, tuple(labels), path):
            if kind == "float":
                value, reset = (_number(v, path, block, line) for v in (value, reset))
            elif kind == "bool":
                value, reset = (bool(_number(v, path, block, line, True)) for v in (value, reset))
            if scheme.variable_kind(name) is not None:
                raise InputError(f"variable {name} is defined twice", path=path, field=f"line {line}")
            values[name], resets[name] = value, reset
            scheme.rows[(block, name)] = line


def _read_nodes(scheme: Scheme, blocks: dict, path: Path) -> None:
    for line, row in _rows(blocks, "scheme_operators", _OPERATOR_LABELS, path):
        scheme.operators[row[0]] = Operator(*row)
        scheme.rows[("scheme_operators", row[0])] = line
    for line, (original, current, mode, started) in _rows(blocks, "scheme_jobs", _JOB_LABELS, path):
        if mode not in MODES:
            raise InputError(f"job {original} has mode {mode!r}", path=path, field=f"line {line}",
                             expected="new or continue")
        has_started = bool(_number(started, path, "scheme_jobs", line, True))
        scheme.jobs[original] = SchemeJob(original, current, mode, has_started)
        scheme.rows[("scheme_jobs", original)] = line
    for i, (line, row) in enumerate(_rows(blocks, "scheme_edges", _EDGE_LABELS, path)):
        fork = bool(_number(row[2], path, "scheme_edges", line, True))
        scheme.edges.append(Edge(row[0], row[1], fork, row[3], row[4]))
        scheme.rows[("scheme_edges", str(i))] = line


def scheme_blocks(scheme: Scheme) -> dict[str, pd.DataFrame | dict]:
    """The tables RELION writes for ``scheme`` (empty ones left out), in file order."""
    blocks: dict[str, pd.DataFrame | dict] = {
        "scheme_general": {"rlnSchemeName": scheme.name,
                           "rlnSchemeCurrentNodeName": scheme.current_node}}
    for kind, (block, name_l, value_l, reset_l) in _VARIABLE_TABLES.items():
        values, resets = getattr(scheme, kind + "s"), getattr(scheme, kind + "s_reset")
        names = sorted(values)
        cast = {"float": float, "bool": int, "string": str}[kind]
        blocks[block] = pd.DataFrame({
            name_l: pd.Series(names, dtype=object),
            value_l: pd.Series([cast(values[n]) for n in names], dtype=_DTYPES[kind]),
            reset_l: pd.Series([cast(resets.get(n, values[n])) for n in names], dtype=_DTYPES[kind]),
        })
    ops = [scheme.operators[n] for n in sorted(scheme.operators)]
    blocks["scheme_operators"] = pd.DataFrame(
        [[o.name, o.type, o.output, o.input1, o.input2] for o in ops], columns=list(_OPERATOR_LABELS),
        dtype=object)
    jobs = [scheme.jobs[n] for n in sorted(scheme.jobs)]
    blocks["scheme_jobs"] = pd.DataFrame({
        _JOB_LABELS[0]: pd.Series([j.original_name for j in jobs], dtype=object),
        _JOB_LABELS[1]: pd.Series([j.name for j in jobs], dtype=object),
        _JOB_LABELS[2]: pd.Series([j.mode for j in jobs], dtype=object),
        _JOB_LABELS[3]: pd.Series([int(j.has_started) for j in jobs], dtype="int64")})
    edges = scheme.edges
    blocks["scheme_edges"] = pd.DataFrame({
        _EDGE_LABELS[0]: pd.Series([e.input for e in edges], dtype=object),
        _EDGE_LABELS[1]: pd.Series([e.output for e in edges], dtype=object),
        _EDGE_LABELS[2]: pd.Series([int(e.is_fork) for e in edges], dtype="int64"),
        _EDGE_LABELS[3]: pd.Series([e.output_if_true for e in edges], dtype=object),
        _EDGE_LABELS[4]: pd.Series([e.bool_variable for e in edges], dtype=object)})
    return {k: v for k, v in blocks.items() if isinstance(v, dict) or len(v) > 0}


_DTYPES = {"float": "float64", "bool": "int64", "string": object}


def write_scheme(path: str | Path, scheme: Scheme) -> None:
    """Write ``scheme`` to ``path`` atomically in RELION's layout."""
    write_blocks(path, scheme_blocks(scheme))

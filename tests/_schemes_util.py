"""Helpers for the scheme tests: write small schemes and job templates into a project."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vitrify.pipeline._star import write_blocks
from vitrify.pipeline.schemes.model import Edge, Operator, Scheme, SchemeJob
from vitrify.pipeline.schemes.star import read_scheme, write_scheme

IMPORT = ("relion.import", {"fn_in_raw": "Raw/*.mrc", "is_multiframe": "No", "angpix": "1.5",
                            "do_queue": "No"})


def select_from(job_path: str, maxval: str = "5") -> tuple[str, dict[str, str]]:
    """A relion.select template selecting micrographs on rlnOpticsGroup from ``job_path``."""
    return ("relion.select", {"fn_mic": job_path, "do_select_values": "Yes",
                              "select_label": "rlnOpticsGroup", "select_minval": "0",
                              "select_maxval": maxval, "do_queue": "No"})


def write_template(path: Path, type_label: str, options: dict[str, str]) -> None:
    table = pd.DataFrame({"rlnJobOptionVariable": list(options),
                          "rlnJobOptionValue": list(options.values())}, dtype=object)
    write_blocks(path, {"job": {"rlnJobTypeLabel": type_label, "rlnJobIsContinue": 0},
                        "joboptions_values": table})


def make_scheme(root: Path, name: str, *, floats=None, bools=None, strings=None, operators=(),
                jobs=None, edges=()) -> Path:
    """Write ``Schemes/<name>/scheme.star`` (+ job templates); return its path.

    ``operators``: (name, type, out, in1, in2); ``jobs``: {node: (mode, type_label, options)};
    ``edges``: (in, out) or (in, out_if_false, out_if_true, bool_variable).
    """
    scheme = Scheme(name=f"Schemes/{name}/")
    for table, values in (("floats", floats), ("bools", bools), ("strings", strings)):
        getattr(scheme, table).update(values or {})
        getattr(scheme, table + "_reset").update(values or {})
    for op in operators:
        scheme.operators[op[0]] = Operator(*op)
    directory = root / "Schemes" / name
    for node, (mode, label, options) in (jobs or {}).items():
        scheme.jobs[node] = SchemeJob(node, node, mode, False)
        write_template(directory / node / "job.star", label, options)
    for edge in edges:
        scheme.edges.append(Edge(edge[0], edge[1]) if len(edge) == 2
                            else Edge(edge[0], edge[1], True, edge[2], edge[3]))
    scheme.current_node = scheme.start_node()
    write_scheme(directory / "scheme.star", scheme)
    return directory / "scheme.star"


def raw_micrographs(root: Path, *names: str) -> None:
    (root / "Raw").mkdir(exist_ok=True)
    for name in names:
        (root / "Raw" / name).write_bytes(b"")


def load(root: Path, name: str) -> Scheme:
    return read_scheme(root / "Schemes" / name / "scheme.star")


def processes(root: Path) -> dict[str, str]:
    """{job name: status} of default_pipeline.star."""
    from vitrify.pipeline.project import Project

    return {r.name: r.status for r in Project.open(root).jobs()}

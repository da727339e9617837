"""``default_pipeline.star`` as data: processes, nodes, input and output edges (RELION-4 layout).

:class:`PipelineState` is a mutable working copy read under the pipeline lock, edited, and
written back (atomically) by :mod:`vitrify.pipeline._lock`. Tables follow
``shared/spec/formats.md`` section 4; empty loop tables are left out as RELION does; a
legacy integer ``rlnPipeLineProcessStatus`` (RELION 3) is read as its label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vitrify.io.errors import InputError
from vitrify.jobs.status import JobStatus
from vitrify.pipeline._jobstar import LEGACY_TYPES

STATUSES = tuple(JobStatus)
_LEGACY_STATUS = dict(enumerate(STATUSES))  # RELION 3's integers: JobStatus is in their order

_PROCESS_COLUMNS = ("rlnPipeLineProcessName", "rlnPipeLineProcessAlias", "rlnPipeLineProcessTypeLabel",
                    "rlnPipeLineProcessStatusLabel")
_NODE_COLUMNS = ("rlnPipeLineNodeName", "rlnPipeLineNodeTypeLabel")
_INPUT_COLUMNS = ("rlnPipeLineEdgeFromNode", "rlnPipeLineEdgeProcess")
_OUTPUT_COLUMNS = ("rlnPipeLineEdgeProcess", "rlnPipeLineEdgeToNode")


@dataclass
class Process:
    """One job: ``name`` like ``Class2D/job008/``; ``alias`` ``None`` or ``Class2D/myrun/``."""

    name: str
    type_label: str
    status: JobStatus = JobStatus.SCHEDULED
    alias: str | None = None


@dataclass
class PipelineState:
    """All tables of default_pipeline.star; edges are (node, process) and (process, node) pairs."""

    job_counter: int = 1
    processes: dict[str, Process] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)
    input_edges: list[tuple[str, str]] = field(default_factory=list)
    output_edges: list[tuple[str, str]] = field(default_factory=list)

    def process(self, name: str, path: Path | str = "default_pipeline.star") -> Process:
        """The process called ``name`` (or whose alias is ``name``); InputError if absent."""
        name = normalise_job_name(name)
        if name in self.processes:
            return self.processes[name]
        for proc in self.processes.values():
            if proc.alias == name:
                return proc
        raise InputError(f"no job {name} in the pipeline", path=path, field="pipeline_processes",
                         expected="a job name such as CtfFind/job003/")

    def add_input(self, node: str, node_type: str, process: str) -> None:
        """Record ``node`` (keeping a known node's type) as an input of ``process``."""
        self.nodes.setdefault(node, node_type)
        if (node, process) not in self.input_edges:
            self.input_edges.append((node, process))

    def add_output(self, process: str, node: str, node_type: str) -> None:
        """Record ``node`` (with its type) as an output of ``process``."""
        self.nodes[node] = node_type
        if (process, node) not in self.output_edges:
            self.output_edges.append((process, node))

    def producer(self, node: str) -> str | None:
        """The process that wrote ``node``, if recorded."""
        return next((p for p, n in self.output_edges if n == node), None)


def normalise_job_name(name: str) -> str:
    """``CtfFind/job003`` → ``CtfFind/job003/`` (RELION names end in a slash)."""
    name = str(name).strip()
    if name.startswith("./"):
        name = name[2:]
    return name if name.endswith("/") else name + "/"


def _rows(blocks: dict, name: str, columns: tuple[str, ...], path: Path) -> list[tuple[str, ...]]:
    table = blocks.get(name)
    if table is None or (isinstance(table, pd.DataFrame) and table.empty):
        return []
    if not isinstance(table, pd.DataFrame):
        raise InputError("expected a loop table", path=path, field=f"data_{name}")
    for label in columns:
        if label not in table.columns:
            raise InputError(f"missing column {label}", path=path, field=f"data_{name}",
                             expected=f"columns {', '.join(columns)}")
    return [tuple(str(v) for v in row) for row in table[list(columns)].itertuples(index=False)]


def _status(row_status: str, path: Path) -> JobStatus:
    if row_status in STATUSES:
        return JobStatus(row_status)
    try:
        return _LEGACY_STATUS[int(row_status)]
    except (ValueError, KeyError):
        raise InputError(f"unknown process status {row_status!r}", path=path, field="pipeline_processes",
                         expected=" | ".join(STATUSES)) from None


def _process_rows(blocks: dict, path: Path) -> dict[str, Process]:
    table = blocks.get("pipeline_processes")
    legacy = isinstance(table, pd.DataFrame) and "rlnPipeLineProcessStatus" in table.columns
    columns = _PROCESS_COLUMNS if not legacy else _PROCESS_COLUMNS[:2] + ("rlnPipeLineProcessType",
                                                                          "rlnPipeLineProcessStatus")
    procs = {}
    for name, alias, label, status in _rows(blocks, "pipeline_processes", columns, path):
        if legacy and label.lstrip("-").isdigit():
            label = LEGACY_TYPES.get(int(label), label)
        procs[name] = Process(name, label, _status(status, path), None if alias == "None" else alias)
    return procs


def read_pipeline(path: str | Path) -> PipelineState:
    """Parse default_pipeline.star (a missing file is an empty pipeline)."""
    from vitrify.io.star import read_star

    path = Path(path)
    if not path.exists():
        return PipelineState()
    blocks = read_star(path, as_strings=True)
    general = blocks.get("pipeline_general", {})
    try:
        counter = int(general.get("rlnPipeLineJobCounter", 1)) if isinstance(general, dict) else 1
    except ValueError:
        raise InputError("job counter is not an integer", path=path, field="rlnPipeLineJobCounter") from None
    return PipelineState(
        job_counter=counter,
        processes=_process_rows(blocks, path),
        nodes=dict(_rows(blocks, "pipeline_nodes", _NODE_COLUMNS, path)),
        input_edges=list(_rows(blocks, "pipeline_input_edges", _INPUT_COLUMNS, path)),
        output_edges=list(_rows(blocks, "pipeline_output_edges", _OUTPUT_COLUMNS, path)))


def pipeline_blocks(state: PipelineState) -> dict[str, pd.DataFrame | dict]:
    """The STAR blocks of ``state`` in RELION's order (empty loops left out)."""
    procs = [(p.name, p.alias or "None", p.type_label, p.status) for p in state.processes.values()]
    tables = {
        "pipeline_processes": (procs, _PROCESS_COLUMNS),
        "pipeline_nodes": (list(state.nodes.items()), _NODE_COLUMNS),
        "pipeline_input_edges": (state.input_edges, _INPUT_COLUMNS),
        "pipeline_output_edges": (state.output_edges, _OUTPUT_COLUMNS),
    }
    blocks: dict[str, pd.DataFrame | dict] = {"pipeline_general": {"rlnPipeLineJobCounter": int(state.job_counter)}}
    for name, (rows, columns) in tables.items():
        if rows:
            blocks[name] = pd.DataFrame([list(r) for r in rows], columns=list(columns), dtype=object)
    return blocks


def write_pipeline(path: str | Path, state: PipelineState) -> None:
    """Write ``state`` atomically in RELION-4 format."""
    from vitrify.io.star import write_star

    write_star(path, pipeline_blocks(state))

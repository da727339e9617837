"""The pipeline as a graph of jobs: who feeds whom, laid out in layers, drawn with matplotlib.

A job B depends on job A when one of B's input nodes is an output node of A (or lies in
A's directory, for inputs recorded before A finished). Layer of a job = 1 + the largest
layer of the jobs it depends on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vitrify.jobs.status import JobStatus
from vitrify.pipeline._pipeline_star import PipelineState

#: status → face colour of its box in the picture
STATUS_COLOURS: dict[JobStatus, str] = {JobStatus.SCHEDULED: "#d9d9d9", JobStatus.RUNNING: "#9ecae1",
                                        JobStatus.SUCCEEDED: "#a1d99b", JobStatus.FAILED: "#fc9272",
                                        JobStatus.ABORTED: "#fdd0a2"}


@dataclass(frozen=True)
class JobEdge:
    """``source`` job's output ``node`` is an input of job ``target``."""

    source: str
    node: str
    target: str


def _owner(state: PipelineState, node: str) -> str | None:
    producer = state.producer(node)
    if producer is not None:
        return producer
    parts = node.split("/")
    name = "/".join(parts[:2]) + "/" if len(parts) > 2 else None
    return name if name in state.processes else None


def job_edges(state: PipelineState) -> list[JobEdge]:
    """Edges between jobs through their nodes (inputs from outside the pipeline are left out)."""
    edges = []
    for node, target in state.input_edges:
        source = _owner(state, node)
        if source is not None and source != target:
            edges.append(JobEdge(source, node, target))
    return edges


def layers(state: PipelineState) -> dict[str, int]:
    """Layer (0 = no upstream job) of every process; cycles are broken at the first revisit."""
    parents: dict[str, set[str]] = {name: set() for name in state.processes}
    for edge in job_edges(state):
        parents[edge.target].add(edge.source)
    depth: dict[str, int] = {}

    def visit(name: str, seen: frozenset[str]) -> int:
        if name not in depth:
            ups = [visit(p, seen | {name}) for p in parents.get(name, ()) if p not in seen]
            depth[name] = 1 + max(ups) if ups else 0
        return depth[name]

    for name in state.processes:
        visit(name, frozenset())
    return depth


def graph_dict(state: PipelineState) -> dict:
    """The pipeline as plain data (for JSON): jobs with status and layer, nodes, edges."""
    depth = layers(state)
    return {
        "job_counter": state.job_counter,
        "jobs": [{"name": p.name, "alias": p.alias, "type": p.type_label, "status": p.status,
                  "layer": depth[p.name]} for p in state.processes.values()],
        "nodes": [{"name": n, "type": t} for n, t in state.nodes.items()],
        "input_edges": [{"node": n, "job": p} for n, p in state.input_edges],
        "output_edges": [{"job": p, "node": n} for p, n in state.output_edges],
        "job_edges": [{"from": e.source, "node": e.node, "to": e.target} for e in job_edges(state)],
    }


def draw_pipeline(state: PipelineState, path: str | Path) -> Path:
    """Write a picture (PNG/SVG/PDF by suffix) of the jobs, coloured by status, with their edges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitrify.io.atomic import atomic_path

    depth = layers(state)
    rows: dict[int, int] = {}
    where = {}
    for name in state.processes:
        where[name] = (depth[name], rows.get(depth[name], 0))
        rows[depth[name]] = rows.get(depth[name], 0) + 1
    width, height = max(depth.values(), default=0) + 1, max(rows.values(), default=1)
    fig, ax = plt.subplots(figsize=(2.6 * width + 1, 1.0 * height + 1), dpi=100)
    for edge in job_edges(state):
        (x0, y0), (x1, y1) = where[edge.source], where[edge.target]
        bend = 0.0 if abs(x1 - x0) <= 1 else -0.25  # edges that skip a layer arc around it
        ax.annotate("", xy=(x1 - 0.35, -y1), xytext=(x0 + 0.35, -y0),
                    arrowprops={"arrowstyle": "->", "color": "#555555",
                                "connectionstyle": f"arc3,rad={bend}"})
    for name, proc in state.processes.items():
        x, y = where[name]
        label = f"{name}\n{proc.alias or proc.type_label}"
        ax.text(x, -y, label, ha="center", va="center", fontsize=7,
                bbox={"boxstyle": "round", "fc": STATUS_COLOURS.get(proc.status, "white"), "ec": "#333333"})
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(fc=c, ec="#333333", label=s) for s, c in STATUS_COLOURS.items()],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
    ax.set_xlim(-0.6, width - 0.4)
    ax.set_ylim(-height + 0.4, 0.6)
    ax.axis("off")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", bbox_inches="tight")
    plt.close(fig)
    return path

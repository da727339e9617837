"""Small files of a job directory: note.txt, run.pid, appended logs, job_pipeline.star."""

from __future__ import annotations

import datetime
import os
import shlex
from pathlib import Path

from vitrify.pipeline._heartbeat import HEARTBEAT_FILE
from vitrify.pipeline._pipeline_star import PipelineState, write_pipeline

PID_FILE = "run.pid"
#: A copy of an abort request that ``run_job``'s marker clean-up at job start does not delete, so
#: an abort that arrives while the job process is still starting is not lost.
ABORT_REQUEST = ".abort_requested"


def clear_run_files(job_dir: Path) -> None:
    """Before a (re)run: remove the pid file, the heartbeat and an old abort request."""
    for name in (PID_FILE, ABORT_REQUEST, HEARTBEAT_FILE):
        (job_dir / name).unlink(missing_ok=True)


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to a log file (run.out / run.err / note.txt are append-only logs)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def start_note(root: Path, name: str, type_label: str) -> None:
    """note.txt of a new job: what it is and when it was created."""
    from vitrify.io.atomic import atomic_write

    atomic_write(root / name / "note.txt", f"{name} ({type_label}) created {_now()}\n")


def append_command(root: Path, name: str, command: list[str]) -> None:
    """Append the command of a run to note.txt, framed as RELION does."""
    append_text(root / name / "note.txt",
                f" ++++ Executing new job on {_now()}\n ++++ with the following command(s): \n"
                f"{shlex.join(command)}\n ++++ \n")


def write_pid(root: Path, name: str, pid: int) -> None:
    """Remember the process id of a locally launched job."""
    from vitrify.io.atomic import atomic_write

    atomic_write(root / name / PID_FILE, f"{pid}\n")


def read_pid(root: Path, name: str) -> int | None:
    """The process id written by :func:`write_pid` (None if absent or unreadable)."""
    try:
        return int((root / name / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def write_job_pipeline(root: Path, state: PipelineState, name: str) -> None:
    """``<job>/job_pipeline.star``: the job's process with its input and output nodes and edges."""
    ins = [(n, p) for n, p in state.input_edges if p == name]
    outs = [(p, n) for p, n in state.output_edges if p == name]
    nodes = {n: state.nodes[n] for n, _ in ins if n in state.nodes}
    nodes.update({n: state.nodes[n] for _, n in outs if n in state.nodes})
    mini = PipelineState(state.job_counter, {name: state.processes[name]}, nodes, ins, outs)
    write_pipeline(root / name / "job_pipeline.star", mini)

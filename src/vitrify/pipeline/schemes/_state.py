"""Files of a scheme directory besides scheme.star: resume state, log, abort and exit markers.

``schemer_state.json`` records which pipeline job the schemer created or launched for the
job node it is at, written *before* the job is created and again after, so a schemer killed
at any moment resumes the same job instead of creating or running it twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vitrify.io.atomic import atomic_write
from vitrify.jobs.status import ABORT_NOW, EXIT_MARKERS, JobStatus

STATE_FILE = "schemer_state.json"
LOG_FILE = "schemer.log"


@dataclass(frozen=True)
class ResumeState:
    """The job node being worked on and its pipeline job (``""`` while it is being created).

    ``known_jobs`` lists the project's jobs just before creation, so a job created by a
    schemer killed before it could record the name is recognised (adopted) on restart.
    ``launched_at_ns`` (``time.time_ns()`` just before the launch; 0: not launched) tells this
    visit's exit marker from one left by an earlier run of a ``continue`` job.
    """

    node: str = ""
    job: str = ""
    continue_: bool = False
    known_jobs: tuple[str, ...] = field(default_factory=tuple)
    launched_at_ns: int = 0


def read_state(scheme_dir: Path) -> ResumeState:
    """The saved resume state (empty when there is none or it is unreadable)."""
    try:
        data = json.loads((scheme_dir / STATE_FILE).read_text())
        return ResumeState(str(data.get("node", "")), str(data.get("job", "")),
                           bool(data.get("continue_", False)), tuple(data.get("known_jobs", ())),
                           int(data.get("launched_at_ns", 0)))
    except (OSError, ValueError, AttributeError):
        return ResumeState()


def write_state(scheme_dir: Path, state: ResumeState) -> None:
    """Save the resume state atomically."""
    data = asdict(state)
    data["known_jobs"] = list(state.known_jobs)
    atomic_write(scheme_dir / STATE_FILE, json.dumps(data, indent=1) + "\n")


class SchemeLog:
    """Appends time-stamped lines to ``Schemes/<name>/schemer.log`` and echoes them."""

    def __init__(self, scheme_dir: Path, echo: bool = True) -> None:
        self.path = scheme_dir / LOG_FILE
        self.echo = echo

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        with open(self.path, "a", encoding="utf-8") as handle:  # append-only log
            handle.write(line + "\n")
        if self.echo:
            print(line, flush=True)


def marker_time_ns(job_dir: Path, status: str) -> int | None:
    """Modification time of the job's exit marker for ``status`` (None if it has none)."""
    try:
        return (job_dir / EXIT_MARKERS[status]).stat().st_mtime_ns
    except (OSError, KeyError):
        return None


def clear_exit_markers(scheme_dir: Path) -> None:
    """Remove the scheme's exit markers and abort request (at the start of a run)."""
    for name in (*EXIT_MARKERS.values(), ABORT_NOW):
        (scheme_dir / name).unlink(missing_ok=True)


def touch_exit_marker(scheme_dir: Path, status: JobStatus) -> None:
    """Leave ``RELION_JOB_EXIT_<...>`` for the run's final status."""
    atomic_write(scheme_dir / EXIT_MARKERS[status], "")


def scheme_exit_status(scheme_dir: Path) -> JobStatus | None:
    """Final status of the last run from its exit marker, or None."""
    for status, marker in EXIT_MARKERS.items():
        if (scheme_dir / marker).exists():
            return status
    return None

"""Job statuses and the marker files that record them: the one place for both.

A job directory (and a scheme directory) ends with one of RELION's exit markers,
``RELION_JOB_EXIT_SUCCESS``, ``..._FAILURE`` or ``..._ABORTED``; ``RELION_JOB_ABORT_NOW``
asks a running job to stop. Statuses are RELION's labels (``rlnPipeLineProcessStatusLabel``
of ``default_pipeline.star``). :class:`JobStatus` is a ``str``: it compares equal to its label
and prints, formats, writes to STAR and JSON as the label.

>>> JobStatus.SUCCEEDED == "Succeeded", str(JobStatus.FAILED), f"{JobStatus.ABORTED}"
(True, 'Failed', 'Aborted')
>>> EXIT_MARKERS[JobStatus.SUCCEEDED], MARKER_STATUS["RELION_JOB_EXIT_ABORTED"].name, EXIT_CODES["Aborted"]
('RELION_JOB_EXIT_SUCCESS', 'ABORTED', 2)
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

__all__ = [
    "ABORT_NOW", "EXIT_ABORTED", "EXIT_CODES", "EXIT_FAILURE", "EXIT_MARKERS", "EXIT_SUCCESS", "FINAL_STATUSES",
    "JobStatus", "MARKER_STATUS", "exit_marker_status",
]


class JobStatus(str, Enum):
    """State of a job, valued by its RELION label (members in RELION-3's integer order 0..4)."""

    RUNNING = "Running"
    SCHEDULED = "Scheduled"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ABORTED = "Aborted"

    __str__ = str.__str__
    __format__ = str.__format__
    __hash__ = str.__hash__  # a dict keyed by statuses is looked up by the plain label too


EXIT_SUCCESS = "RELION_JOB_EXIT_SUCCESS"
EXIT_FAILURE = "RELION_JOB_EXIT_FAILURE"
EXIT_ABORTED = "RELION_JOB_EXIT_ABORTED"
ABORT_NOW = "RELION_JOB_ABORT_NOW"

#: final status → the marker file that records it
EXIT_MARKERS: dict[JobStatus, str] = {
    JobStatus.SUCCEEDED: EXIT_SUCCESS, JobStatus.FAILED: EXIT_FAILURE, JobStatus.ABORTED: EXIT_ABORTED,
}
#: marker file → final status
MARKER_STATUS: dict[str, JobStatus] = {marker: status for status, marker in EXIT_MARKERS.items()}
#: the statuses a job ends with
FINAL_STATUSES = frozenset(EXIT_MARKERS)
#: final status → exit code of ``vitrify run-job``, a job command and ``vitrify schemer --run``
EXIT_CODES: dict[JobStatus, int] = {JobStatus.SUCCEEDED: 0, JobStatus.FAILED: 1, JobStatus.ABORTED: 2}


def exit_marker_status(directory: str | Path) -> JobStatus | None:
    """The final status an exit marker in ``directory`` records (None while there is none)."""
    directory = Path(directory)
    for marker, status in MARKER_STATUS.items():
        if (directory / marker).exists():
            return status
    return None

"""Jobs, schemes and failures of a project, read without changing anything.

The pipeliner's own status reader (:meth:`Project.job_status`) records what it observes in
default_pipeline.star; the dashboard must not write, so here a job's status is the pipeline's
label, overridden by the job's exit marker when there is one (a job that just ended is shown
ended before any pipeliner has recorded it). Timing: a run starts at the last
``Executing new job on`` line of note.txt (else when job.star was written) and ends at its exit
marker's time stamp.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.jobs.status import EXIT_MARKERS, JobStatus, exit_marker_status
from vitrify.pipeline.auto import AUTO_DIR, LOG_FILE, READY_DIR
from vitrify.pipeline.movie_watch import RECORD_FILE
from vitrify.pipeline.schemes.lock import lock_dir
from vitrify.web._auto import auto_problems, retried_jobs
from vitrify.web._files import file_key, mtime_s, pipeline_state, tail_text

_EXECUTING = re.compile(r"\+\+\+\+ Executing new job on (\S+)")
_LOG_FILES = ("run.out", "run.err", "run.log")
#: the files a job's "what went wrong" is read from, in order
_ERROR_FILES = ("run.err", "run.log", "run.out")
_SKIPPED = "skipped.txt"


def job_status(root: Path, name: str, recorded: JobStatus) -> JobStatus:
    """The recorded status, or the final status of the exit marker left since."""
    return exit_marker_status(root / name) or recorded


def run_start_s(job_dir: Path) -> float | None:
    """When the job's last run started (seconds since the epoch), None when never run."""
    try:
        note = (job_dir / "note.txt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        note = ""
    stamps = _EXECUTING.findall(note)
    if stamps:
        try:
            return datetime.datetime.fromisoformat(stamps[-1]).timestamp()
        except ValueError:
            pass
    if mtime_s(job_dir / "run.out") is None:
        return None
    return mtime_s(job_dir / "job.star")


def run_end_s(job_dir: Path, status: JobStatus) -> float | None:
    """When the job ended (its exit marker's time), None while it has none."""
    marker = EXIT_MARKERS.get(status)
    return None if marker is None else mtime_s(job_dir / marker)


def job_rows(root: Path) -> list[dict]:
    """Every job of the pipeline in order: name, type, alias, status, start/end/elapsed seconds."""
    try:
        state = pipeline_state(root)
    except InputError:
        return []
    now = time.time()
    rows = []
    for proc in state.processes.values():
        job_dir = root / proc.name
        status = job_status(root, proc.name, proc.status)
        start, end = run_start_s(job_dir), run_end_s(job_dir, status)
        if status == JobStatus.SCHEDULED:
            start = end = None
        elapsed = None if start is None else max(0.0, (end if end is not None else now) - start)
        rows.append({"name": proc.name, "type": proc.type_label, "alias": proc.alias, "status": str(status),
                     "start_s": start, "end_s": end, "elapsed_s": elapsed})
    return rows


def known_job(root: Path, name: str) -> str | None:
    """``name`` as the pipeline spells it (``Class2D/job007/``) when it is a job there, else None."""
    try:
        proc = pipeline_state(root).process(name)
    except InputError:
        return None
    return proc.name


def job_detail(root: Path, name: str, max_bytes: int = 6000) -> dict:
    """A job's log tails (run.out, run.err, run.log), note and skipped items."""
    job_dir = root / name
    logs = {file: tail_text(job_dir / file, max_bytes) for file in _LOG_FILES}
    return {"name": name, "logs": logs, "note": tail_text(job_dir / "note.txt", max_bytes),
            "skipped": skipped_items(job_dir)}


def skipped_items(job_dir: Path, limit: int = 50) -> list[dict]:
    """What the job could not process and why (``skipped.txt``: name TAB reason)."""
    items = []
    for line in tail_text(job_dir / _SKIPPED, 64 * 1024).splitlines()[:limit]:
        name, _, reason = line.partition("\t")
        if name.strip():
            items.append({"item": name.strip(), "reason": reason.strip()})
    return items


def error_lines(job_dir: Path, n_lines: int = 12) -> str:
    """The last non-empty lines of the first of run.err, run.log, run.out that has any."""
    for file in _ERROR_FILES:
        lines = [line for line in tail_text(job_dir / file, 16384).splitlines() if line.strip()]
        if lines:
            return "\n".join(lines[-n_lines:])
    return ""


def skipped_movies(root: Path) -> list[dict]:
    """Movies ``vitrify auto`` skipped (half-written or unreadable) with the reason, from its
    ``Auto/Ready/movies.json``; none when the project was not run by ``vitrify auto``."""
    try:
        skipped = json.loads((root / READY_DIR / RECORD_FILE).read_text()).get("skipped", {})
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(skipped, dict):
        return []
    return [{"job": "vitrify auto", "kind": "skipped", "message": f"{name}: {reason}"}
            for name, reason in sorted(skipped.items())]


def failures(root: Path, jobs: list[dict]) -> list[dict]:
    """Why ``vitrify auto`` stopped (or waits), the movies it skipped, failed jobs with the end of
    their error output (``also when retried`` when a scheme ran them again), then every job's
    skipped items."""
    found = auto_problems(root) + skipped_movies(root)
    retried = retried_jobs(root) if any(job["status"] == JobStatus.FAILED for job in jobs) else set()
    for job in jobs:
        job_dir = root / job["name"]
        if job["status"] == JobStatus.FAILED:
            note = "failed also when retried:\n" if job["name"] in retried else ""
            found.append({"job": job["name"], "kind": "failed", "message": note + error_lines(job_dir)})
        for item in skipped_items(job_dir):
            found.append({"job": job["name"], "kind": "skipped", "message": f"{item['item']}: {item['reason']}"})
    return found


def scheme_names(root: Path) -> list[str]:
    """Names of the project's schemes (``Schemes/<name>/scheme.star``)."""
    return sorted(p.parent.name for p in (root / "Schemes").glob("*/scheme.star"))


def scheme_rows(root: Path, log_lines: int = 15) -> list[dict]:
    """Each scheme's state (running/finished/...), current node, jobs and the end of its log."""
    from vitrify.pipeline.schemes.control import scheme_status

    rows = []
    for name in scheme_names(root):
        try:
            status = scheme_status(root, name)
        except (InputError, OSError, ValueError) as err:
            rows.append({"scheme": name, "state": "unreadable", "error": str(err), "jobs": [], "variables": {}})
            continue
        log = tail_text(root / "Schemes" / name / "schemer.log", 8192).splitlines()[-log_lines:]
        status.pop("pid", None)
        status["log"] = log
        status["variables"] = {k: _plain(v) for k, v in status["variables"].items()}
        rows.append(status)
    return rows


def _plain(value: object) -> object:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def project_signature(root: Path) -> str:
    """A short text that changes whenever something the dashboard shows may have changed.

    Built from stat calls only: the pipeline and scheme files, ``vitrify auto``'s movie record and
    log, each job directory (its entries
    change when a job writes an output or marker: writes are atomic renames) and its log sizes.
    """
    parts = [file_key(root / "default_pipeline.star"), file_key(root / READY_DIR / RECORD_FILE),
             file_key(root / AUTO_DIR / LOG_FILE)]
    for scheme in scheme_names(root):
        directory = root / "Schemes" / scheme
        parts += [file_key(directory / "scheme.star"), file_key(directory / "schemer.log"),
                  file_key(lock_dir(root, scheme))]
    try:
        names = list(pipeline_state(root).processes)
    except InputError:
        names = []
    for name in names:
        job_dir = root / name
        parts.append(file_key(job_dir))
        parts += [file_key(job_dir / file) for file in _LOG_FILES]
    return format(hash(tuple(parts)) & 0xFFFFFFFFFFFF, "x")

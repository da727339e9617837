"""A running job's sign of life: ``<job>/.vitrify_heartbeat`` with its pid and host, touched regularly.

The process that runs a job (``vitrify run-job`` on a cluster node, or a ``vitrify JOBTYPE
--o JobType/jobNNN`` command) writes it when it starts and refreshes its time stamp every
:data:`INTERVAL_S` seconds from a daemon thread. The pipeliner then knows a job whose
process died without an exit marker (``kill -9``, a node crash, the queue's time limit):
on the same host the pid is gone; on another host the time stamp is older than
:data:`STALE_S`. A job still waiting in the queue has no heartbeat yet and stays Running.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

HEARTBEAT_FILE = ".vitrify_heartbeat"
#: seconds between two refreshes of the time stamp
INTERVAL_S = 20.0
#: a heartbeat from another host older than this means its process is gone
STALE_S = 300.0


def start(job_dir: Path, interval_s: float = INTERVAL_S) -> Callable[[], None]:
    """Write the heartbeat of this process and keep it fresh; returns the function that stops it."""
    from vitrify.io.atomic import atomic_write

    path = Path(job_dir) / HEARTBEAT_FILE
    atomic_write(path, f"{os.getpid()} {socket.gethostname()}\n")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                os.utime(path)
            except OSError:  # the job directory was cleaned up under us: nothing left to refresh
                return

    thread = threading.Thread(target=beat, name=f"heartbeat {job_dir}", daemon=True)
    thread.start()

    def stop_beating() -> None:
        stop.set()
        thread.join(timeout=1.0)

    return stop_beating


def read(job_dir: Path) -> tuple[int, str, float] | None:
    """(pid, host, age in seconds) of the heartbeat in ``job_dir``; None when absent or unreadable."""
    path = Path(job_dir) / HEARTBEAT_FILE
    try:
        pid, host = path.read_text().split()
        return int(pid), host, time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return None


def alive(job_dir: Path, pid_alive: Callable[[int], bool], stale_s: float = STALE_S) -> bool | None:
    """Whether the process with the heartbeat in ``job_dir`` still runs (None: no heartbeat)."""
    beat = read(job_dir)
    if beat is None:
        return None
    pid, host, age_s = beat
    if host == socket.gethostname():
        return pid_alive(pid)
    return age_s < stale_s


def clear(job_dir: Path) -> None:
    """Remove the heartbeat of an earlier run."""
    (Path(job_dir) / HEARTBEAT_FILE).unlink(missing_ok=True)

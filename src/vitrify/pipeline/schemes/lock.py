"""The scheme lock: RELION's ``.relion_lock_scheme_<name>/lock_scheme`` in the project directory.

Only one process may run or edit a scheme at a time. The lock directory is created with
``mkdir`` (atomic); the file inside names the owner (``pid host``). A lock left by a process
that no longer exists on this host (killed with ``kill -9``) is taken over; a lock without an
owner line (RELION's own) or held by a live process is waited for and then reported.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from vitrify.io.atomic import atomic_write
from vitrify.io.errors import InputError
from vitrify.pipeline._notes import pid_alive

LOCK_PREFIX = ".relion_lock_scheme_"
LOCK_FILE = "lock_scheme"


def lock_dir(project_dir: str | Path, scheme: str) -> Path:
    """``<project>/.relion_lock_scheme_<scheme>`` (``scheme`` is the short name, e.g. ``prep``)."""
    return Path(project_dir) / f"{LOCK_PREFIX}{scheme}"


def lock_owner(directory: Path) -> tuple[int, str] | None:
    """``(pid, host)`` written in a lock directory, or None when there is no readable owner."""
    try:
        pid, host = (directory / LOCK_FILE).read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


def lock_holder_alive(directory: Path) -> bool | None:
    """True/False when the lock's owner is known to be alive/dead, None when unknown."""
    owner = lock_owner(directory)
    if owner is None:
        return None
    pid, host = owner
    return pid_alive(pid) if host == socket.gethostname() else None


class SchemeLock:
    """Context manager holding the lock of one scheme (takes over stale locks)."""

    def __init__(self, project_dir: str | Path, scheme: str, timeout_s: float = 5.0) -> None:
        self.directory = lock_dir(project_dir, scheme)
        self.scheme = scheme
        self.timeout_s = timeout_s
        self.owner = f"{os.getpid()} {socket.gethostname()}\n"

    def __enter__(self) -> SchemeLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Create the lock directory; InputError naming the lock after ``timeout_s``."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                self.directory.mkdir()
                atomic_write(self.directory / LOCK_FILE, self.owner)
                return
            except FileExistsError:
                if self._take_over_stale():
                    continue
            if time.monotonic() >= deadline:
                raise self._busy_error()
            time.sleep(0.2)

    def _take_over_stale(self) -> bool:
        if lock_holder_alive(self.directory) is not False:
            return False
        stale = self.directory.with_name(f"{self.directory.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            self.directory.rename(stale)
        except OSError:
            return False
        shutil.rmtree(stale, ignore_errors=True)
        return True

    def _busy_error(self) -> InputError:
        owner = lock_owner(self.directory)
        holder = f"process {owner[0]} on {owner[1]}" if owner else "another schemer (no owner recorded)"
        return InputError(f"scheme {self.scheme} is locked by {holder}", path=self.directory,
                          expected="no other schemer on this scheme (stop it with --abort, or delete "
                                   "the lock directory if none is running)")

    def release(self) -> None:
        """Remove the lock if this process still owns it."""
        try:
            if (self.directory / LOCK_FILE).read_text() != self.owner:
                return
        except OSError:
            return
        shutil.rmtree(self.directory, ignore_errors=True)

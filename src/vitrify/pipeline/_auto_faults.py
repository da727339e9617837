"""What ``vitrify auto`` does when something goes wrong around it: a full disk, the session
folder gone, jobs that failed.

- **A full disk** (``ENOSPC``, or a quota: ``EDQUOT``), met by ``vitrify auto`` itself (its
  records, the schemes' files) or by a job (the job's ``run.err`` says so after its retry):
  the run stops at once with one line saying so. Every file is written atomically, so nothing
  half-written is left under a real name; once space is freed the same command continues.
- **The session folder gone** (an unmounted share, a folder moved away): no new movie is read,
  the work already started goes on, and ``vitrify auto`` waits ``grace_s`` for the folder to
  come back (:class:`SessionPresence`); if it does not, the run stops with one line saying so,
  and the same command continues once the folder is back.
- **Jobs that failed** (after the scheme's retry): named with the last line of their error
  output in the run's summary (:func:`describe_failed_jobs`).
"""

from __future__ import annotations

import errno
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from vitrify.io.errors import InputError

#: what a job's error output says when its disk was full
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "[Errno 28]", "[Errno 122]")
_TAIL_BYTES = 8192


def is_disk_full(err: BaseException) -> bool:
    """True for an ``OSError`` that means no space (or no quota) was left."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - _TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def job_ran_out_of_space(job_dir: Path) -> bool:
    """True when the job's ``run.err`` (or ``run.log``) says its disk was full."""
    text = _tail(job_dir / "run.err") + _tail(job_dir / "run.log")
    return any(marker in text for marker in _DISK_FULL_TEXTS)


def last_error_line(job_dir: Path) -> str:
    """The last non-empty line of the job's ``run.err`` ('' when there is none)."""
    lines = [line.strip() for line in _tail(job_dir / "run.err").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _free_text(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:.1f} MiB free now"


def disk_full_error(project: Path, where: str) -> InputError:
    """The one-line error of a full disk: where it was met and what to do."""
    return InputError(f"the disk is full ({where}; {_free_text(project)}): nothing half-written was kept",
                      path=project, expected="free space on that disk, then the same command again "
                      "(what finished is kept)")


def describe_failed_jobs(project: Path, jobs: tuple[str, ...] | list[str]) -> str:
    """``CtfFind/job003/ (its last error line)`` for each job, joined with ``; ``."""
    parts = []
    for job in jobs:
        reason = last_error_line(project / job)
        parts.append(f"{job} ({reason})" if reason else job)
    return "; ".join(parts)


class SessionPresence:
    """Follow whether the session folder is there; an error once it has been gone ``grace_s``.

    Parameters
    ----------
    session_dir
        The folder the microscope writes into.
    grace_s
        How long it may be gone (an unmounted share coming back) before the run stops.
    log
        Where to say that it went and came back.
    clock
        Monotonic clock (seconds); tests pass their own.
    """

    def __init__(self, session_dir: Path, grace_s: float, log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session_dir, self.grace_s, self.log, self.clock = session_dir, grace_s, log, clock
        self.gone_since: float | None = None
        self.error: InputError | None = None

    def present(self) -> bool:
        """True when the folder is there now (logs when it goes and when it is back)."""
        if self.session_dir.is_dir():
            if self.gone_since is not None:
                self.log(f"the session folder {self.session_dir} is back after "
                         f"{self.clock() - self.gone_since:.0f} s: reading movies again")
                self.gone_since = None
            return True
        now = self.clock()
        if self.gone_since is None:
            self.gone_since = now
            self.log(f"the session folder {self.session_dir} has gone (unmounted or moved?): no new movie is "
                     f"read; the work already started goes on; waiting up to {self.grace_s:g} s for it")
        elif now - self.gone_since >= self.grace_s and self.error is None:
            self.error = InputError(f"the session folder has gone (for {now - self.gone_since:.0f} s); the "
                                    "schemes were stopped and nothing finished is lost", path=self.session_dir,
                                    expected="the folder back in place, then the same command again")
        return False

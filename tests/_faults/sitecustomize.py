"""Faults for the job processes of a test: a crash mid-job, a full disk (tests only).

A test puts this folder first on ``PYTHONPATH`` and names a JSON plan in ``VITRIFY_TEST_FAULTS``;
every ``python -m vitrify run-job --job X/jobNNN/job.star`` it starts then loads this module
(Python imports ``sitecustomize`` at start-up) and installs an audit hook on ``open``. The plan
is read at each output file the job opens for writing (not its markers, logs or heartbeat):

- ``{"kill": {"CtfFind/": 1}}``: the first such open of the next 1 run(s) of a job whose name
  starts with ``CtfFind/`` kills the process (SIGKILL: no exit marker, as a segfault or the
  kernel's OOM killer leaves it); the count in the plan goes down by one each time;
- ``{"disk_full": ["MotionCorr/"]}``: while listed, each such open raises ``OSError(ENOSPC)``,
  as on a full disk (the job fails and says why in run.err).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys

_EXEMPT = ("RELION_JOB_", "run.out", "run.err", "run.log", "note.txt", ".vitrify_heartbeat", "run.pid")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def _job_name() -> str | None:
    """``CtfFind/job003/`` of ``... run-job --job CtfFind/job003/job.star`` (None for any other command)."""
    if "run-job" not in sys.argv or "--job" not in sys.argv:
        return None
    star = sys.argv[sys.argv.index("--job") + 1]
    return os.path.dirname(os.path.normpath(star)) + "/"


def _writes(mode: object, flags: object) -> bool:
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _install(plan_path: str, job: str) -> None:
    job_dir = os.path.abspath(job)
    busy = []

    def output_opened(path: object) -> bool:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False
        full = os.path.abspath(os.fsdecode(path))
        return full.startswith(job_dir + os.sep) and not os.path.basename(full).startswith(_EXEMPT) \
            and not any(part in full for part in (".vitrify_heartbeat",))

    def hook(event: str, args: tuple) -> None:
        if event != "open" or busy or not _writes(args[1], args[2]) or not output_opened(args[0]):
            return
        busy.append(1)
        try:
            with open(plan_path) as handle:
                plan = json.load(handle)
            kills = plan.get("kill", {})
            prefix = next((p for p, n in kills.items() if job.startswith(p) and n > 0), None)
            if prefix is not None:
                kills[prefix] -= 1
                with open(plan_path, "w") as handle:
                    json.dump(plan, handle)
                os.kill(os.getpid(), signal.SIGKILL)
            if any(job.startswith(p) for p in plan.get("disk_full", [])):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fsdecode(args[0]))
        finally:
            busy.clear()

    sys.addaudithook(hook)


if os.environ.get("VITRIFY_TEST_FAULTS") and _job_name():
    _install(os.environ["VITRIFY_TEST_FAULTS"], _job_name())

"""The dashboard's only two actions: abort a scheme, continue (re-run) a scheme.

Abort is ``vitrify schemer --abort`` (touches the scheme's and its current job's
``RELION_JOB_ABORT_NOW``). Continue starts ``vitrify schemer --scheme NAME --run`` in the project
directory as a detached process (as RELION's GUI does with ``relion_schemer --run``), output
appended to ``Schemes/NAME/run.out`` and ``run.err``; it is refused while a schemer holds the
scheme's lock.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.pipeline.schemes.control import abort_scheme
from vitrify.pipeline.schemes.lock import lock_dir, lock_holder_alive


class SchemeBusy(Exception):
    """The scheme is already being run by a schemer."""


def is_running(root: Path, scheme: str) -> bool:
    """True while a schemer (not known to be dead) holds the scheme's lock."""
    directory = lock_dir(root, scheme)
    return directory.exists() and lock_holder_alive(directory) is not False


def abort(root: Path, scheme: str) -> list[str]:
    """Ask the scheme (and its running job) to stop; the marker files touched, project-relative."""
    return [str(Path(p).relative_to(root)) for p in abort_scheme(root, scheme)]


def continue_scheme(root: Path, scheme: str) -> int:
    """Start ``vitrify schemer --scheme NAME --run`` detached; returns its process id."""
    if not (root / "Schemes" / scheme / "scheme.star").is_file():
        raise InputError(f"no scheme {scheme}", path=root / "Schemes" / scheme / "scheme.star")
    if is_running(root, scheme):
        raise SchemeBusy(f"scheme {scheme} is already running")
    directory = root / "Schemes" / scheme
    command = [sys.executable, "-m", "vitrify", "schemer", "--scheme", scheme, "--run"]
    with open(directory / "run.out", "ab") as out, open(directory / "run.err", "ab") as err:
        child = subprocess.Popen(command, cwd=root, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    threading.Thread(target=child.wait, name=f"reap schemer {scheme}", daemon=True).start()  # no zombie
    return child.pid

"""Atomic writes: every file vitrify writes appears complete or not at all.

A writer writes into a temporary file in the destination directory and renames it
over the destination when done (``os.replace`` is atomic on POSIX within one file
system). A killed process leaves at most a ``.tmp`` file behind, never a half-written
file under the real name.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; rename it over it on success.

    Parameters
    ----------
    destination
        The final file name.
    suffix
        Suffix of the temporary file (default: the destination's own suffix, so that
        libraries choosing a format by extension still see the right one).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    suffix = destination.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=f".tmp{suffix}", dir=destination.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: names :func:`atomic_path` gives its temporary files: ``.<name>.<8 random characters>.tmp<suffix>``
TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[^/]*)?$")


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` and below; return them.

    Call it only where no writer is at work (a job directory before its job starts).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".a.star.k3j_9xQz.tmp.star").write_text("half"), (d / "a.star").write_text("x")
    >>> [p.name for p in remove_stale_temps(d)], sorted(p.name for p in d.iterdir())
    (['.a.star.k3j_9xQz.tmp.star'], ['a.star'])
    """
    removed = []
    for path in sorted(Path(folder).rglob(".*.tmp*")):
        if TEMP_NAME.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(destination: str | os.PathLike, data: str | bytes) -> Path:
    """Write text or bytes to ``destination`` atomically and return its path."""
    with atomic_path(destination) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
    return Path(destination)

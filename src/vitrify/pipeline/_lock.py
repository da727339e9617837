"""Exclusive access to default_pipeline.star: an ``fcntl`` lock on a lock file + atomic writes.

:func:`edit_pipeline` holds the lock while it reads the pipeline, lets the caller edit the
:class:`PipelineState`, and writes it back atomically (temp file + rename), so two
processes never interleave their changes and a reader never sees half a file. The lock
is released by the kernel if the holder dies (no stale locks). While RELION itself holds
its own lock (``.relion_lock/lock_default_pipeline.star``) we wait for it as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.pipeline._pipeline_star import PipelineState, read_pipeline, write_pipeline

PIPELINE_FILE = "default_pipeline.star"
LOCK_FILE = ".vitrify_pipeline.lock"
RELION_LOCK = Path(".relion_lock") / "lock_default_pipeline.star"
TIMEOUT_S = 120.0
_POLL_S = 0.02


@contextlib.contextmanager
def pipeline_lock(root: str | Path, timeout_s: float = TIMEOUT_S) -> Iterator[None]:
    """Hold the project's pipeline lock (waits up to ``timeout_s``; InputError after that)."""
    root = Path(root)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, root, time.monotonic() + timeout_s)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, root: Path, deadline: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not (root / RELION_LOCK).exists():
                return
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            pass
        if time.monotonic() > deadline:
            raise InputError("default_pipeline.star stays locked by another process", path=root / LOCK_FILE,
                             expected=f"the lock to be released (remove {RELION_LOCK} if RELION crashed)")
        time.sleep(_POLL_S)


@contextlib.contextmanager
def edit_pipeline(root: str | Path) -> Iterator[PipelineState]:
    """Read the pipeline under the lock, yield it for editing, write it back if no error."""
    root = Path(root)
    with pipeline_lock(root):
        state = read_pipeline(root / PIPELINE_FILE)
        yield state
        write_pipeline(root / PIPELINE_FILE, state)


def read_locked(root: str | Path) -> PipelineState:
    """A consistent snapshot of the pipeline (atomic writes make a lock-free read safe too)."""
    return read_pipeline(Path(root) / PIPELINE_FILE)

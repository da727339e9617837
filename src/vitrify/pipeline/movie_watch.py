"""Stable-file detection for on-the-fly processing: which movies of a session are ready.

A microscope writes a movie over seconds (or copies it over a network share), so a movie that
matches the session's pattern is not yet a movie to process. :class:`MovieWatcher` scans the
session; a file becomes *ready* once its size and modification time have not changed for
``stable_s`` seconds (seen unchanged by two scans at least that far apart) and it opens and
its last frame reads (:func:`vitrify.io.movies.check_movie_readable`). A ready movie is linked
into the project's ready folder (same relative path; its EPU ``.xml`` / SerialEM ``.mdoc``
beside it linked too), which is what the import job reads, so the schemes never see a
half-written file. A stable file that does not read is *skipped* with the reason, and looked
at again only if it changes. ``movies.json`` (atomic) records both lists.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vitrify.io.atomic import atomic_write
from vitrify.io.errors import InputError
from vitrify.io.movies import check_movie_readable

RECORD_FILE = "movies.json"
_SIDECARS = (".xml", ".mdoc")


@dataclass
class _Seen:
    """What a scan saw of one candidate file: its (size, mtime) and since when unchanged."""

    key: tuple[int, int]
    since_s: float


@dataclass
class MovieWatcher:
    """Follow the movies matching ``pattern`` (a glob relative to ``session_dir``).

    Parameters
    ----------
    session_dir
        Folder the microscope writes into.
    pattern
        Glob of the movies relative to ``session_dir`` (``Images-Disc*/.../*.tiff``).
    ready_dir
        Folder in the project where ready movies are linked (relative paths kept).
    stable_s
        Seconds a file's size and mtime must stay unchanged before it is read.
    clock
        Monotonic clock (seconds); tests pass their own.
    """

    session_dir: Path
    pattern: str
    ready_dir: Path
    stable_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    ready: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    _seen: dict[str, _Seen] = field(default_factory=dict)
    _skipped_keys: dict[str, tuple[int, int]] = field(default_factory=dict)
    _changed: bool = False

    def __post_init__(self) -> None:
        self.session_dir, self.ready_dir = Path(self.session_dir), Path(self.ready_dir)
        record = self.ready_dir / RECORD_FILE
        if record.is_file():   # a rerun: what was linked before stays linked, nothing is re-read
            data = json.loads(record.read_text())
            self.ready = [name for name in data.get("ready", []) if (self.ready_dir / name).exists()]
        self._ready_set = set(self.ready)

    @property
    def pending(self) -> int:
        """Candidate files neither ready nor skipped yet (still being written, or not yet settled)."""
        return len(self._seen)

    def scan(self) -> list[str]:
        """Look at the session once; link the movies that became ready; return their names.

        Raises :class:`InputError` when the session folder has gone.
        """
        if not self.session_dir.is_dir():
            raise InputError("the session folder has gone", path=self.session_dir, expected="a directory")
        now, fresh = self.clock(), []
        for path in sorted(self.session_dir.glob(self.pattern)):
            name = path.relative_to(self.session_dir).as_posix()
            if name in self._ready_set or not path.is_file():
                continue
            if self._settled(name, path, now) and self._accept(name, path):
                fresh.append(name)
        if fresh or self._changed:
            self._write_record()
        return fresh

    def _settled(self, name: str, path: Path, now: float) -> bool:
        """True once the file has looked the same for ``stable_s`` (and is not a known bad file)."""
        try:
            stat = path.stat()
        except OSError:
            self._seen.pop(name, None)
            return False
        key = (stat.st_size, stat.st_mtime_ns)
        if self._skipped_keys.get(name) == key:
            return False
        seen = self._seen.get(name)
        if seen is None or seen.key != key:
            self._seen[name] = _Seen(key, now)
            return self.stable_s <= 0 and stat.st_size > 0
        return now - seen.since_s >= self.stable_s and stat.st_size > 0

    def _accept(self, name: str, path: Path) -> bool:
        """Read the settled file; link it if it reads, else record why it was skipped."""
        key = self._seen.pop(name).key
        try:
            check_movie_readable(path)
        except InputError as err:
            self._changed = self.skipped.get(name) != str(err) or self._changed
            self.skipped[name] = str(err)
            self._skipped_keys[name] = key
            return False
        self.skipped.pop(name, None)
        self._skipped_keys.pop(name, None)
        self._link(name, path)
        self.ready.append(name)
        self._ready_set.add(name)
        return True

    def _link(self, name: str, path: Path) -> None:
        """Symlink the movie (and its metadata files) into ``ready_dir`` at the same relative path."""
        target = self.ready_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        stem = path.name.split(".", 1)[0]
        sidecars = [p for p in path.parent.glob(f"{stem}*") if p.name.endswith(_SIDECARS) and p.is_file()]
        for source in [*sidecars, path]:   # the movie last: once it is there, so is its metadata
            link = target.parent / source.name
            if not link.is_symlink():
                os.symlink(source.resolve(), link)

    def _write_record(self) -> None:
        self.ready_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.ready_dir / RECORD_FILE,
                     json.dumps({"ready": self.ready, "skipped": self.skipped}, indent=1) + "\n")
        self._changed = False

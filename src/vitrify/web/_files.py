"""Reading a live project safely: cached STAR tables, file tails, project-relative names.

Every reader here only reads. Files are written atomically by the jobs (temp file + rename),
so a file read is complete; a file that vanishes or is unreadable while it is read gives
``None`` (the next refresh will see the new one). STAR files are parsed once per version:
:func:`read_star_cached` keys its cache on (path, mtime, size).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeVar

import pandas as pd

from vitrify.io.errors import InputError

if TYPE_CHECKING:
    from vitrify.pipeline.project import PipelineState

T = TypeVar("T")

_CACHE_SIZE = 512
_cache: OrderedDict[tuple[str, int, int, bool], dict] = OrderedDict()
_cache_lock = threading.Lock()


def file_key(path: Path) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of ``path``, or None when it does not exist."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def read_star_cached(path: Path, *, as_strings: bool = False) -> dict[str, pd.DataFrame | dict] | None:
    """All blocks of a STAR file (None when it is missing or unreadable), parsed once per version."""
    from vitrify.io.star import read_star

    key = file_key(path)
    if key is None:
        return None
    cache_key = (str(path), *key, as_strings)
    with _cache_lock:
        if cache_key in _cache:
            _cache.move_to_end(cache_key)
            return _cache[cache_key]
    try:
        blocks = read_star(path, as_strings=as_strings)
    except (InputError, OSError, ValueError):
        return None
    with _cache_lock:
        _cache[cache_key] = blocks
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return blocks


def star_table(path: Path, block: str | None = None) -> pd.DataFrame | None:
    """One loop table of a STAR file: ``block`` by name, or the last loop when ``block`` is None."""
    blocks = read_star_cached(path)
    if not blocks:
        return None
    if block is not None:
        table = blocks.get(block)
        return table if isinstance(table, pd.DataFrame) else None
    tables = [t for t in blocks.values() if isinstance(t, pd.DataFrame)]
    return tables[-1] if tables else None


def star_values(path: Path, block: str) -> dict:
    """A list block (``data_general``-style key/value pairs) of a STAR file; ``{}`` when absent."""
    blocks = read_star_cached(path)
    value = (blocks or {}).get(block)
    return value if isinstance(value, dict) else {}


_counts: dict[tuple[str, str | None], tuple[tuple[int, int], int | None]] = {}


def _loop_rows(text: str) -> dict[str, int]:
    """Rows of each loop block of STAR text, by block name (``data_`` alone gives ``""``)."""
    rows: dict[str, int] = {}
    block, in_loop = None, False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_"):
            block, in_loop = line[5:], False
        elif line == "loop_":
            in_loop = block is not None
            if in_loop:
                rows[block] = 0
        elif in_loop and not line.startswith("_"):
            rows[block] += 1
    return rows


def count_loop_rows(path: Path, block: str | None = None) -> int | None:
    r"""Rows of loop ``block`` of a STAR file (None: its last loop), counted from the text without
    parsing the values; None when the file or the block is missing. Remembered per file version,
    so thousands of coordinate files, or a particles file of a million rows, cost one read each.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "p.star"
    >>> _ = path.write_text("data_optics\nloop_\n_rlnOpticsGroup #1\n1\n\n"
    ...                     "data_particles\nloop_\n_rlnCoordinateX #1\n1.0\n2.0\n3.0\n")
    >>> count_loop_rows(path), count_loop_rows(path, "optics"), count_loop_rows(path, "nothere")
    (3, 1, None)
    """
    key = file_key(path)
    if key is None:
        return None
    known = _counts.get((str(path), block))
    if known is not None and known[0] == key:
        return known[1]
    try:
        rows = _loop_rows(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    count = rows.get(block) if block is not None else (list(rows.values())[-1] if rows else None)
    _counts[(str(path), block)] = (key, count)
    return count


def tail_text(path: Path, max_bytes: int = 8192) -> str:
    """The last ``max_bytes`` of a text file (from a line start when cut); ``""`` when absent."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes and "\n" in text:
        text = text.split("\n", 1)[1]
    return text


def relative_name(name: str) -> str | None:
    """A clean project-relative name (``Class2D/job007/run.star``), or None when it could leave
    the project (absolute, ``..``) or is empty."""
    name = str(name).strip()
    if not name or "\0" in name:
        return None
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        return None
    parts = [p for p in pure.parts if p != "."]
    return "/".join(parts) if parts else None


def project_file(root: Path, name: str) -> Path | None:
    """``root / name`` for a clean relative name (see :func:`relative_name`), else None."""
    clean = relative_name(name)
    return None if clean is None else root / clean


def mtime_s(path: Path) -> float | None:
    """Modification time (seconds since the epoch), None when the file is absent."""
    key = file_key(path)
    return None if key is None else key[0] / 1e9


_memo: dict[tuple[str, tuple[str, ...]], tuple[tuple, object]] = {}


def memo_on_files(tag: str, paths: list[Path], compute: Callable[[], T]) -> T:
    """``compute()``, recomputed only when one of ``paths`` changed (or appeared, or went) since."""
    names = (tag, tuple(str(p) for p in paths))
    key = tuple(file_key(p) for p in paths)
    with _cache_lock:
        hit = _memo.get(names)
    if hit is not None and hit[0] == key:
        return hit[1]
    value = compute()
    with _cache_lock:
        _memo[names] = (key, value)
        while len(_memo) > _CACHE_SIZE:
            _memo.pop(next(iter(_memo)))
    return value


def pipeline_state(root: Path) -> PipelineState:
    """default_pipeline.star of the project (read again only when it changed; never written)."""
    from vitrify.pipeline.project import Project

    return memo_on_files("pipeline", [root / "default_pipeline.star"], lambda: Project(root).pipeline())

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


_counts: dict[str, tuple[tuple[int, int], int | None]] = {}


def count_loop_rows(path: Path) -> int | None:
    """Rows of the one loop table of a STAR file such as a coordinate file (None when unreadable).

    Counted from the text (lines that are neither blank, comments, ``data_``, ``loop_`` nor
    ``_rln`` labels) when the file has a single block with a single loop, else parsed; remembered
    per file version, so thousands of coordinate files cost one read each.
    """
    key = file_key(path)
    if key is None:
        return None
    known = _counts.get(str(path))
    if known is not None and known[0] == key:
        return known[1]
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines()]
    words = [line for line in lines if line and not line.startswith("#")]
    if sum(w.startswith("data_") for w in words) == 1 and sum(w == "loop_" for w in words) == 1:
        count = sum(1 for w in words if not w.startswith(("data_", "loop_", "_")))
    else:
        table = star_table(path)
        count = None if table is None else len(table)
    _counts[str(path)] = (key, count)
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

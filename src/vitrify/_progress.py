"""Progress bars for long loops (rich), switched off by ``--quiet`` or VITRIFY_QUIET=1.

This helper sits outside the layers: any layer may use it. It holds one switch,
set once by the CLI entry point; it never changes anything at import.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_state = {"quiet": None}


def set_quiet(quiet: bool) -> None:
    """Turn progress bars off (True) or on (False) for this process."""
    _state["quiet"] = bool(quiet)


def is_quiet() -> bool:
    """Whether progress bars are off (``--quiet`` or VITRIFY_QUIET=1)."""
    if _state["quiet"] is not None:
        return _state["quiet"]
    return os.environ.get("VITRIFY_QUIET", "") not in ("", "0")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate over ``items`` showing a rich progress bar unless quiet or not on a terminal.

    Off a terminal (output to a file or pipe, e.g. a pipeline's run.out) no bar is drawn: rich
    would write blank lines there. ``FORCE_COLOR=1`` makes rich treat any output as a terminal.

    Examples
    --------
    >>> sum(track(range(4), "adding"))  # off a terminal: the items, no bar
    6
    """
    if is_quiet():
        yield from items
        return
    from rich.console import Console
    from rich.progress import track as rich_track

    console = Console()
    if not console.is_terminal:
        yield from items
        return
    yield from rich_track(items, description=description, total=total, transient=True, console=console)

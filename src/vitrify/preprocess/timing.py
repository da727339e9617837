"""Where the time goes: CPU and wall seconds per named stage, summed over calls.

CPU time is :func:`time.process_time` (this process, all its threads: torch's intra-op
threads included), so it is the figure to compare with another program's CPU time on a
shared machine. On a CUDA device each stage waits for the device before it is closed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    """Accumulates ``(cpu_s, wall_s)`` per stage name, in the order the stages first ran.

    >>> timer = StageTimer()
    >>> with timer.stage("read"):
    ...     pass
    >>> [name for name, _, _ in timer.rows()]
    ['read']
    """

    def __init__(self, device=None) -> None:
        self._cpu: dict[str, float] = {}
        self._wall: dict[str, float] = {}
        self._cuda = device is not None and getattr(device, "type", str(device)).startswith("cuda")

    def _sync(self) -> None:
        if self._cuda:
            import torch

            torch.cuda.synchronize()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the ``with`` block under ``name`` (added to earlier blocks of the same name)."""
        self._sync()
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self._cpu[name] = self._cpu.get(name, 0.0) + time.process_time() - cpu
            self._wall[name] = self._wall.get(name, 0.0) + time.perf_counter() - wall

    def add(self, name: str, cpu_s: float, wall_s: float) -> None:
        """Add seconds measured elsewhere (e.g. read back from a file) to ``name``."""
        self._cpu[name] = self._cpu.get(name, 0.0) + cpu_s
        self._wall[name] = self._wall.get(name, 0.0) + wall_s

    def rows(self) -> list[tuple[str, float, float]]:
        """``(stage, cpu_s, wall_s)`` per stage."""
        return [(name, self._cpu[name], self._wall[name]) for name in self._cpu]

    def total(self) -> tuple[float, float]:
        """``(cpu_s, wall_s)`` over all stages."""
        return sum(self._cpu.values()), sum(self._wall.values())


def stage(timer: StageTimer | None, name: str):
    """``timer.stage(name)``, or a context that does nothing when ``timer`` is None."""
    from contextlib import nullcontext

    return nullcontext() if timer is None else timer.stage(name)

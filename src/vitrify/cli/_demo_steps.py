"""Run the demo's commands as a user would type them, one subprocess each, with live progress.

Each :class:`Step` is a ``vitrify ...`` command line run with ``python -m vitrify --quiet`` in a
directory; its output goes to a log file. While it runs, a rich status line shows the elapsed
time and what it is doing; a scheme run (``vitrify schemer --run``, ``vitrify auto``) is followed
through its ``schemer.log`` files, one printed line per finished job.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

_JOB_LINE = re.compile(r"job (\S+): (.*)$")
_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
_ORPHAN_WAIT_S = 15.0  # how long a step waits for the job processes it left to exit


class StepFailed(Exception):
    """A demo command ended with a non-zero exit status."""

    def __init__(self, command: str, returncode: int, log: Path):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1] if lines else "(no output)"
        super().__init__(f"'{command}' failed (exit {returncode}): {last} (log: {log})")


@dataclass
class SchemeWatcher:
    """Follows ``Schemes/NAME/schemer.log`` from the current end: new job lines, current job."""

    log: Path
    offset: int = 0
    current: str = ""
    started: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.offset = self.log.stat().st_size if self.log.is_file() else 0

    def poll(self) -> list[tuple[bool, str]]:
        """``(succeeded, text)`` for jobs that ended since the last call; updates :attr:`current`."""
        if not self.log.is_file():
            return []
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            text = handle.read().decode(errors="replace")
        complete = text[: text.rfind("\n") + 1]
        self.offset += len(complete.encode())
        finished = []
        for line in complete.splitlines():
            match = _JOB_LINE.search(line)
            if match is None:
                continue
            node, what = match.groups()
            if what.startswith(("running", "continuing")):
                self.current = f"{node}: {what}"
                self.started[node] = time.perf_counter()
            elif what.endswith(("succeeded", "failed", "aborted")) or " failed" in what:
                took = time.perf_counter() - self.started.pop(node, time.perf_counter())
                finished.append((what.endswith("succeeded"), f"{node}: {what} ({took:.0f} s)"))
                self.current = ""
        return finished


@dataclass(frozen=True)
class Step:
    """Commands (each the arguments after ``vitrify``) run one after the other in ``cwd``;
    ``watch`` are ``schemer.log`` files to follow while they run; ``count`` = (glob pattern under
    ``cwd``, expected number, what they are) shows how many output files exist so far;
    ``before`` is called just before the first command starts (the demo's microscope)."""

    title: str
    argvs: tuple[tuple[str, ...], ...]
    cwd: Path
    watch: tuple[Path, ...] = ()
    count: tuple[str, int, str] | None = None
    before: Callable[[], object] | None = None

    def counted(self) -> str:
        """``" · 3/10 movies"`` (from :attr:`count`), or ``""``."""
        if self.count is None:
            return ""
        pattern, total, what = self.count
        return f" · {len(list(self.cwd.glob(pattern)))}/{total} {what}"

    @property
    def commands(self) -> list[str]:
        """The command lines as a user types them."""
        return ["vitrify " + shlex.join(argv) for argv in self.argvs]


@contextlib.contextmanager
def counting_orphans() -> Iterator[None]:
    """Make this process the Linux child subreaper while the demo runs.

    A schemer reaps its job processes only when it polls them, so jobs can still be zombies when
    it exits; they then become children of the nearest subreaper, this process, which reaps them
    after each step (:func:`reap_orphans`) so that their CPU time is counted. Elsewhere a no-op.
    """
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    enabled = libc is not None and libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        if enabled:
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
            reap_orphans()


def reap_orphans(timeout_s: float = 0.0) -> None:
    """Collect child processes that have ended; wait up to ``timeout_s`` for those still ending
    (a job exits a moment after its exit marker). Call only when no Popen of ours is running."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.05)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and every child it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _launch(argv: tuple[str, ...], cwd: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, VITRIFY_QUIET="1")
    with log.open("ab") as out:
        out.write(f"$ (cd {cwd} && vitrify {shlex.join(argv)})\n".encode())
        out.flush()
        return subprocess.Popen([sys.executable, "-m", "vitrify", "--quiet", *argv], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def _say(console: Console, text: str) -> None:
    console.print(text, soft_wrap=True, highlight=False)


def _follow(console: Console, watchers: list[SchemeWatcher]) -> None:
    for watcher in watchers:
        for ok, line in watcher.poll():
            _say(console, f"   {'[green]✓[/]' if ok else '[red]✗[/]'} {escape(line)}")


def _wait(console: Console, process: subprocess.Popen, step: Step, watchers: list[SchemeWatcher],
          poll_s: float) -> None:
    start = time.perf_counter()
    with console.status(escape(step.title)) as status:
        while process.poll() is None:
            time.sleep(poll_s)
            _follow(console, watchers)
            current = [w.current for w in watchers if w.current]
            doing = step.counted() + (f" · {', '.join(current)}" if current else "")
            status.update(f"{escape(step.title)} [dim]{time.perf_counter() - start:.0f} s{escape(doing)}[/]")
    _follow(console, watchers)


def run_step(console: Console, step: Step, log: Path, *, poll_s: float = 0.5) -> float:
    """Run the commands of ``step`` in order (output appended to ``log``); returns the wall time (s).

    Raises :class:`StepFailed` at the first command that exits with a non-zero status.
    """
    _say(console, f"[bold cyan]>>[/] {escape(step.title)}")
    start = time.perf_counter()
    if step.before is not None:
        step.before()
    for argv, command in zip(step.argvs, step.commands):
        _say(console, f"   [dim]$ {escape(command)}[/]")
        watchers = [SchemeWatcher(path) for path in step.watch]
        process = _launch(argv, step.cwd, log)
        _wait(console, process, step, watchers, poll_s)
        reap_orphans(timeout_s=_ORPHAN_WAIT_S)
        if process.returncode != 0:
            raise StepFailed(command, process.returncode, log)
    took = time.perf_counter() - start
    _say(console, f"   done [dim]({took:.0f} s)[/]")
    return took

"""``vitrify auto``: a session folder to results on the fly, with nobody in the loop (relion_it's job).

:func:`run_auto` does what a facility's operator would: it reads the acquisition metadata
(MDCatch, :func:`vitrify.pipeline.mdcatch.prepare_session`, waiting for the first complete file),
sets up the project and RELION-4's prep and proc schemes, and runs them while the microscope
writes:

- a :class:`~vitrify.pipeline.movie_watch.MovieWatcher` scans the session every ``poll_s``;
  movies that stopped changing and read are linked into ``Auto/Ready/`` (the import job's
  pattern), half-written or corrupt ones are skipped with the reason (``Auto/Ready/movies.json``);
- two threads run the schemes in rounds (``run_scheme(..., once=True)``: one pass, then back at
  the scheme's ``WAIT``), as relion_it runs two schemers: prep when more movies are ready than
  it has seen, proc when prep has fitted the CTF of more micrographs. The schemes' continue-mode
  jobs (import, motion correction, CTF, selection, picking, extraction) process only what is
  new; proc's own operators decide when to classify again (more micrographs selected);
- a job that fails is run once more (``RunSettings.retries``); if it fails again the scheme goes
  on with what does not depend on it, and the run's summary names it;
- a full disk or a session folder gone for ``idle_s`` stops the run with one line saying so
  (:mod:`vitrify.pipeline._auto_faults`);
- it ends when no movie has become ready for ``idle_s`` and neither scheme has anything left to
  do, or when asked to stop (:func:`request_stop`, ``Auto/STOP``; Ctrl-C in the command): the
  schemes are aborted through their abort markers (the running job is aborted, its scheme
  stays at that node), so a later run goes on where this one stopped and recomputes nothing
  that finished.

Progress goes to ``Auto/auto.log`` (one time-stamped line per event) and to ``say``.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vitrify.io.atomic import atomic_write
from vitrify.io.errors import InputError
from vitrify.jobs.status import EXIT_FAILURE, JobStatus
from vitrify.pipeline._auto_faults import (
    SessionPresence, describe_failed_jobs, disk_full_error, is_disk_full, job_ran_out_of_space,
)
from vitrify.pipeline._auto_stages import STAGES, WAIT_NODE, choose_stage, match_ranker_input, route_proc
from vitrify.pipeline._scheme_setup import apply_scheme_options
from vitrify.pipeline._star import count_table_rows
from vitrify.pipeline.movie_watch import MovieWatcher
from vitrify.pipeline.schemes.control import abort_scheme
from vitrify.pipeline.schemes.runner import RunResult, RunSettings, run_scheme
from vitrify.pipeline.schemes.star import read_scheme

AUTO_DIR = "Auto"
READY_DIR = f"{AUTO_DIR}/Ready"
STOP_FILE = "STOP"
PID_FILE = "auto.pid"
SETUP_FILE = "auto.json"
LOG_FILE = "auto.log"
__all__ = ["STAGES", "AutoSettings", "AutoResult", "read_log", "request_stop", "rounds_from_log", "run_auto"]


@dataclass(frozen=True)
class AutoSettings:
    """How ``vitrify auto`` runs.

    Attributes
    ----------
    until
        Last stage (``ctf | 2d | 3d | refine``); None: the last one vitrify has the jobs for.
    batch
        Start a proc round once this many more micrographs have a CTF fit than in its last round
        (a last round follows when the session has been quiet for half of ``idle_s``).
    idle_s
        End after this long without a new ready movie (and nothing left to process).
    stable_s
        A movie must keep its size and mtime this long before it is read.
    poll_s
        Seconds between scans of the session.
    scheme_poll_s
        Seconds between job status checks of the schemers.
    """

    until: str | None = None
    batch: int = 1
    idle_s: float = 600.0
    stable_s: float = 2.0
    poll_s: float = 1.0
    scheme_poll_s: float = 1.0

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise InputError(f"batch {self.batch}", field="--batch", expected="micrographs >= 1")
        if self.idle_s < 0 or self.stable_s < 0 or self.poll_s <= 0 or self.scheme_poll_s <= 0:
            raise InputError("idle and stable times must be >= 0, polls > 0", field="--idle",
                             expected="minutes >= 0")


@dataclass(frozen=True)
class AutoResult:
    """How a run ended: ``finished`` (idle, all done), ``stopped`` (asked to) or ``failed``."""

    state: str
    stage: str
    message: str
    ready: int
    skipped: dict[str, str] = field(default_factory=dict)
    rounds: dict[str, list[str]] = field(default_factory=dict)


def auto_dir(project_dir: str | Path) -> Path:
    """``PROJECT/Auto``: the run's own files (ready links, log, stop request, pid)."""
    return Path(project_dir) / AUTO_DIR


def request_stop(project_dir: str | Path) -> list[Path]:
    """Ask a running ``vitrify auto`` to stop (``Auto/STOP``; its schemes are aborted by it)."""
    folder = auto_dir(project_dir)
    if not (folder / SETUP_FILE).is_file():
        raise InputError("not a project set up by vitrify auto", path=folder / SETUP_FILE,
                         expected="the --project of a vitrify auto run")
    pid = _running_pid(folder)
    if pid is None:
        raise InputError("no vitrify auto is running on this project", path=folder / PID_FILE)
    atomic_write(folder / STOP_FILE, f"stop requested at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return [folder / STOP_FILE]


def _running_pid(folder: Path) -> int | None:
    try:
        pid = int((folder / PID_FILE).read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


class _Log:
    """Time-stamped lines to ``Auto/auto.log`` and to ``say``."""

    def __init__(self, path: Path, say: Callable[[str], None]) -> None:
        self.path, self.say, self.start = path, say, time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, message: str, *, echo: bool = True) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        try:
            with self._lock, open(self.path, "a", encoding="utf-8") as handle:   # append-only log
                handle.write(f"{stamp} +{time.monotonic() - self.start:.1f}s {message}\n")
        except OSError:   # a full disk: the message is still said; the run stops on its own check
            echo = True
        if echo:
            self.say(message)


_ROUND = re.compile(r"^(prep|proc) round (\d+): (.*)$")


def read_log(project_dir: str | Path) -> list[tuple[float, str]]:
    """``(time.time() of the line, message)`` for each line of ``Auto/auto.log``."""
    lines = []
    for line in (auto_dir(project_dir) / LOG_FILE).read_text(encoding="utf-8").splitlines():
        date, clock, _elapsed, message = (line.split(" ", 3) + ["", "", "", ""])[:4]
        try:
            stamp = datetime.datetime.strptime(f"{date} {clock}", "%Y-%m-%d %H:%M:%S.%f").timestamp()
        except ValueError:
            continue
        lines.append((stamp, message))
    return lines


def rounds_from_log(lines: list[tuple[float, str]]) -> list[dict]:
    """The scheme rounds of a log (:func:`read_log`): scheme, number, start/end (s since the epoch),
    how many movies (prep) or CTF-fitted micrographs (proc) it started with, and how it ended."""
    open_rounds: dict[tuple[str, int], dict] = {}
    rounds = []
    for stamp, message in lines:
        match = _ROUND.match(message)
        if match is None:
            continue
        scheme, number, rest = match.group(1), int(match.group(2)), match.group(3)
        if rest.endswith(" in"):
            entry = {"scheme": scheme, "round": number, "start": stamp, "n_in": int(rest.split()[0])}
            open_rounds[(scheme, number)] = entry
            rounds.append(entry)
        elif (scheme, number) in open_rounds:
            open_rounds.pop((scheme, number)).update(end=stamp, status=rest.split(" ", 1)[0])
    return rounds


class _Rounds(threading.Thread):
    """Run one scheme in rounds whenever ``wanted()`` differs from what the last round saw."""

    def __init__(self, project: Path, name: str, wanted: Callable[[], int], seen: int,
                 settings: AutoSettings, log: _Log,
                 gate: Callable[[int, int], bool] = lambda current, seen: True) -> None:
        super().__init__(name=f"vitrify-auto-{name}", daemon=True)
        self.project, self.scheme, self.wanted, self.seen = project, name, wanted, seen
        self.settings, self.log, self.gate = settings, log, gate
        self.stop, self.in_round = threading.Event(), False
        self.results: list[RunResult] = []
        self.error: InputError | None = None
        self.failed_jobs: tuple[str, ...] = ()   # of the last round, when it failed

    @property
    def idle(self) -> bool:
        """Not in a round and nothing new to do."""
        current = self.wanted()
        return not self.in_round and (current == self.seen or not self.gate(current, self.seen))

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                current = self.wanted()
                if current == self.seen or not self.gate(current, self.seen):
                    time.sleep(self.settings.poll_s)
                    continue
                self.round(current)
        except InputError as err:
            self.error = err
            self.log(f"{self.scheme}: {err}")
        except OSError as err:   # the scheme's own files could not be written
            self.error = (disk_full_error(self.project, f"writing the {self.scheme} scheme's files")
                          if is_disk_full(err) else InputError(f"{self.scheme}: {err}", path=err.filename))
            self.log(f"{self.scheme}: {self.error}")

    def round(self, current: int) -> None:
        self.in_round, self.seen = True, current
        number = len(self.results) + 1
        self.log(f"{self.scheme} round {number}: {current} in")
        try:
            result = run_scheme(self.project, self.scheme,
                                RunSettings(poll_s=self.settings.scheme_poll_s, once=True, echo=False, retries=1))
        finally:
            self.in_round = False
        self.results.append(result)
        self.log(f"{self.scheme} round {number}: {result.status.lower()} ({result.message})")
        self.failed_jobs = result.failed_jobs if result.status == JobStatus.FAILED else ()
        full = [job for job in self.failed_jobs if job_ran_out_of_space(self.project / job)]
        if full:
            self.error = disk_full_error(self.project, f"{', '.join(full)} ran out of space, also when retried")
            self.log(f"{self.scheme}: {self.error}")
            self.stop.set()
        elif result.status == JobStatus.ABORTED:
            self.stop.set()


def _started_job(project: Path, scheme: str, node: str) -> str | None:
    """The pipeline job a scheme's job node last made (None before it first ran)."""
    job = read_scheme(project / "Schemes" / scheme / "scheme.star", validate=False).jobs.get(node)
    if job is None or not job.has_started or job.name == job.original_name:
        return None
    return job.name


def _rows(project: Path, scheme: str, node: str, star: str, table: str) -> int:
    job = _started_job(project, scheme, node)
    path = project / job / star if job else None
    try:
        return count_table_rows(path, table) if path is not None and path.is_file() else 0
    except (InputError, OSError, ValueError):
        return 0


def _at_wait(project: Path, scheme: str) -> bool:
    """The scheme's last round ended back at ``WAIT`` with nothing failed (a failed one is run again)."""
    folder = project / "Schemes" / scheme
    return (read_scheme(folder / "scheme.star", validate=False).current_node == WAIT_NODE
            and not (folder / EXIT_FAILURE).exists())


def _movies_pattern(project: Path) -> str:
    """The session-relative movie pattern MDCatch found (``Movies/<pattern>`` in acquisition.json)."""
    record = json.loads((project / "acquisition.json").read_text())
    pattern = str(record["scheme_options"]["prep__importmovies__fn_in_raw"])
    prefix = "Movies/"
    if not pattern.startswith(prefix):
        raise InputError(f"movie pattern {pattern!r} is not inside the session", path=project / "acquisition.json",
                         field="prep__importmovies__fn_in_raw", expected="Movies/<pattern>")
    return pattern[len(prefix):]


#: relion_it keys ``vitrify auto`` sets: one pass per round (the rounds are its own).
ROUND_OPTIONS = {"prep__wait_sec": "0", "proc__wait_sec": "0"}


def set_up(project: Path, session: Path, prepare: Callable[[], object], stage: str, log: _Log) -> str:
    """First run: MDCatch (``prepare``) and the scheme edits; a rerun checks it is the same session.

    Returns the session-relative movie pattern.
    """
    record = auto_dir(project) / SETUP_FILE
    if record.is_file():
        saved = json.loads(record.read_text())
        if Path(saved["session_dir"]) != session.resolve():
            raise InputError(f"the project was set up for another session ({saved['session_dir']})",
                             path=record, expected=f"--project of {session} or a new project directory")
        log(f"continuing the project set up at {saved['set_up']} (movies {saved['movies_pattern']})")
    else:
        log(f"reading the acquisition metadata of {session} (waiting for the first complete file)")
        prepare()
        pattern = _movies_pattern(project)
        apply_scheme_options(project, {**ROUND_OPTIONS,
                                       "prep__importmovies__fn_in_raw": f"{READY_DIR}/{pattern}"})
        ranker_input = match_ranker_input(project)
        if ranker_input:
            log(f"select_parts reads {ranker_input} (the iterations class2d runs)", echo=False)
        saved = {"session_dir": str(session.resolve()), "movies_pattern": pattern,
                 "set_up": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write(record, json.dumps(saved, indent=1) + "\n")
    if stage != "ctf":
        route_proc(project, stage)
    return saved["movies_pattern"]


class _Session:
    """One ``vitrify auto`` run: watcher, the two scheme threads, the stop and idle checks."""

    def __init__(self, project: Path, session: Path, pattern: str, stage: str, settings: AutoSettings,
                 log: _Log) -> None:
        self.project, self.session, self.stage, self.settings, self.log = project, session, stage, settings, log
        self.watcher = MovieWatcher(session, pattern, project / READY_DIR, settings.stable_s)
        self.presence = SessionPresence(session, settings.idle_s, log)
        self.error: InputError | None = None   # met by this thread (a full disk)
        self.reported_skips: dict[str, str] = {}
        imported = _rows(project, "prep", "importmovies", "movies.star", "movies")
        prep = _Rounds(project, "prep", lambda: len(self.watcher.ready),
                       imported if _at_wait(project, "prep") else -1, settings, log)
        self.workers = [prep]
        if stage != "ctf":
            def ctf_fitted() -> int:
                return _rows(project, "prep", "ctffind", "micrographs_ctf.star", "micrographs")
            seen = self._saved_ctf() if _at_wait(project, "proc") else -1
            self.workers.append(_Rounds(project, "proc", ctf_fitted, seen, settings, log, gate=self._proc_gate))
        self.last_ready = time.monotonic()

    def _proc_gate(self, fitted: int, seen: int) -> bool:
        """A proc round once ``batch`` more micrographs are fitted, or the session has gone quiet."""
        if fitted <= 0:
            return False
        quiet = time.monotonic() - self.last_ready >= self.settings.idle_s / 2 and self.workers[0].idle
        return seen < 0 or fitted - seen >= self.settings.batch or quiet

    def _saved_ctf(self) -> int:
        try:
            return int(json.loads((auto_dir(self.project) / "state.json").read_text())["proc_ctf"])
        except (OSError, ValueError, KeyError):
            return _rows(self.project, "prep", "ctffind", "micrographs_ctf.star", "micrographs")

    def save_state(self) -> None:
        if len(self.workers) > 1:
            atomic_write(auto_dir(self.project) / "state.json",
                         json.dumps({"proc_ctf": self.workers[1].seen}) + "\n")

    def scan(self) -> None:
        if not self.presence.present():
            return
        try:
            fresh = self.watcher.scan()
        except (InputError, OSError):
            if self.session.is_dir():   # not the folder going away under the scan: a real error
                raise
            return
        for number, name in enumerate(fresh, len(self.watcher.ready) - len(fresh) + 1):
            self.log(f"movie ready: {name} ({number} ready)", echo=False)
        if fresh:
            self.last_ready = time.monotonic()
            self.log(f"{len(self.watcher.ready)} movies ready (+{len(fresh)})")
        for name, reason in self.watcher.skipped.items():
            if self.reported_skips.get(name) != reason:
                self.log(f"skipped {name}: {reason}")
                self.reported_skips[name] = reason

    def done(self) -> bool:
        quiet = time.monotonic() - self.last_ready >= self.settings.idle_s
        return quiet and self.presence.gone_since is None and all(w.idle for w in self.workers)

    def stop_requested(self) -> bool:
        return (auto_dir(self.project) / STOP_FILE).exists()

    def failed(self) -> InputError | None:
        errors = [self.error, self.presence.error, *(w.error for w in self.workers)]
        return next((error for error in errors if error is not None), None)

    def failed_jobs(self) -> str:
        """The jobs of the schemes' last rounds that failed (after their retry), with why."""
        return describe_failed_jobs(self.project, [job for w in self.workers for job in w.failed_jobs])

    def step(self) -> None:
        """One scan of the session and one save of the state; a full disk ends the run."""
        try:
            self.scan()
            self.save_state()
        except OSError as err:
            if not is_disk_full(err):
                raise
            self.error = disk_full_error(self.project, f"writing {err.filename or 'the records of vitrify auto'}")
            self.log(str(self.error))

    def loop(self) -> str:
        """Scan until done, stopped or failed; returns ``finished`` | ``stopped`` | ``failed``."""
        for worker in self.workers:
            worker.start()
        while True:
            self.step()
            if self.failed() is not None:
                return "failed"
            if self.stop_requested() or any(w.stop.is_set() for w in self.workers):
                return "stopped"
            if self.done():
                return "finished"
            time.sleep(self.settings.poll_s)

    def shut_down(self) -> None:
        """Stop the threads; abort the schemes still in a round (their jobs are aborted too)."""
        for worker in self.workers:
            worker.stop.set()
        while any(w.is_alive() for w in self.workers):
            for worker in self.workers:
                if worker.in_round:
                    abort_scheme(self.project, worker.scheme)
                worker.join(timeout=1.0)
        self.save_state()


def _claim(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pid = _running_pid(folder)
    if pid is not None and pid != os.getpid():
        raise InputError(f"vitrify auto is already running on this project (pid {pid})", path=folder / PID_FILE,
                         expected="one vitrify auto per project: stop it first (vitrify auto --stop)")
    atomic_write(folder / PID_FILE, f"{os.getpid()}\n")
    (folder / STOP_FILE).unlink(missing_ok=True)


def _outcome(state: str, run: _Session, settings: AutoSettings) -> tuple[str, str]:
    """The end state and its message; a finished run whose last rounds left failed jobs is failed."""
    failed_jobs = run.failed_jobs()
    if state == "finished" and failed_jobs:
        return "failed", (f"no new movie for {settings.idle_s:g} s; jobs that failed: "
                          f"{failed_jobs}; the rest went on")
    return state, {"finished": f"no new movie for {settings.idle_s:g} s and nothing left to do",
                   "stopped": "stopped on request; run the same command again to continue",
                   "failed": str(run.failed())}[state]


def run_auto(session_dir: str | Path, project_dir: str | Path, prepare: Callable[[], object],
             settings: AutoSettings = AutoSettings(), proc_templates: Path | None = None,
             say: Callable[[str], None] = print, started: Callable[[], None] = lambda: None) -> AutoResult:
    """Process a session on the fly into ``project_dir`` (see the module docstring).

    ``prepare`` runs MDCatch on the first run (it sets the project up); ``proc_templates`` is the
    proc scheme folder that tells which stages can run (default: the project's, else vitrify's);
    ``started`` is called once the project is set up (the CLI starts the dashboard there).
    A ``KeyboardInterrupt`` stops the run cleanly (schemes aborted) and is then re-raised.
    """
    from vitrify.pipeline.schemes.templates_data import template_dir

    session, project = Path(session_dir), Path(project_dir)
    if not session.is_dir():
        raise InputError("session folder not found", path=session, expected="the folder the microscope writes into")
    proc = project / "Schemes" / "proc"
    stage = choose_stage(settings.until, proc_templates or (proc if proc.is_dir() else template_dir("proc")))
    folder = auto_dir(project)
    _claim(folder)
    log = _Log(folder / LOG_FILE, say)
    try:
        log(f"vitrify auto: {session} -> {project}, until stage {stage}, idle {settings.idle_s:g} s")
        pattern = set_up(project, session, prepare, stage, log)
        started()
        run = _Session(project, session, pattern, stage, settings, log)
        try:
            state = run.loop()
        except BaseException as err:   # Ctrl-C, the session folder gone: abort the schemes, then say why
            log(f"interrupted ({type(err).__name__}{': ' + str(err) if str(err) else ''}): stopping the schemes")
            run.shut_down()
            raise
        run.shut_down()
        state, message = _outcome(state, run, settings)
        log(f"vitrify auto {state}: {message}")
        return AutoResult(state, stage, message, len(run.watcher.ready), dict(run.watcher.skipped),
                          {w.scheme: [r.status for r in w.results] for w in run.workers})
    finally:
        (folder / PID_FILE).unlink(missing_ok=True)
        (folder / STOP_FILE).unlink(missing_ok=True)

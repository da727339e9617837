"""The schemer: walk a scheme's graph, execute operators, create and run its jobs.

``run_scheme(project_dir, "prep")`` runs ``Schemes/prep/scheme.star`` from its current node
until the graph ends (next node ``undefined``), an ``exit``/``exit_maxtime`` operator stops
it, an abort is requested (``Schemes/prep/RELION_JOB_ABORT_NOW``) or a job fails with nothing
independent of it left to do. RELION's prep and proc schemes loop through a ``wait`` operator
until ``exit_maxtime`` (48 h): with ``RunSettings(once=True)`` the run stops instead when it comes
back to a ``wait`` operator, i.e. after one pass over the data there now (the current node stays
at that operator, so a later run goes on watching). After every step the scheme (current node, variables, jobs) is
written back atomically, so a killed schemer resumes exactly where it was: an operator is
executed and its effect recorded in one write, and a job being created or run is recorded in
``schemer_state.json`` before and after it is created (never created or run twice).

Jobs (RELION ``prepareJob``): the template is re-read at every visit, ``$$variables``
substituted and job paths translated. Mode ``new`` makes a new job directory each visit;
mode ``continue`` continues the job it made before (``run_job(continue_=True)``) unless
the prepared options differ from that job's options: then it runs from scratch as a new job.

Beyond RELION: a failed job is run again ``RunSettings.retries`` times in the same visit (in its
own directory: a continue-mode job continues, keeping what it finished; a new-mode job starts
over) before it counts as failed, unless it failed on bad input (its ``run.err`` ends with the
one-line ``error: ...`` of an :class:`InputError`), which another run would not change. When a
job has failed, the walk goes on and skips only the jobs that read its outputs (directly or
through other skipped jobs); the scheme stops (status ``Failed``) when
it comes back to a failed job without any job having succeeded since the failure, or at once
with ``stop_on_failure``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.jobs.status import FINAL_STATUSES, JobStatus
from vitrify.pipeline.schemes import _state
from vitrify.pipeline.schemes._state import ResumeState, SchemeLog
from vitrify.pipeline.schemes.lock import SchemeLock
from vitrify.pipeline.schemes.model import UNDEFINED
from vitrify.pipeline.schemes.names import translate_job_names
from vitrify.pipeline.schemes.operators import OperatorContext, execute_operator
from vitrify.pipeline.schemes.star import read_scheme, write_scheme
from vitrify.pipeline.schemes.templates import (
    JobTemplate, prepare_options, read_template, referenced_jobs, template_path,
)

#: what a job node gives when it is not run because it reads a failed or skipped job's output
SKIPPED = "Skipped"


@dataclass(frozen=True)
class RunSettings:
    """How the schemer runs.

    Attributes
    ----------
    poll_s
        Seconds between job status checks.
    stop_on_failure
        Stop at the first failed job (RELION's behaviour) instead of going on with
        work that does not depend on it.
    max_failures
        Stop when one job node has failed this many times in a row.
    retries
        Run a failed job again this many times before counting it failed (``vitrify auto``: 1).
    abort_grace_s
        How long to wait for an aborted job to end before giving up on it.
    lock_timeout_s
        How long to wait for the scheme lock.
    echo
        Also print the log lines to stdout.
    once
        Stop (Succeeded) on coming back to a ``wait`` operator: one pass over the data present,
        instead of waiting for new data until the scheme's ``exit_maxtime``.
    """

    poll_s: float = 1.0
    stop_on_failure: bool = False
    max_failures: int = 3
    retries: int = 0
    abort_grace_s: float = 120.0
    lock_timeout_s: float = 5.0
    echo: bool = True
    once: bool = False

    def __post_init__(self) -> None:
        if (self.poll_s <= 0 or self.abort_grace_s < 0 or self.lock_timeout_s < 0 or self.max_failures < 1
                or self.retries < 0):
            raise InputError("poll_s must be > 0, max_failures >= 1, retries, abort_grace_s and "
                             "lock_timeout_s >= 0",
                             field="RunSettings", expected="positive numbers")


@dataclass(frozen=True)
class RunResult:
    """How a run ended: ``status`` Succeeded | Failed | Aborted, where, and why."""

    status: JobStatus
    current_node: str
    message: str
    failed_jobs: tuple[str, ...] = ()


def scheme_dir(project_dir: str | Path, name: str) -> Path:
    """``<project>/Schemes/<name>``."""
    return Path(project_dir) / "Schemes" / name


def run_scheme(project_dir: str | Path, name: str, settings: RunSettings = RunSettings(),
               project_factory: Callable[[Path], object] | None = None) -> RunResult:
    """Run scheme ``name`` of the project (holding its lock); return how it ended."""
    root = Path(project_dir).resolve()
    path = scheme_dir(root, name) / "scheme.star"
    if not path.exists():
        raise InputError(f"no scheme {name}", path=path, expected=f"Schemes/{name}/scheme.star")
    with SchemeLock(root, name, settings.lock_timeout_s):
        return _Runner(root, name, settings, project_factory).run()


def _open_project(root: Path) -> object:
    from vitrify.pipeline.project import Project

    return Project.open(root)


class _Runner:
    """One schemer run (state: the scheme, the operator context, failures seen)."""

    def __init__(self, root: Path, name: str, settings: RunSettings,
                 project_factory: Callable[[Path], object] | None) -> None:
        self.root, self.name, self.settings = root, name, settings
        self.dir = scheme_dir(root, name)
        self.path = self.dir / "scheme.star"
        self.log = SchemeLog(self.dir, settings.echo)
        self.scheme = read_scheme(self.path)
        self.ctx = OperatorContext(
            scheme=self.scheme, project_dir=root, log=self.log,
            translate=lambda value: translate_job_names(value, self.scheme, root),
            abort_requested=self.abort_requested, sleep_step_s=min(1.0, settings.poll_s))
        self._project_factory = project_factory or _open_project
        self._project = None
        self.state = _state.read_state(self.dir)
        self.failed: dict[str, str] = {}     # job node -> pipeline job that failed
        self.failures: dict[str, int] = {}   # job node -> failures in a row
        self.skipped: set[str] = set()
        self.progress = True                 # a job succeeded since the last failure

    # ---- helpers -------------------------------------------------------------------------
    @property
    def project(self):
        """The project (opened on first use: operator-only schemes never need it)."""
        if self._project is None:
            self._project = self._project_factory(self.root)
        return self._project

    def abort_requested(self) -> bool:
        """True once ``Schemes/<name>/RELION_JOB_ABORT_NOW`` exists."""
        return (self.dir / _state.ABORT_NOW).exists()

    def save(self) -> None:
        """Write scheme.star (current node, variables, jobs) atomically."""
        write_scheme(self.path, self.scheme)

    def set_state(self, state: ResumeState) -> None:
        self.state = state
        _state.write_state(self.dir, state)

    # ---- the walk ------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Walk from the current node until the scheme ends, stops, fails or is aborted."""
        _state.clear_exit_markers(self.dir)
        if self.scheme.current_node == UNDEFINED:
            self.scheme.current_node = self.scheme.start_node()
        self.log(f"scheme {self.name}: running from node {self.scheme.current_node}")
        while True:
            if self.abort_requested():
                return self.finish(JobStatus.ABORTED, "abort requested")
            node = self.scheme.current_node
            if node == UNDEFINED:
                return self.end_of_graph()
            if self.state.node and self.state.node != node:
                self.set_state(ResumeState())
            try:
                result = self.operator_step(node) if node in self.scheme.operators else self.job_step(node)
            except InputError as err:
                self.log(f"error at node {node}: {err}")
                return self.finish(JobStatus.FAILED, f"node {node}: {err}")
            if result is not None:
                return result

    def advance(self, node: str) -> None:
        self.scheme.current_node = self.scheme.next_node(node)
        self.save()
        self.log(f"  {node} -> {self.scheme.current_node}")

    def end_of_graph(self) -> RunResult:
        if self.failed:
            return self.finish(JobStatus.FAILED, "reached the end of the scheme; failed: "
                               + ", ".join(f"{k} ({v})" for k, v in self.failed.items()))
        return self.finish(JobStatus.SUCCEEDED, "reached the end of the scheme")

    def end_of_pass(self, node: str) -> RunResult:
        """``once``: back at a wait operator; Failed if a job of the pass failed."""
        if self.failed:
            return self.finish(JobStatus.FAILED, f"one pass done (--once), back at {node}; failed: "
                               + ", ".join(f"{k} ({v})" for k, v in self.failed.items()))
        return self.finish(JobStatus.SUCCEEDED, f"one pass done (--once): back at {node}")

    def finish(self, status: JobStatus, message: str) -> RunResult:
        self.save()
        _state.touch_exit_marker(self.dir, status)
        self.log(f"scheme {self.name}: {status.lower()} at node {self.scheme.current_node}: {message}")
        return RunResult(status, self.scheme.current_node, message, tuple(self.failed.values()))

    def operator_step(self, node: str) -> RunResult | None:
        operator = self.scheme.operators[node]
        if self.settings.once and operator.type == "wait" and self.ctx.last_wait is not None:
            return self.end_of_pass(node)
        if not execute_operator(self.ctx, operator):
            return self.finish(JobStatus.SUCCEEDED, f"stopped by {node} ({operator.type})")
        self.advance(node)
        return None

    def job_step(self, node: str) -> RunResult | None:
        if node in self.failed and not self.progress:
            return self.finish(JobStatus.FAILED, f"job {node} ({self.failed[node]}) failed and no work "
                                         "independent of it is left")
        status = self.run_job_node(node)
        for attempt in range(1, self.settings.retries + 1):
            if status != JobStatus.FAILED or self.failed_on_bad_input(node):
                break
            status = self.retry(node, attempt)
        if status == JobStatus.ABORTED:
            return self.finish(JobStatus.ABORTED, f"job {node} ({self.scheme.jobs[node].name}) was aborted")
        if status == JobStatus.FAILED:
            self.failed[node] = self.scheme.jobs[node].name
            self.failures[node] = self.failures.get(node, 0) + 1
            self.progress = False
            reason = self.failure_reason(self.failed[node])
            self.log(f"job {node} ({self.failed[node]}) failed{reason}")
            if self.settings.stop_on_failure or self.failures[node] >= self.settings.max_failures:
                return self.finish(JobStatus.FAILED, f"job {node} ({self.failed[node]}) failed "
                                             f"{self.failures[node]} time(s){reason}")
        self.advance(node)
        if status == JobStatus.SUCCEEDED:
            self.set_state(ResumeState())
        return None

    def retry(self, node: str, attempt: int) -> str:
        """Run the node's failed job again in its own directory (continue-mode jobs continue)."""
        job = self.scheme.jobs[node]
        self.log(f"job {node} ({job.name}) failed{self.failure_reason(job.name)}; "
                 f"retrying it ({attempt} of {self.settings.retries})")
        return self.launch(node, job.name, job.mode == "continue")

    def failed_on_bad_input(self, node: str) -> bool:
        """True when the node's job ended with a user error (``error: ...``): not worth a retry."""
        bad = self.failure_reason(self.scheme.jobs[node].name).startswith(": error:")
        if bad and self.settings.retries:
            self.log(f"job {node} ({self.scheme.jobs[node].name}) failed on bad input: not retried")
        return bad

    def failure_reason(self, job: str) -> str:
        try:
            lines = [ln for ln in (self.root / job / "run.err").read_text().splitlines() if ln.strip()]
        except OSError:
            return ""
        return f": {lines[-1].strip()}" if lines else ""

    # ---- job nodes -----------------------------------------------------------------------
    def run_job_node(self, node: str) -> str:
        """Run (or resume) the job of a job node; Succeeded | Failed | Aborted | Skipped."""
        template = read_template(template_path(self.root, self.scheme, node))
        resumed = self.resume(node, template)
        if resumed is not None:
            return resumed
        self.skipped.discard(node)
        blocked = referenced_jobs(template, self.scheme) & (set(self.failed) | self.skipped)
        if blocked:
            self.skipped.add(node)
            self.log(f"job {node}: skipped, it reads the output of failed or skipped "
                     f"{', '.join(sorted(blocked))}")
            return SKIPPED
        options = prepare_options(template, self.scheme, self.root)
        job, continue_ = self.choose_job(node, template, options)
        return self.launch(node, job, continue_)

    def launch(self, node: str, job: str, continue_: bool) -> str:
        self.log(f"job {node}: {'continuing' if continue_ else 'running'} {job}")
        self.set_state(ResumeState(node, job, continue_, launched_at_ns=time.time_ns()))
        self.project.run_job(job, continue_=continue_)
        return self.done(node, job, self.follow(job))

    def done(self, node: str, job: str, status: str) -> str:
        self.log(f"job {node}: {job} {status.lower()}")
        if status == JobStatus.SUCCEEDED:
            self.failed.pop(node, None)
            self.failures.pop(node, None)
            self.progress = True
        return status

    def resume(self, node: str, template: JobTemplate) -> str | None:
        """Pick up the job a killed or aborted schemer left at this node (None: start afresh)."""
        if self.state.node != node:
            return None
        job = self.state.job or self.adopt(node, template)
        if not job:
            return None
        try:
            status = self.project.job_status(job)
        except InputError:
            return None
        if status == JobStatus.RUNNING:
            self.log(f"job {node}: following {job}, still running")
            return self.done(node, job, self.follow(job))
        ended_ns = _state.marker_time_ns(self.root / job, status)
        if not self.state.launched_at_ns or ended_ns is None or ended_ns < self.state.launched_at_ns:
            return self.launch(node, job, self.state.continue_)   # not run in this visit yet
        if status == JobStatus.SUCCEEDED:
            self.log(f"job {node}: {job} had already finished")
            return self.done(node, job, status)
        return None

    def adopt(self, node: str, template: JobTemplate) -> str:
        """A job created for this node by a schemer killed before it recorded the name."""
        known = set(self.state.known_jobs)
        fresh = [r.name for r in self.project.jobs()
                 if r.name not in known and r.type_label == template.type_label]
        if not fresh:
            return ""
        job = self.scheme.jobs[node]
        job.name, job.has_started = fresh[-1], True
        self.save()
        self.set_state(ResumeState(node, fresh[-1]))
        return fresh[-1]

    def choose_job(self, node: str, template: JobTemplate, options: dict[str, str]) -> tuple[str, bool]:
        """Continue the node's previous job if allowed and unchanged, else create a new one."""
        job = self.scheme.jobs[node]
        if job.mode == "continue" and job.has_started and job.name != job.original_name:
            try:
                old = self.project.job_options(job.name)
            except InputError:
                old = None
            if old is not None:
                changed = sorted(k for k, v in options.items() if old.get(k) != v)
                if not changed:
                    self.set_state(ResumeState(node, job.name, True))
                    return job.name, True
                self.log(f"job {node}: options changed since {job.name} ran "
                         f"({', '.join(changed)}); running it as a new job")
        self.set_state(ResumeState(node, known_jobs=tuple(r.name for r in self.project.jobs())))
        name = self.project.add_job_from_star(template.path, options)
        job.name, job.has_started = name, True
        self.save()
        self.set_state(ResumeState(node, name))
        return name, False

    def follow(self, job: str) -> str:
        """Poll the job until it ends; pass on an abort request to it."""
        abort_deadline = None
        while True:
            status = self.project.job_status(job)
            if status in FINAL_STATUSES:
                return status
            if abort_deadline is None and self.abort_requested():
                self.log(f"abort requested: aborting {job}")
                self.project.abort_job(job)
                abort_deadline = time.monotonic() + self.settings.abort_grace_s
            if abort_deadline is not None and time.monotonic() > abort_deadline:
                return JobStatus.ABORTED
            time.sleep(self.settings.poll_s)

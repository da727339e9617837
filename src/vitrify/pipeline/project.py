"""A RELION-style project directory: jobs in ``JobType/jobNNN/`` and ``default_pipeline.star``.

:class:`Project` adds jobs (job.star, note.txt, the process and its input nodes), runs
them as detached ``vitrify run-job`` processes (or through a queue template), follows
them through RELION's exit markers and records their output nodes when they succeed.
Every change of default_pipeline.star happens under the pipeline lock and is written
atomically (:mod:`vitrify.pipeline._lock`), so several processes (a schemer, the CLI,
the jobs themselves) can share one project.

>>> import tempfile
>>> project = Project.open(tempfile.mkdtemp())
>>> name = project.add_job("relion.select", {"fn_mic": "CtfFind/job002/micrographs_ctf.star"})
>>> name, project.job_status(name).value
('Select/job001/', 'Scheduled')
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.jobs.base import clear_markers
from vitrify.jobs.status import ABORT_NOW, EXIT_FAILURE, FINAL_STATUSES, JobStatus
from vitrify.jobs.status import exit_marker_status as marker_status
from vitrify.jobs.registry import job_directory
from vitrify.pipeline import _aliases, _heartbeat, _launch, _notes
from vitrify.pipeline._jobstar import JobStar, check_options, read_job_star, write_job_star
from vitrify.pipeline._lock import PIPELINE_FILE, edit_pipeline, read_locked
from vitrify.pipeline._nodes import input_nodes, output_nodes, touch_node_markers
from vitrify.pipeline._pipeline_star import PipelineState, Process, normalise_job_name

POLL_S = 0.2
_JOB_NAME = re.compile(r"([A-Za-z0-9]+)/job(\d{3,})/")


@dataclass(frozen=True)
class JobRecord:
    """One job of the project as the pipeline records it."""

    name: str
    type_label: str
    alias: str | None
    status: JobStatus


class Project:
    """A project directory (use :meth:`open`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._children: dict[str, subprocess.Popen] = {}

    @classmethod
    def open(cls, root: str | Path) -> Project:
        """Open (creating the directory and default_pipeline.star if absent) a project."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise InputError("not a directory", path=root, expected="a project directory")
        root.mkdir(parents=True, exist_ok=True)
        project = cls(root)
        if not (project.root / PIPELINE_FILE).exists():
            with edit_pipeline(project.root):
                pass
        return project

    # ---- adding jobs -------------------------------------------------------------------------
    def add_job(self, type_label: str, options: dict[str, str], *, alias: str | None = None) -> str:
        """Create the next ``JobType/jobNNN/`` with job.star and note.txt; record it as Scheduled."""
        directory = job_directory(type_label)
        options = {str(k): str(v) for k, v in options.items()}
        check_options(options)
        with edit_pipeline(self.root) as state:
            number = state.job_counter
            while (self.root / f"{directory}/job{number:03d}").exists():
                number += 1
            name = f"{directory}/job{number:03d}/"
            alias_name = _aliases.check_alias(self.root, state, directory, alias)
            (self.root / name).mkdir(parents=True)
            write_job_star(self.root / name / "job.star", JobStar(type_label.strip(), options))
            state.processes[name] = Process(name, type_label.strip(), JobStatus.SCHEDULED, alias_name)
            for node, node_type in input_nodes(options, state.nodes):
                state.add_input(node, node_type, name)
            state.job_counter = number + 1
            if alias_name:
                _aliases.make_link(self.root, name, alias_name)
            _notes.write_job_pipeline(self.root, state, name)
        _notes.start_note(self.root, name, type_label.strip())
        return name

    def add_job_from_star(self, job_star: str | Path, overrides: dict[str, str] | None = None, *,
                          alias: str | None = None) -> str:
        """Add a job from a job.star template (e.g. ``Schemes/prep/ctffind/job.star``) with overrides."""
        job = read_job_star(self._path(job_star))
        options = dict(job.options)
        options.update({str(k): str(v) for k, v in (overrides or {}).items()})
        try:
            return self.add_job(job.type_label, options, alias=alias)
        except InputError as err:  # an unknown type or option comes from the job.star: name it
            raise err.with_path(self._path(job_star)) from None

    def register_job(self, name: str, type_label: str, options: dict[str, str]) -> bool:
        """Record job ``name`` (``CtfFind/job004/``, as a command's ``--o`` names it) with these options.

        A new process is added (Scheduled) when the pipeline lacks it; an existing one of the same
        type is continued: its job.star gets the new options and its input edges the new inputs.
        The job counter stays above NNN. Returns True when the process already existed.
        """
        name, directory = normalise_job_name(name), job_directory(type_label)
        match = _JOB_NAME.fullmatch(name)
        if match is None or match.group(1) != directory:
            raise InputError(f"{name} is not a {directory} job directory", path=self.root / name,
                             field="--o", expected=f"{directory}/jobNNN")
        options = {str(k): str(v) for k, v in options.items()}
        check_options(options)
        with edit_pipeline(self.root) as state:
            proc = state.processes.get(name)
            existed = proc is not None
            if existed:
                self._check_continuable(proc, type_label)
            state.processes[name] = proc = proc or Process(name, type_label.strip(), JobStatus.SCHEDULED)
            (self.root / name).mkdir(parents=True, exist_ok=True)
            write_job_star(self.root / name / "job.star", JobStar(proc.type_label, options))
            state.input_edges = [(n, p) for n, p in state.input_edges if p != name]
            for node, node_type in input_nodes(options, state.nodes):
                state.add_input(node, node_type, name)
            state.job_counter = max(state.job_counter, int(match.group(2)) + 1)
            _notes.write_job_pipeline(self.root, state, name)
        if not (self.root / name / "note.txt").exists():
            _notes.start_note(self.root, name, type_label.strip())
        return existed

    def _check_continuable(self, proc: Process, type_label: str) -> None:
        if job_directory(proc.type_label) != job_directory(type_label):
            raise InputError(f"{proc.name} is a {proc.type_label} job", path=self.root / proc.name,
                             field="--o", expected=f"a new {job_directory(type_label)}/jobNNN directory")
        if proc.status == JobStatus.RUNNING and marker_status(self.root / proc.name) is None \
                and self._known_alive(proc.name):
            raise InputError(f"job {proc.name} is still running", path=self.root / proc.name,
                             expected="it to finish or be aborted first")

    def set_alias(self, name: str, alias: str | None) -> None:
        """Give a job an alias (RELION's symlink ``JobType/alias`` → the job), or remove it."""
        with edit_pipeline(self.root) as state:
            proc = state.process(name, self.root / PIPELINE_FILE)
            directory = proc.name.split("/")[0]
            new = _aliases.check_alias(self.root, state, directory, alias, proc.name)
            _aliases.remove_link(self.root, proc.alias)
            proc.alias = new
            if new:
                _aliases.make_link(self.root, proc.name, new)

    # ---- running ---------------------------------------------------------------------------
    def run_job(self, name: str, *, continue_: bool = False, wait: bool = False) -> JobStatus:
        """Launch the job (detached, or through its queue template); return its status.

        ``wait=True`` blocks until an exit marker appears and returns the final status.
        """
        name = self._start(name, continue_)
        options = self.job_options(name)
        command = _launch.job_command(name, continue_)
        _notes.append_command(self.root, name, command)
        try:
            if _launch.wants_queue(options):
                output = _launch.submit_to_queue(self.root, name, options, command)
                _notes.append_text(self.root / name / "run.out", output)
            else:
                self._children[name] = _launch.launch_local(self.root, name, command)
                _notes.write_pid(self.root, name, self._children[name].pid)
        except InputError as err:
            _notes.append_text(self.root / name / "run.err", f"{err}\n")
            (self.root / name / EXIT_FAILURE).touch()
        return self.wait_job(name) if wait else self.job_status(name)

    def _start(self, name: str, continue_: bool) -> str:
        with edit_pipeline(self.root) as state:
            proc = state.process(name, self.root / PIPELINE_FILE)
            job_dir = self.root / proc.name
            if proc.status == JobStatus.RUNNING and marker_status(job_dir) is None and self._known_alive(proc.name):
                raise InputError(f"job {proc.name} is still running", path=job_dir,
                                 expected="it to finish or be aborted first")
            clear_markers(job_dir)
            _notes.clear_run_files(job_dir)
            job = read_job_star(job_dir / "job.star")
            if job.is_continue != continue_:
                write_job_star(job_dir / "job.star", JobStar(job.type_label, job.options, continue_))
            proc.status = JobStatus.RUNNING
        return proc.name

    def wait_job(self, name: str, timeout_s: float | None = None) -> JobStatus:
        """Poll until the job has a final status (or ``timeout_s`` passed); return the status."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = self.job_status(name)
            if status != JobStatus.RUNNING or (deadline is not None and time.monotonic() > deadline):
                return status
            time.sleep(POLL_S)

    def abort_job(self, name: str) -> None:
        """Ask a running job to stop (touches RELION_JOB_ABORT_NOW in its directory)."""
        proc = read_locked(self.root).process(name, self.root / PIPELINE_FILE)
        (self.root / proc.name / _notes.ABORT_REQUEST).touch()
        (self.root / proc.name / ABORT_NOW).touch()

    # ---- status ----------------------------------------------------------------------------
    def job_status(self, name: str) -> JobStatus:
        """Scheduled | Running | Succeeded | Failed | Aborted; updates the pipeline from exit markers."""
        self._reap_children()
        proc = read_locked(self.root).process(name, self.root / PIPELINE_FILE)
        status = self._observed_status(proc)
        if status != proc.status:
            status = self.record_status(proc.name, status)
        return status

    def _reap_children(self) -> None:
        """Collect the exit status of job processes that ended (no zombies pile up in a long schemer)."""
        for name, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[name]

    def _observed_status(self, proc: Process) -> JobStatus:
        job_dir = self.root / proc.name
        status = marker_status(job_dir)
        if status is not None or proc.status != JobStatus.RUNNING:
            return status or proc.status
        if not self._process_alive(proc.name):
            status = marker_status(job_dir)  # it may have written one just before exiting
            if status is None:
                _notes.append_text(job_dir / "run.err", "vitrify: the job process ended without an exit marker\n")
                (job_dir / EXIT_FAILURE).touch()
                status = JobStatus.FAILED
        return status or JobStatus.RUNNING

    def _known_alive(self, name: str) -> bool:
        """True only when a job process of ``name`` is known to be running."""
        beat = _heartbeat.alive(self.root / name, _notes.pid_alive)
        if beat is not None:
            return beat
        child = self._children.get(name)
        if child is not None:
            return child.poll() is None
        pid = _notes.read_pid(self.root, name)
        return pid is not None and _notes.pid_alive(pid)

    def _process_alive(self, name: str) -> bool:
        """False once the job's process is known to be gone (heartbeat, child, run.pid); else True."""
        beat = _heartbeat.alive(self.root / name, _notes.pid_alive)
        if beat is not None:
            return beat
        child = self._children.get(name)
        if child is not None:
            return child.poll() is None
        pid = _notes.read_pid(self.root, name)
        return True if pid is None else _notes.pid_alive(pid)

    def record_status(self, name: str, status: JobStatus | str) -> JobStatus:
        """Set a job's status in the pipeline; on Succeeded also record its output nodes.

        A final status (Succeeded, Failed, Aborted) is only recorded while its exit marker is
        still there: a process reporting an earlier run late never overwrites a rerun's Running.
        """
        status = JobStatus(status)
        with edit_pipeline(self.root) as state:
            proc = state.process(name, self.root / PIPELINE_FILE)
            if status in FINAL_STATUSES and marker_status(self.root / proc.name) != status:
                return proc.status  # a newer run cleared the marker this status was read from
            proc.status = status
            if status == JobStatus.SUCCEEDED:
                nodes = output_nodes(self.root, proc.name, proc.type_label)
                for node, node_type in nodes:
                    state.add_output(proc.name, node, node_type)
                touch_node_markers(self.root, nodes)
            _notes.write_job_pipeline(self.root, state, proc.name)
        return status

    def job_options(self, name: str) -> dict[str, str]:
        """The option values of a job's job.star (text, as written)."""
        proc = read_locked(self.root).process(name, self.root / PIPELINE_FILE)
        return dict(read_job_star(self.root / proc.name / "job.star").options)

    def job_inputs(self, name: str) -> list[str]:
        """Input node paths of a job (project-relative), in the order recorded."""
        state = read_locked(self.root)
        proc = state.process(name, self.root / PIPELINE_FILE)
        return [node for node, target in state.input_edges if target == proc.name]

    def job_outputs(self, name: str) -> list[str]:
        """Output node paths recorded for a job (after it succeeded)."""
        state = read_locked(self.root)
        proc = state.process(name, self.root / PIPELINE_FILE)
        return [node for source, node in state.output_edges if source == proc.name]

    def jobs(self) -> list[JobRecord]:
        """Every job in pipeline order, with up-to-date status."""
        records = []
        for proc in list(read_locked(self.root).processes.values()):
            status = self.job_status(proc.name) if proc.status == JobStatus.RUNNING else proc.status
            records.append(JobRecord(proc.name, proc.type_label, proc.alias, status))
        return records

    def pipeline(self) -> PipelineState:
        """A snapshot of default_pipeline.star (processes, nodes, edges)."""
        return read_locked(self.root)

    def _path(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_absolute() or not path.exists() or (self.root / path).exists():
            return path if path.is_absolute() else self.root / path
        return path.resolve()


__all__ = ["JobRecord", "Project", "marker_status", "normalise_job_name"]

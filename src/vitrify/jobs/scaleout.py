"""Per-micrograph work on an existing engine: this process, or a Dask cluster.

The preprocessing jobs hand :func:`map_items` one function and their items (movies or
micrographs). Where the function runs is chosen by :class:`ParallelOptions` alone, so the same
per-micrograph function runs in every case:

- ``workers 1`` (the default): in the job process, one item after another, as before;
- ``workers N`` (N > 1): on a ``dask.distributed`` LocalCluster of N single-threaded worker
  processes on this machine (at most one per usable CPU and per item; 1 runs in the job
  process), each with ``usable CPUs // N`` torch threads;
- ``scheduler tcp://HOST:PORT``: on a running Dask cluster (``dask scheduler`` +
  ``dask worker``), which must share the project folder (checked before any item is sent);
- ``scheduler jobqueue[:FACILITY.toml]``: on a dask-jobqueue cluster (SLURM/PBS/SGE/LSF) named by
  the ``[dask]`` section of the facility file (default ``$VITRIFY_FACILITY_CONFIG``),
  scaled to ``workers`` batch jobs.

The job process keeps the duties it has without Dask: it reads the inputs, gathers the
results in input order and writes the STAR files atomically. A task's :class:`InputError`
is a skipped item (as in the serial loop), its log records are replayed into the job's
``run.log``; a worker that dies mid-task has its task run again by the scheduler (Dask's
``distributed.scheduler.allowed-failures``); per-item outputs already on disk are kept by the
functions themselves, so a killed job run again finishes only what is missing. Dask is
imported only when a cluster is used.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vitrify.io.errors import InputError

#: scheduler address schemes Dask's comms understand
ADDRESS_SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://")
JOBQUEUE = "jobqueue"
_SCHEDULER_FIELD = "vitrify_parallel.scheduler"
_INSTALL = "pip install 'dask[distributed]'"


@dataclass(frozen=True)
class ParallelOptions:
    """Where a job's per-micrograph tasks run (see the module text).

    Parameters
    ----------
    workers
        1: in the job process; N > 1: a LocalCluster of N worker processes; with
        ``scheduler = "jobqueue"``: the number of batch jobs to start. RELION's ``nr_mpi``.
    scheduler
        Empty, a Dask scheduler address (``tcp://HOST:PORT``), ``jobqueue`` or ``jobqueue:PATH``.
    """

    workers: int = 1
    scheduler: str = ""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise InputError(f"{self.workers} workers", field="nr_mpi", expected="1 or more")
        plain = self.scheduler.strip()
        if plain and not (plain.startswith(ADDRESS_SCHEMES) or plain == JOBQUEUE
                          or plain.startswith(JOBQUEUE + ":")):
            raise InputError(f"scheduler {plain!r}", field=_SCHEDULER_FIELD,
                             expected="tcp://HOST:PORT, jobqueue or jobqueue:FACILITY.toml")

    @property
    def distributed(self) -> bool:
        """True when the tasks go to a Dask cluster."""
        return self.workers > 1 or bool(self.scheduler.strip())


@dataclass(frozen=True)
class Outcome:
    """What one item gave: ``value``, or ``skipped`` (the InputError text); the worker's log
    ``records`` (level, message) when it ran elsewhere."""

    index: int
    value: Any = None
    skipped: str = ""
    records: tuple[tuple[int, str], ...] = ()


def _outcome(function: Callable[[Any, Any], Any], index: int, item: Any, shared: Any) -> Outcome:
    try:
        return Outcome(index, function(item, shared))
    except InputError as err:
        return Outcome(index, skipped=str(err))


# ---------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {"threads": None}


class _Records(logging.Handler):
    """Collects the records this thread logs under ``vitrify`` while a task runs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.thread = threading.get_ident()
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.records.append((record.levelno, record.getMessage()))


def project_problem(root: str, probe: str = "", token: str = "") -> str:
    """Why this process cannot work in project folder ``root`` (empty: it can).

    ``probe`` (relative to ``root``) is a file the job process wrote with text ``token``: a
    folder of the same name on an unshared disk does not have it.
    """
    here = socket.gethostname()
    if not os.path.isdir(root):
        return f"{here} has no folder {root}"
    if probe:
        try:
            seen = (Path(root) / probe).read_text()
        except OSError:
            seen = ""
        if seen != token:
            return f"{here} does not see the files the job writes in {root} (not the same file system)"
    return ""


def _enter_project(root: str, threads: int) -> None:
    """Work from ``root`` (paths in STAR files are project-relative) with ``threads`` torch threads."""
    problem = project_problem(root)
    if problem:
        raise InputError(f"a Dask worker cannot work in the project: {problem}", path=root,
                         expected="the project folder on a file system shared with every worker")
    if os.getcwd() != root:
        os.chdir(root)
    if threads and _WORKER["threads"] != threads:
        from vitrify.core.threads import configure_threads

        configure_threads(threads)
        _WORKER["threads"] = threads


def run_task(function: Callable[[Any, Any], Any], index: int, item: Any, shared: Any, root: str,
             threads: int) -> Outcome:
    """One item on a Dask worker: in the project folder, with its log records (INFO and up) collected."""
    _enter_project(root, threads)
    handler = _Records()
    logger = logging.getLogger("vitrify")
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        outcome = _outcome(function, index, item, shared)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return replace(outcome, records=tuple(handler.records))


# ---------------------------------------------------------------- job side


def _dask_import():
    try:
        import distributed
    except ImportError:
        raise InputError("Dask is not installed", field="nr_mpi / --workers, --scheduler",
                         expected=f"dask and distributed ({_INSTALL}), or 1 worker") from None
    return distributed


def _connect_timeout_s() -> float:
    import dask.config
    from dask.utils import parse_timedelta

    return float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect")))


def _connect(address: str):
    """A Client of the scheduler at ``address``; InputError when it does not answer in time."""
    distributed = _dask_import()
    timeout = _connect_timeout_s()
    try:
        client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise InputError(f"no Dask scheduler answered at {address} within {timeout:g} s ({type(err).__name__})",
                         field=_SCHEDULER_FIELD, expected="the address of a running dask scheduler") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        client.close()
        raise InputError(f"the Dask scheduler at {address} has no worker (waited {timeout:g} s)",
                         field=_SCHEDULER_FIELD, expected="a scheduler with workers (dask worker ADDRESS)") from None
    return client


def _local_cluster(workers: int):
    distributed = _dask_import()
    return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None, silence_logs=logging.ERROR, scheduler_port=0)


def _jobqueue_cluster(scheduler: str, workers: int):
    from vitrify.io.facility import load_facility_config

    path = scheduler.partition(":")[2] or None
    config = load_facility_config(path)
    if config.dask is None:
        raise InputError("no [dask] section", path=config.path or "(no facility file)", field="[dask]",
                         expected="a facility TOML with a [dask] section (--scheduler jobqueue:FILE or "
                                  "$VITRIFY_FACILITY_CONFIG)")
    cluster = jobqueue_cluster(config.dask)
    cluster.scale(jobs=workers)
    return cluster


#: batch system → (dask_jobqueue class, GPU directive with {n})
JOBQUEUE_SYSTEMS = {"slurm": ("SLURMCluster", "--gres=gpu:{n}"), "pbs": ("PBSCluster", "-l ngpus={n}"),
                    "sge": ("SGECluster", "-l gpu={n}"), "lsf": ("LSFCluster", "-gpu num={n}")}


def jobqueue_cluster(config):
    """The dask-jobqueue cluster of a facility ``[dask]`` section (:class:`vitrify.io.facility.DaskConfig`);
    nothing is submitted until it is scaled."""
    _dask_import()
    try:
        import dask_jobqueue
    except ImportError:
        raise InputError(f"the [dask] section names a {config.system} cluster but dask-jobqueue is not installed",
                         field="[dask] system", expected="pip install 'vitrify[jobqueue]'") from None
    name, gpu = JOBQUEUE_SYSTEMS[config.system]
    extra = list(config.job_extra) + ([gpu.format(n=config.gpus)] if config.gpus else [])
    kwargs: dict[str, Any] = {"cores": config.cores, "processes": config.processes, "memory": config.memory,
                              "walltime": config.walltime, "job_extra_directives": extra,
                              "scheduler_options": {"dashboard_address": None,
                                                    **({"interface": config.interface} if config.interface else {})}}
    if config.queue:
        kwargs["queue"] = config.queue
    if config.account:
        kwargs["account" if config.system in ("slurm", "pbs") else "project"] = config.account
    if config.python:
        kwargs["python"] = config.python
    return getattr(dask_jobqueue, name)(**kwargs)


def local_workers(parallel: ParallelOptions, n_items: int) -> int:
    """Worker processes of a LocalCluster: ``workers``, at most one per usable CPU and per item
    (more would only wait for each other)."""
    from vitrify.core.threads import usable_cpus

    return max(1, min(parallel.workers, usable_cpus(), n_items))


@contextmanager
def open_client(parallel: ParallelOptions, n_items: int) -> Iterator[tuple[Any, int]]:
    """A Dask client for ``parallel`` and the torch threads each task should use (0: the worker's own)."""
    scheduler = parallel.scheduler.strip()
    if scheduler and not scheduler.startswith(JOBQUEUE):
        client = _connect(scheduler)
        try:
            yield client, 0
        finally:
            client.close()
        return
    from vitrify.core.threads import usable_cpus

    jobqueue = scheduler.startswith(JOBQUEUE)
    workers = parallel.workers if jobqueue else local_workers(parallel, n_items)
    cluster = _jobqueue_cluster(scheduler, workers) if jobqueue else _local_cluster(workers)
    try:
        client = _dask_import().Client(cluster, set_as_default=False)
        try:
            yield client, 0 if jobqueue else max(1, usable_cpus() // workers)
        finally:
            client.close()
    finally:
        _close(cluster)


def _close(cluster) -> None:
    """Close a cluster; a batch-queue cluster whose jobs never started may fail to close (its
    scheduler is ended with this process): logged, not raised over the job's own outcome."""
    try:
        cluster.close()
    except Exception as err:  # noqa: BLE001 (dask-jobqueue's close of never-started jobs)
        logging.getLogger("vitrify").warning("closing the Dask cluster: %s: %s", type(err).__name__, err)


def check_workers(client, root: str, job_dir: Path) -> int:
    """Number of workers; InputError when one of them cannot see the project (shared file system).

    The job writes a probe file with a random text in ``job_dir``; every worker must read it back
    at the same path. Workers that join later are checked as their first task starts.
    """
    token = uuid.uuid4().hex
    probe = job_dir / f".vitrify_probe_{token[:8]}"
    probe.write_text(token)
    try:
        answers = client.run(project_problem, root, os.path.relpath(probe.resolve(), root), token)
    finally:
        probe.unlink(missing_ok=True)
    bad = {worker: text for worker, text in answers.items() if text}
    if bad:
        worker, text = next(iter(bad.items()))
        raise InputError(f"{len(bad)} of {len(answers)} Dask worker(s) cannot work in the project; "
                         f"{worker}: {text}", path=root,
                         expected="the project folder on a file system shared with every worker")
    return len(answers)


def _replay(outcome: Outcome, log: logging.Logger) -> None:
    for level, message in outcome.records:
        log.log(level, "%s", message)


def _gather(client, futures: list, description: str, job_dir: Path, log: logging.Logger) -> list[Outcome]:
    from vitrify._progress import track
    from vitrify.jobs.base import check_abort

    distributed = _dask_import()
    done: list[Outcome] = []
    try:
        for future in track(distributed.as_completed(futures, loop=client.loop), description, total=len(futures)):
            outcome = future.result()
            _replay(outcome, log)
            done.append(outcome)
            check_abort(job_dir)
    except BaseException:
        client.cancel(futures)
        raise
    _log_reruns(client, [f.key for f in futures], log)
    return sorted(done, key=lambda o: o.index)


def count_reruns(keys: list, dask_scheduler=None) -> int:
    """On the scheduler: how many of the tasks ``keys`` were running on a worker that died."""
    tasks = dask_scheduler.tasks
    return sum(1 for key in keys if key in tasks and tasks[key].suspicious > 0)


def _log_reruns(client, keys: list, log: logging.Logger) -> None:
    try:
        reruns = client.run_on_scheduler(count_reruns, keys)
    except Exception as err:  # a remote scheduler without vitrify installed cannot tell
        log.info("could not ask the scheduler about lost workers (%s)", type(err).__name__)
        return
    if reruns:
        log.warning("%d task(s) were on a worker that died and ran again", reruns)


def _wait_for_batch_workers(client, job_dir: Path, log: logging.Logger, poll_s: float = 10.0) -> None:
    """Wait (as long as the queue takes) for the first batch job's worker; abort requests still count."""
    from vitrify.jobs.base import check_abort

    log.info("waiting for the first batch-queue worker")
    while True:
        check_abort(job_dir)
        try:
            client.wait_for_workers(1, timeout=poll_s)
            return
        except TimeoutError:
            continue


def _map_on_cluster(function, items: Sequence, shared: Any, parallel: ParallelOptions, job_dir: Path,
                    description: str, log: logging.Logger) -> list[Outcome]:
    root = os.getcwd()
    with open_client(parallel, len(items)) as (client, threads):
        if parallel.scheduler.strip().startswith(JOBQUEUE):
            _wait_for_batch_workers(client, job_dir, log)
        n = check_workers(client, root, job_dir)
        log.info("%d item(s) on %d Dask worker(s) of %s", len(items), n, client.scheduler.address)
        [shared_future] = client.scatter([shared], broadcast=True, hash=False)
        tag = uuid.uuid4().hex[:8]
        futures = [client.submit(run_task, function, i, item, shared_future, root, threads, pure=False,
                                 key=f"{description.replace(' ', '-').lower()}-{tag}-{i}")
                   for i, item in enumerate(items)]
        return _gather(client, futures, description, job_dir, log)


def map_items(function: Callable[[Any, Any], Any], items: Sequence, shared: Any, parallel: ParallelOptions,
              job_dir: str | Path, description: str, log: logging.Logger | None = None) -> list[Outcome]:
    """``function(item, shared)`` for every item, here or on a Dask cluster; outcomes in input order.

    ``function`` must be a module-level function (it is pickled to the workers) that returns a
    picklable value, writes its own outputs atomically and raises InputError to skip an item;
    ``shared`` is sent to every worker once. An abort request (RELION_JOB_ABORT_NOW) stops the
    job between items (outstanding tasks are cancelled).
    """
    from vitrify._progress import track
    from vitrify.jobs.base import check_abort

    job_dir = Path(job_dir)
    log = log or logging.getLogger(f"vitrify.job.{job_dir.resolve()}")
    if parallel.scheduler.strip() or (parallel.workers > 1 and local_workers(parallel, len(items)) > 1):
        return _map_on_cluster(function, items, shared, parallel, job_dir, description, log)
    if parallel.workers > 1:
        log.info("%d workers asked for, but %d item(s) on %d usable CPU(s): running in this process",
                 parallel.workers, len(items), local_workers(parallel, 10 ** 9))
    outcomes = []
    for i in track(range(len(items)), description):
        check_abort(job_dir)
        outcomes.append(_outcome(function, i, items[i], shared))
    return outcomes


__all__ = ["JOBQUEUE_SYSTEMS", "Outcome", "ParallelOptions", "check_workers", "count_reruns", "jobqueue_cluster",
           "local_workers", "map_items", "open_client", "project_problem", "run_task"]

"""CPU thread policy of a vitrify process: one place, applied before torch starts its pool.

On a shared machine (the schemer runs several jobs at once; RELION beside vitrify) two
things make a torch CPU job burn several times its CPU time:

* **busy-waiting pools.** torch's CPU wheel parallelises through GNU OpenMP (libgomp, MKL's FFT
  included). By default a libgomp thread that reaches a barrier spins (``GOMP_SPINCOUNT``
  300,000 pause loops) before it sleeps. When another process holds one of the cores, the
  thread the barrier waits for is descheduled and its partner spins through whole time slices:
  measured on 2 cores beside other work, 20 class2d iterations took 118-141 CPU s spinning and
  26-30 CPU s with ``OMP_WAIT_POLICY=PASSIVE`` (one thread: 25-29 CPU s). vitrify sets PASSIVE
  with a short spin (``GOMP_SPINCOUNT`` :data:`SPIN_COUNT`): no spin at all cost ~20 % wall time
  on an idle machine (a wake-up per parallel region).
  libgomp reads its environment once, when it is loaded (``import torch``), so the policy
  is set in the environment before that: :func:`apply_thread_env` at the top of
  ``vitrify.cli.main.main`` (every ``vitrify`` command and ``vitrify run-job``).
* **oversubscription.** Pools sized from the machine's CPU count, not from the CPUs the
  process may use (its affinity mask, a cgroup CPU quota).

:func:`configure_threads` (called by :func:`vitrify.jobs.base.run_job` for every job) sizes
torch's pool from :func:`usable_cpus` and the job's own ``threads`` setting. An explicit
``OMP_WAIT_POLICY`` / ``OMP_NUM_THREADS`` in the environment is left alone (set
``OMP_WAIT_POLICY=ACTIVE`` on a machine a job has to itself to get the spinning back).

This module imports nothing heavy: torch is touched only if the process has already loaded it.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

#: Environment set before the OpenMP / BLAS runtimes load (values that are already set stay).
WAIT_POLICY = "PASSIVE"
#: pause loops a libgomp thread spins at a barrier before it sleeps (libgomp's default: 300,000;
#: PASSIVE alone: 0). A short spin (~30 µs) catches the next parallel region of a busy job without
#: a wake-up: on 1bd2_snr02 (class2d, RELION's settings, 2 cores, 2026-12-06) 137 CPU s / 80 s wall
#: alone against 158 / 97 with no spin, and 1.16x its CPU beside a 2-process CPU hog (no spin:
#: 0.93x; libgomp's default: 8.4x beside one RELION process).
SPIN_COUNT = "3000"
_COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_STATE: dict[str, bool | None] = {"torch_loaded_first": None}  # set by the first apply_thread_env


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _quota_v2(text: str) -> float | None:
    """CPUs allowed by a cgroup-v2 ``cpu.max`` line (``"max 100000"`` or ``"200000 100000"``)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    return int(parts[0]) / max(int(parts[1]), 1)


def _cgroup_dirs(root: Path, proc_cgroup: str) -> list[Path]:
    """The process's cgroup-v2 directory and its ancestors (a quota anywhere up the tree binds)."""
    for line in proc_cgroup.splitlines():
        hierarchy, _, path = line.partition("::")
        if hierarchy == "0" and path:
            here = root / path.strip().lstrip("/")
            return [here, *[p for p in here.parents if p.is_relative_to(root)]]
    return [root]


def cgroup_cpu_limit(root: Path = _CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """CPUs the process's cgroup quota allows (cgroup v2 ``cpu.max``, else v1 CFS quota), or None."""
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            proc_cgroup = ""
    limits = []
    for folder in _cgroup_dirs(root, proc_cgroup):
        try:
            limit = _quota_v2((folder / "cpu.max").read_text())
        except (OSError, ValueError):
            continue
        if limit is not None:
            limits.append(limit)
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            limits.append(quota / period)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (rounded up)."""
    cpus = _affinity_cpus()
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota - 1e-9)))
    return max(cpus, 1)


def _env_count() -> int:
    try:
        return int(os.environ.get("OMP_NUM_THREADS", "0").split(",")[0])
    except ValueError:
        return 0


def thread_count(requested: int = 0) -> int:
    """Threads for a job: ``requested``, else ``OMP_NUM_THREADS``, else every usable CPU; never
    more than :func:`usable_cpus` (more threads than CPUs only adds barrier waits)."""
    usable = usable_cpus()
    wanted = requested if requested > 0 else _env_count()
    return usable if wanted <= 0 else min(int(wanted), usable)


def _replace_count(value: str, requested: int) -> bool:
    """A pool size in the environment yields to a job's own setting and never exceeds the usable CPUs."""
    try:
        return requested > 0 or int(value.split(",")[0]) > usable_cpus()
    except ValueError:
        return True


def apply_thread_env(requested: int = 0) -> dict[str, str]:
    """Set the OpenMP / BLAS environment; returns what it set.

    Names already set stay, except pool sizes when ``requested`` (a job's own setting) is given
    or when they exceed :func:`usable_cpus`. Must run before torch (libgomp) is imported for the
    wait policy to take effect; pool sizes are applied again at run time by :func:`configure_threads`.
    """
    if _STATE["torch_loaded_first"] is None:
        _STATE["torch_loaded_first"] = "torch" in sys.modules and "OMP_WAIT_POLICY" not in os.environ
    wanted = {"OMP_WAIT_POLICY": WAIT_POLICY, **dict.fromkeys(_COUNT_VARS, str(thread_count(requested)))}
    if "OMP_WAIT_POLICY" not in os.environ:  # a user's own policy keeps its own spin
        wanted["GOMP_SPINCOUNT"] = SPIN_COUNT
    applied = {name: value for name, value in wanted.items()
               if name not in os.environ or (name in _COUNT_VARS and _replace_count(os.environ[name], requested))}
    os.environ.update(applied)
    return applied


@dataclass(frozen=True)
class ThreadPolicy:
    """What a process runs with: ``threads`` of ``usable`` CPUs, the OpenMP wait policy, and
    whether torch was loaded before the policy reached the environment (then libgomp spins)."""

    threads: int
    usable: int
    wait_policy: str
    torch_loaded_first: bool

    def describe(self) -> str:
        """One line for a job's run.log."""
        late = "; torch was imported before the wait policy was set, so it is not in effect" \
            if self.torch_loaded_first else ""
        return f"{self.threads} CPU threads of {self.usable} usable, OpenMP wait policy {self.wait_policy}{late}"


def configure_threads(requested: int = 0) -> ThreadPolicy:
    """Apply the thread policy for a job: environment, then torch's pool if torch is loaded.

    ``requested`` is the job's ``threads`` setting (0: every usable CPU). Torch's inter-op
    pool is left alone: it sleeps on a condition variable and vitrify does not use it.
    """
    apply_thread_env(requested)
    torch = sys.modules.get("torch")
    threads = thread_count(requested)
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return ThreadPolicy(threads, usable_cpus(), os.environ.get("OMP_WAIT_POLICY", "unset"),
                        bool(_STATE["torch_loaded_first"]))


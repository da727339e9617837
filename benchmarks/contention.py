"""Contention benchmark: any vitrify jobs, alone and then beside a CPU hog, as `vitrify run-job` runs them.

Usage::

    python benchmarks/contention.py PROJECT_DIR JOB_STAR [JOB_STAR ...] [--hog-procs 2] [--repeat 1]
        [--spin]   # also with OMP_WAIT_POLICY=ACTIVE (libgomp spinning: torch's default before the policy)

Each job runs again from its ``job.star`` (``python -m vitrify run-job --job JOB_STAR`` in
``PROJECT_DIR``; everything else in the job directory is deleted first, so that the job redoes its
work instead of finding its outputs), first alone and then beside
``--hog-procs`` busy processes on the same CPUs (started and stopped here), back to back.
CPU time is the job process's user + system time (``os.wait4``). Prints one table with the ratios.
Make a project with the commands of the README ("Run jobs by hand").
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _anchor import CpuHog  # noqa: E402


def clear_outputs(job_star: Path) -> None:
    """Delete everything in the job directory but ``job.star``."""
    for entry in job_star.parent.iterdir():
        if entry != job_star:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def run_once(project: Path, job_star: str, env: dict[str, str]) -> tuple[float, float]:
    """(CPU s, wall s) of one ``vitrify run-job`` from a job directory holding only its job.star."""
    clear_outputs(project / job_star)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "vitrify", "-q", "run-job", "--job", job_star], cwd=project,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{job_star} failed:\n{proc.stderr.read().decode()}")
    return usage.ru_utime + usage.ru_stime, wall


def main() -> None:
    """Run the jobs alone and beside the hog; print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("project")
    p.add_argument("jobs", nargs="+", help="job.star files, relative to the project")
    p.add_argument("--hog-procs", type=int, default=2, help="busy processes beside the job (default 2)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each (best CPU time kept)")
    p.add_argument("--spin", action="store_true", help="also with OMP_WAIT_POLICY=ACTIVE (the spinning default)")
    args = p.parse_args()
    project = Path(args.project)
    policies = {"vitrify": {}} | ({"spin (OMP_WAIT_POLICY=ACTIVE)": {"OMP_WAIT_POLICY": "ACTIVE"}} if args.spin else {})
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs "
          f"({len(os.sched_getaffinity(0))} usable), load {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"hog: {args.hog_procs} busy process(es)", flush=True)
    print("\n| job | policy | CPU s alone | CPU s beside hog | CPU ratio | wall s alone | wall s beside hog | "
          "wall ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for job in args.jobs:
        for label, extra in policies.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))} | extra
            alone = min(run_once(project, job, env) for _ in range(args.repeat))
            with CpuHog(args.hog_procs):
                hog = min(run_once(project, job, env) for _ in range(args.repeat))
            print(f"| {job} | {label} | {alone[0]:.1f} | {hog[0]:.1f} | {hog[0] / alone[0]:.2f} | {alone[1]:.1f} | "
                  f"{hog[1]:.1f} | {hog[1] / alone[1]:.2f} |", flush=True)
    print(f"# done {time.strftime('%H:%M UTC', time.gmtime())}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

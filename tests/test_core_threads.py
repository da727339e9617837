"""CPU thread policy (vitrify.core.threads): pools sized from the usable CPUs, no busy-waiting."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from vitrify.core import threads
from vitrify.jobs.base import run_job

SRC = str(Path(threads.__file__).resolve().parents[2])
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="affinity and libgomp: Linux")


def _python(code: str, cpus: set[int] | None = None, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (vitrify on the path, no inherited OpenMP settings)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "MKL_", "OPENBLAS_"))}
    clean.update(PYTHONPATH=SRC + os.pathsep + clean.get("PYTHONPATH", ""), **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=clean, capture_output=True,
                          text=True, check=True, timeout=120,
                          preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)


@linux_only
def test_cli_entry_sets_policy_before_torch_from_a_restricted_affinity():
    """`vitrify` (cli.main.main) puts the policy in the environment before any command loads torch;
    torch's pool then has one thread per CPU of the affinity mask, even where OMP_NUM_THREADS asks more."""
    one_cpu = {min(os.sched_getaffinity(0))}
    out = _python("""
        import json, os, sys
        from vitrify.cli.main import main
        try:
            main(["--version"])
        except SystemExit:
            pass
        assert "torch" not in sys.modules
        import torch
        print(json.dumps({"threads": torch.get_num_threads(), "policy": os.environ.get("OMP_WAIT_POLICY"),
                          "mkl": os.environ.get("MKL_NUM_THREADS")}))
        """, cpus=one_cpu, OMP_NUM_THREADS="8")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"threads": 1, "policy": "PASSIVE", "mkl": "1"}


@linux_only
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs for a 2-thread pool")
def test_policy_stops_idle_threads_from_spinning():
    """Short parallel ops with gaps: spinning workers burn CPU in every gap, sleeping ones do not.

    The op is small (~0.1 ms) so the spin after it, not the op, dominates the CPU time: a large op
    makes the comparison depend on the machine's load (seen: 0.36 vs 0.42 s with 2M elements).
    """
    code = """
        import os, sys, time
        if sys.argv[-1] == "policy":
            from vitrify.core.threads import apply_thread_env
            apply_thread_env()
        import torch
        torch.set_num_threads(2)
        x = torch.randn(200_000)
        c0 = time.process_time()
        for _ in range(200):
            y = x * 2.0 + 1.0
            time.sleep(0.002)
        print(time.process_time() - c0)
        """
    cpu = {}
    for mode in ("policy", "spin"):
        cpu[mode] = float(subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), mode], capture_output=True, text=True, check=True,
            env={**{k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))},
                 "PYTHONPATH": SRC}, timeout=120).stdout.split()[-1])
    assert cpu["policy"] < 0.6 * cpu["spin"], cpu


@dataclass(frozen=True)
class _Opts:
    threads: int = 1


def test_run_job_sizes_torch_pool_from_the_job_setting(tmp_path):
    before = torch.get_num_threads()
    seen = {}

    def run(options, job_dir):
        seen["threads"] = torch.get_num_threads()

    try:
        run_job(run, _Opts(threads=1), tmp_path / "job")
        assert seen["threads"] == 1
        run_job(run, _Opts(threads=10_000), tmp_path / "job")  # capped at the usable CPUs
        assert seen["threads"] == threads.usable_cpus()
    finally:
        torch.set_num_threads(before)
    log = (tmp_path / "job" / "run.log").read_text()
    assert f"{threads.usable_cpus()} CPU threads of {threads.usable_cpus()} usable" in log


def test_cgroup_quota_caps_cpus(tmp_path):
    group = tmp_path / "user.slice" / "job"
    group.mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "user.slice" / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs, one level up
    (group / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path, "0::/user.slice/job\n") == pytest.approx(1.5)
    assert threads.cgroup_cpu_limit(tmp_path, "0::/\n") is None
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path, "0::/user.slice/job\n") == pytest.approx(0.5)


def test_short_spin_is_set_only_with_vitrify_s_own_wait_policy(monkeypatch):
    """PASSIVE + a short spin by default; a user's own OMP_WAIT_POLICY keeps libgomp's spin for it."""
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", *threads._COUNT_VARS):  # restored after the test
        monkeypatch.delenv(name, raising=False)
    applied = threads.apply_thread_env()
    assert applied["OMP_WAIT_POLICY"] == "PASSIVE" and applied["GOMP_SPINCOUNT"] == threads.SPIN_COUNT
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT")
    applied = threads.apply_thread_env()
    assert "OMP_WAIT_POLICY" not in applied and "GOMP_SPINCOUNT" not in applied
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in os.environ

"""class2d part of benchmarks/scaleout.py: 1 process vs torchrun ranks, bytes, memory, cost model.

:func:`class2d_runs` simulates particles and runs class2d (EM) as one process of 2 threads and as 2
torchrun ranks (gloo) of 1 thread, each through ``_peak_rss.py`` (peak resident memory per process),
and, given the ``src`` folder of an older vitrify, the 2 ranks again with that code (before the
particles were sharded). Rank 0's run.log gives the bytes all-reduced per iteration, the bytes
gathered to rank 0 per written iteration and each iteration's window radius, from which
:func:`sums_bytes` (the E-step sums' size) is checked. :func:`class2d_model` scales an EM iteration
of 1M particles over GPU nodes.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: bytes per particle gathered to rank 0 when files are written (offset 2 x f4, class i8, psi f4,
#: pmax f4, n_significant i8, log-likelihood f8, group i8)
GATHER_BYTES = 8 + 8 + 4 + 4 + 8 + 8 + 8


@dataclass(frozen=True)
class Class2DRun:
    """What the class2d runs measured."""

    one_s: float
    two_s: float
    one_cpu_s: float               # CPU s of the command and its descendants (RUSAGE_CHILDREN)
    two_cpu_s: float
    reduced: dict[int, int]        # iteration -> bytes all-reduced by each rank
    gathered: dict[int, int]       # written iteration -> bytes gathered to rank 0
    radius: dict[int, int]         # iteration -> window radius after it
    rss_one: list[int]             # peak RSS of the one process
    rss_two: list[int]             # ... of each rank, sharded
    rss_before: list[int]          # ... of each rank, the older code (empty: not run)
    held: list[int]                # particles each rank held (rank 0's run.log)
    one_iteration_s: float         # the one process's iteration 2 (E-step, M-step, files), run.log clock


def _class2d_args(box: int, iterations: int) -> list[str]:
    return ["class2d", "--i", "Particles/particles.star", "--K", "4", "--algorithm", "em", "--iter", str(iterations),
            "--particle-diameter", str(int(0.78 * box)), "--psi-step", "10", "--device", "cpu", "--seed", "1"]


def timed_run(command: list[str], root: Path, rss_dir: Path, src: Path | None, threads: int) -> tuple[float, float]:
    """(wall s, CPU s of the command and its descendants)."""
    rss_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "VITRIFY_QUIET": "1", "OMP_NUM_THREADS": str(threads), "VITRIFY_RSS_DIR": str(rss_dir)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def rank_rss(rss_dir: Path) -> list[int]:
    return [int((rss_dir / f"rank{r}.txt").read_text()) for r in range(len(list(rss_dir.glob("rank*.txt"))))]


def _log_numbers(log: str, pattern: str) -> dict[int, int]:
    return {int(m.group(1)): int(m.group(2)) for m in re.finditer(pattern, log)}


def class2d_runs(root: Path, particles: int, box: int, before_src: Path | None, iterations: int = 2) -> Class2DRun:
    """Simulate ``particles`` of ``box`` px and run class2d as 1 process and as 2 ranks (see module doc)."""
    env = {**os.environ, "VITRIFY_QUIET": "1"}
    subprocess.run([sys.executable, "-m", "vitrify", "-q", "simulate", "particles", "--n", str(particles),
                    "--box", str(box), "--pixel-size", str(128 / box), "--snr", "0.1", "--seed", "1",
                    "--device", "cpu", "--out", "Particles"], cwd=root, env=env, check=True, capture_output=True)
    peak = [sys.executable, str(HERE / "_peak_rss.py"), "-q"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                str(HERE / "_peak_rss.py"), "-q"]
    args = _class2d_args(box, iterations)
    src = Path(__file__).resolve().parents[1] / "src"
    (one, one_cpu) = timed_run([*peak, *args, "--threads", "2", "--o", "class2d_one"], root, root / "rss_one", src, 2)
    (two, two_cpu) = timed_run([*torchrun, *args, "--threads", "1", "--o", "class2d_two"], root, root / "rss_two",
                               src, 1)
    before: list[int] = []
    if before_src is not None:
        timed_run([*torchrun, *args, "--threads", "1", "--o", "class2d_before"], root, root / "rss_before",
             before_src, 1)
        before = rank_rss(root / "rss_before")
    log = (root / "class2d_two/run.log").read_text()
    clock = _iteration_clock((root / "class2d_one/run.log").read_text())
    iteration_s = clock[2] - clock[1] if 2 in clock else float("nan")
    held = [int(m.group(1)) for m in re.finditer(r"rank \d+ of \d+ held (\d+) of", log)]
    return Class2DRun(one, two, one_cpu, two_cpu, _log_numbers(log, r"iteration (\d+): (\d+) bytes all-reduced"),
                      _log_numbers(log, r"iteration (\d+): (\d+) bytes of particle assignments gathered"),
                      _log_numbers(log, r"iteration (\d+): \d+ particles, radius (\d+)"),
                      rank_rss(root / "rss_one"), rank_rss(root / "rss_two"), before, held, iteration_s)


def _iteration_clock(log: str) -> dict[int, float]:
    """Seconds (of the day) at which each iteration's line was logged."""
    from datetime import datetime

    out = {}
    for m in re.finditer(r"^(\S+ \S+) INFO iteration (\d+): \d+ particles", log, re.M):
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
        out[int(m.group(2))] = t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6
    return out


def window_pixels(box_px: int, radius: int) -> int:
    """Packed window pixels P within ``radius`` (the engine's Fourier window)."""
    from vitrify.ml.window import make_window

    return make_window(box_px).pixels_within(radius)


def sums_bytes(n_classes: int, n_psi: int, pixels: int, box_px: int, halves: int = 1, oversampling: int = 1,
               n_groups: int = 1) -> int:
    """Bytes each rank all-reduces per iteration: per frame of the E-step sums ``data`` (H, R, 2P) and
    ``weight`` (H, R, P) float32 with R = K x psi rows (the fine frame, with oversampling 1, has
    twice the psi); class weights (K), noise sums (G, box/2), group counts (G) and the offset sum in
    float64; 3 pass counters; the log-likelihood and pmax totals; the abort flag (int32)."""
    frames = 1 + (2 if oversampling else 0)
    return (12 * halves * n_classes * n_psi * frames * pixels
            + 8 * (n_classes + n_groups * (box_px // 2) + n_groups + 1) + 8 * 3 + 8 * 2 + 4)


def resident_gb(n_particles: float, box_px: int) -> float:
    """GB of packed transforms + CTFs held for ``n_particles`` (``vitrify.jobs`` class2d check)."""
    return n_particles * int(0.3927 * box_px * box_px) * 12 / 1e9


def class2d_model(particle_s: float, bytes_per_iter: float, mstep_s: float, particles: int = 1_000_000,
                  gpus_per_node: int = 4, link_gb_s: float = 12.5, box_px: int = 128,
                  nodes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)) -> list[dict]:
    """One EM iteration over ``particles`` on each node count.

    E-step ``particles x particle_s / ranks``; ring all-reduce of the sums: ``2 (n-1)/n x bytes /
    link``; the M-step ``mstep_s`` is the same on every rank; written iterations add the gather of
    every particle's assignment to rank 0 (``GATHER_BYTES`` each, through rank 0's one link); memory
    per rank: its shard of packed transforms and CTFs.
    """
    out = []
    for n in nodes:
        ranks = n * gpus_per_node
        estep = particles * particle_s / ranks
        reduce_s = 2 * (ranks - 1) / ranks * bytes_per_iter / (link_gb_s * 1e9)
        gather_s = (ranks - 1) / ranks * particles * GATHER_BYTES / (link_gb_s * 1e9)
        out.append({"nodes": n, "ranks": ranks, "estep_s": estep, "mstep_s": mstep_s, "reduce_s": reduce_s,
                    "gather_s": gather_s, "iteration_s": estep + mstep_s + reduce_s,
                    "gb_per_rank": resident_gb(particles / ranks, box_px)})
    return out

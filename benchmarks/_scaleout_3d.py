"""refine3d part of benchmarks/scaleout.py: 1 process x 2 threads vs 2 torchrun ranks x 1 thread.

:func:`refine3d_runs` simulates adenylate kinase particles and refines them from the true map
(low-passed to 40 Å by the job) for a few iterations as one process of 2 threads and as 2 torchrun
ranks (gloo) of 1 thread, each through ``_peak_rss.py`` (peak resident memory per process), with
the wall and CPU seconds of each command (``RUSAGE_CHILDREN``: the ranks and torchrun included).
Rank 0's run.log gives the bytes each rank all-reduced per iteration; :func:`grid_bytes` is the
part of them that the 3D grids take (each half's back-projected data (complex64) and weight
(float32) on the padded grid), the rest is the noise sums and a few totals.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from _scaleout_class2d import rank_rss, timed_run

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


@dataclass(frozen=True)
class Engine3DRun:
    """What the refine3d runs measured (wall s, CPU s, bytes per iteration, peak memory)."""

    one_s: float
    one_cpu_s: float
    two_s: float
    two_cpu_s: float
    reduced: dict[int, int]   # iteration -> bytes all-reduced by each rank
    rss_one: list[int]
    rss_two: list[int]
    resolution: tuple[str, str]  # final resolution line of each run
    same_poses: float         # fraction of particles with the same pose in both runs


def grid_bytes(box_px: int, n_classes: int = 1, halves: int = 2, pad: int = 2) -> int:
    """Bytes of the 3D grids a rank all-reduces per iteration: data (complex64) and weight (float32) of
    ``(g, g, g//2+1)``, ``g = pad x box``, per class and per half set (refine3d: 2 engines of K 1)."""
    g = pad * box_px
    return 12 * g * g * (g // 2 + 1) * n_classes * halves


def _same_poses(one: Path, two: Path) -> float:
    import numpy as np

    from vitrify.io.star import read_star

    a, b = (read_star(d / "run_data.star")["particles"] for d in (one, two))
    same = np.ones(len(a), dtype=bool)
    for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst"):
        same &= np.isclose(a[c].to_numpy(float), b[c].to_numpy(float), atol=1e-2)
    return float(same.mean())


def refine3d_runs(root: Path, particles: int, box: int, iterations: int, order: int = 2) -> Engine3DRun:
    """Simulate ``particles`` of ``box`` px (adk, 2.25 Å x 64 / box, SNR 0.1) and refine them for
    ``iterations`` iterations (HEALPix ``order``, global searches) as 1 process and as 2 ranks."""
    pixel = 2.25 * 64 / box
    env = {**os.environ, "VITRIFY_QUIET": "1", "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-m", "vitrify", "-q", "simulate", "particles", "--n", str(particles),
                    "--box", str(box), "--pixel-size", f"{pixel:.4f}", "--snr", "0.1", "--seed", "1",
                    "--device", "cpu", "--out", "Refine3DParticles"], cwd=root, env=env, check=True,
                   capture_output=True)
    args = ["refine3d", "--i", "Refine3DParticles/particles.star", "--ref", "Refine3DParticles/truth_map.mrc",
            "--particle-diameter", f"{0.6 * box * pixel:.0f}", "--iter", str(iterations), "--healpix-order",
            str(order), "--local-order", str(order + 2), "--max-order", str(order + 2), "--device", "cpu"]
    peak = [sys.executable, str(HERE / "_peak_rss.py"), "-q"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                str(HERE / "_peak_rss.py"), "-q"]
    one, one_cpu = timed_run([*peak, *args, "--threads", "2", "--o", "refine3d_one"], root, root / "rss3d_one", SRC, 2)
    two, two_cpu = timed_run([*torchrun, *args, "--threads", "1", "--o", "refine3d_two"], root, root / "rss3d_two",
                             SRC, 1)
    log = (root / "refine3d_two/run.log").read_text()
    reduced = {int(m.group(1)): int(m.group(2))
               for m in re.finditer(r"iteration (\d+): (\d+) bytes all-reduced", log)}
    final = tuple(re.search(r"final resolution ([\d.]+ Å)", (root / d / "run.log").read_text()).group(1)
                  for d in ("refine3d_one", "refine3d_two"))
    return Engine3DRun(one, one_cpu, two, two_cpu, reduced, rank_rss(root / "rss3d_one"), rank_rss(root / "rss3d_two"),
                       final, _same_poses(root / "refine3d_one", root / "refine3d_two"))


def report_refine3d(run: Engine3DRun, particles: int, box: int, iterations: int) -> None:
    """Print what the refine3d runs measured."""
    mib = " / ".join(f"{v / 2 ** 20:.0f}" for v in run.rss_two)
    print(f"\nrefine3d (gold standard, global searches), {particles} particles of {box}², {iterations} iteration(s) "
          f"+ the final one:\n\n| how | wall s | CPU s | peak resident MiB per process | final resolution |\n"
          f"|---|---|---|---|---|\n"
          f"| 1 process x 2 threads | {run.one_s:.1f} | {run.one_cpu_s:.1f} | {run.rss_one[0] / 2 ** 20:.0f} | "
          f"{run.resolution[0]} |\n"
          f"| 2 ranks x 1 thread | {run.two_s:.1f} | {run.two_cpu_s:.1f} | {mib} | {run.resolution[1]} |")
    print(f"same pose (1e-2) in both runs: {100 * run.same_poses:.1f} % of the particles")
    grids = grid_bytes(box)
    print("\n| iteration | bytes all-reduced per rank | of which 3D grids (grid_bytes) | other sums |\n"
          "|---|---|---|---|")
    for it, sent in sorted(run.reduced.items()):
        extra = sent - grids * (3 if it == 1 else 1)  # iteration 1 also holds the 2 greyscale rounds of each half
        print(f"| {it} | {sent:,} | {grids:,}{' x 3' if it == 1 else ''} | {extra:,} |")

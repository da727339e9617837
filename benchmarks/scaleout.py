"""Scale-out benchmark: motioncorr/ctffind with 1 and 2 Dask workers, class2d 1 process vs 2 ranks, cost models.

Usage::

    python benchmarks/scaleout.py [--movies 8] [--size 512] [--frames 8] [--workers 1 2] [--tasks 200]
        [--particles 400] [--out DIR] [--model-only --task-s 6 --overhead-ms 2 ...]

Simulates ``--movies`` movies (``vitrify simulate movies``) into a fresh project, imports them,
then runs ``vitrify motioncorr`` and ``vitrify ctffind`` once per ``--workers`` value (each in a
new job directory, so nothing is reused), as the command line runs them: wall seconds include
Python start-up, the cluster start and the worker processes' imports. From the 1-worker run's
``timing.tsv`` (motioncorr) comes the compute per movie; the scheduler's cost per task comes
from ``--tasks`` empty tasks on a 2-worker LocalCluster. The cost model then gives the wall time
of 10,000 movies on 1 to 64 nodes (see :func:`cost_model`). class2d (EM, 3 iterations, K 4, on
``--particles`` simulated 64² particles) runs as 1 process with 2 threads and as 2 torchrun ranks
(gloo) of 1 thread; the bytes each rank all-reduces per iteration come from rank 0's run.log;
:func:`class2d_model` scales an iteration of 1M particles over nodes. Run it under
``flock -x /tmp/vitrify-bench.lock`` for figures to report.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MOTION = ["--gain", "Sim/Movies/gain.mrc", "--patch-x", "2", "--patch-y", "2", "--dose-per-frame", "2",
          "--device", "cpu"]


def vitrify(args: list[str], cwd: Path) -> float:
    """Wall seconds of ``vitrify -q ARGS`` in ``cwd`` (fails loudly)."""
    env = {**os.environ, "VITRIFY_QUIET": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vitrify", "-q", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode:
        raise SystemExit(f"vitrify {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def make_project(root: Path, movies: int, size: int, frames: int) -> None:
    """Simulated movies (seed 1) and an import job in ``root``."""
    vitrify(["simulate", "movies", "--n", str(movies), "--size", str(size), "--frames", str(frames),
             "--particles", "20", "--device", "cpu", "--seed", "1", "--out", "Sim"], root)
    vitrify(["import", "--i", "Sim/Movies/*.tiff", "--angpix", "1.0", "--o", "Import/job001"], root)


def task_seconds(job_dir: Path) -> float:
    """Wall seconds of the per-movie stages summed over the movies (``timing.tsv``, once-only rows left out)."""
    rows = [line.split("\t") for line in (job_dir / "timing.tsv").read_text().splitlines()[1:]]
    return sum(float(wall) for name, _, wall in rows if "once" not in name)


def scheduler_overhead_ms(tasks: int) -> tuple[float, float]:
    """(cluster start s, ms per empty task) on a 2-worker LocalCluster of processes."""
    from distributed import Client, LocalCluster

    start = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        started = time.perf_counter() - start
        client.gather(client.map(abs, range(-20, 0), pure=False))  # warm
        t0 = time.perf_counter()
        client.gather(client.map(abs, range(-tasks, 0), pure=False))
        return started, 1000 * (time.perf_counter() - t0) / tasks


def cost_model(task_s: float, overhead_ms: float, start_s: float, movies: int = 10_000,
               workers_per_node: int = 4, movie_mb: float = 400.0, fs_gb_s: float = 20.0,
               nodes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)) -> list[tuple[int, float, str]]:
    """Hours for ``movies`` movies on each node count, and what limits it.

    Three bounds, the largest wins: compute ``movies × task_s / (nodes × workers_per_node)``;
    the one scheduler, which hands out tasks one after another at ``overhead_ms`` each
    (``movies × overhead_ms``); the shared file system, which must read each movie once
    (``movies × movie_mb / fs_gb_s``). ``start_s`` (cluster start, imports) is added once.
    """
    out = []
    for n in nodes:
        bounds = {"compute": movies * task_s / (n * workers_per_node),
                  "scheduler": movies * overhead_ms / 1000,
                  "file system": movies * movie_mb / 1000 / fs_gb_s}
        limit = max(bounds, key=bounds.get)
        out.append((n, (bounds[limit] + start_s) / 3600, limit))
    return out


CLASS2D = ["class2d", "--i", "Particles/particles.star", "--K", "4", "--algorithm", "em", "--iter", "3",
           "--particle-diameter", "100", "--psi-step", "10", "--device", "cpu", "--seed", "1"]


def class2d_runs(root: Path, particles: int) -> tuple[float, float, int]:
    """(1 process x 2 threads wall s, 2 ranks x 1 thread wall s, bytes all-reduced per rank per iteration)."""
    vitrify(["simulate", "particles", "--n", str(particles), "--box", "64", "--pixel-size", "2", "--snr", "0.1",
             "--seed", "1", "--device", "cpu", "--out", "Particles"], root)
    one = vitrify([*CLASS2D, "--threads", "2", "--o", "class2d_one"], root)
    env = {**os.environ, "VITRIFY_QUIET": "1", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "vitrify", "-q", *CLASS2D, "--threads", "1", "--o", "class2d_two"], cwd=root,
                          env=env, capture_output=True, text=True, check=False)
    two = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"torchrun class2d failed:\n{done.stderr[-3000:]}")
    sent = [int(line.split(" bytes all-reduced")[0].rsplit(" ", 1)[1])
            for line in (root / "class2d_two/run.log").read_text().splitlines() if "bytes all-reduced" in line]
    return one, two, max(sent)


def class2d_model(particle_s: float, bytes_per_iter: float, fixed_s: float, particles: int = 1_000_000,
                  gpus_per_node: int = 4, link_gb_s: float = 12.5,
                  nodes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)) -> list[tuple[int, float, float]]:
    """(nodes, E-step s, all-reduce s) of one iteration over ``particles``.

    E-step: ``particles × particle_s / (nodes × gpus_per_node)``; all-reduce: a ring over
    ``nodes × gpus_per_node`` ranks moves ``2 (n - 1) / n × bytes_per_iter`` through each link of
    ``link_gb_s``; ``fixed_s`` (the M-step, the same on every rank) does not shrink.
    """
    out = []
    for n in nodes:
        ranks = n * gpus_per_node
        estep = particles * particle_s / ranks
        reduce_s = 2 * (ranks - 1) / ranks * bytes_per_iter / (link_gb_s * 1e9)
        out.append((n, estep + fixed_s, reduce_s))
    return out


def main() -> None:
    """Measure (or only model) and print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--movies", type=int, default=8)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--tasks", type=int, default=200, help="empty tasks timed for the scheduler overhead")
    p.add_argument("--out", type=Path, default=None, help="project folder (default: a temporary one)")
    p.add_argument("--model-only", action="store_true", help="no measurement: the model from the values below")
    p.add_argument("--task-s", type=float, default=28.8,
                   help="wall s per movie per worker (model; default: a 4096² x 40 movie on 2 threads here, "
                        "docs/preprocess.md)")
    p.add_argument("--overhead-ms", type=float, default=2.0, help="scheduler ms per task (model only; else measured)")
    p.add_argument("--start-s", type=float, default=60.0, help="cluster start seconds (model)")
    p.add_argument("--workers-per-node", type=int, default=16, help="workers per node (model: 32 cores, 2 each)")
    p.add_argument("--gpus-per-node", type=int, default=4, help="class2d ranks (GPUs) per node (model)")
    p.add_argument("--movie-mb", type=float, default=670.0, help="MB read per movie (model: 4096² x 40 x 8 bit)")
    p.add_argument("--fs-gb-s", type=float, default=20.0, help="shared file system GB/s (model)")
    p.add_argument("--particles", type=int, default=400, help="class2d particles (0: no class2d runs)")
    p.add_argument("--particle-s", type=float, default=2e-4,
                   help="E-step s per particle per GPU (class2d model; assumed, not measured here)")
    p.add_argument("--iter-bytes", type=float, default=1.7e9,
                   help="bytes all-reduced per iteration (class2d model): 12 B x P window pixels x K x psi x 3 "
                        "(coarse + fine frames); default K 100, 72 psi, box 128 at full radius (P 6434)")
    args = p.parse_args()
    task_s, overhead = args.task_s, args.overhead_ms
    if not args.model_only:
        root = args.out or Path(tempfile.mkdtemp(prefix="vitrify-scaleout-"))
        root.mkdir(parents=True, exist_ok=True)
        make_project(root, args.movies, args.size, args.frames)
        print(f"{args.movies} movies {args.size}² x {args.frames} frames in {root}\n")
        print("| job | workers | wall s | movies/min | speed-up |\n|---|---|---|---|---|")
        for job, first in (("motioncorr", 10), ("ctffind", 30)):
            walls = {}
            for w in args.workers:
                out = f"{'MotionCorr' if job == 'motioncorr' else 'CtfFind'}/job{first + w:03d}"
                inputs = ["--i", "Import/job001/movies.star", *MOTION] if job == "motioncorr" else \
                    ["--i", "MotionCorr/job011/corrected_micrographs.star", "--box", "256", "--device", "cpu"]
                walls[w] = vitrify([job, *inputs, "--workers", str(w), "--o", out], root)
                print(f"| {job} | {w} | {walls[w]:.1f} | {60 * args.movies / walls[w]:.1f} | "
                      f"{walls[args.workers[0]] / walls[w]:.2f} |")
        measured = task_seconds(root / "MotionCorr/job011") / args.movies
        start, overhead = scheduler_overhead_ms(args.tasks)
        print(f"\nmotioncorr compute per movie (1 worker, timing.tsv): {measured:.2f} s; "
              f"LocalCluster(2) start {start:.1f} s; scheduler {overhead:.2f} ms per empty task ({args.tasks})")
    print(f"\ncost model: 10,000 movies, {task_s:.2f} s/movie/worker, {args.workers_per_node} workers/node, "
          f"{overhead:.2f} ms/task, {args.movie_mb:g} MB/movie, {args.fs_gb_s:g} GB/s file system, "
          f"{args.start_s:g} s start\n")
    print("| nodes | hours | limited by |\n|---|---|---|")
    for n, hours, limit in cost_model(task_s, overhead, args.start_s, workers_per_node=args.workers_per_node,
                                      movie_mb=args.movie_mb, fs_gb_s=args.fs_gb_s):
        print(f"| {n} | {hours:.2f} | {limit} |")
    fs_s, sched_s = 10_000 * args.movie_mb / 1000 / args.fs_gb_s, 10_000 * overhead / 1000
    print(f"stops scaling at {10_000 * task_s / max(fs_s, sched_s) / args.workers_per_node:.0f} nodes "
          f"(file system {fs_s:.0f} s, scheduler {sched_s:.0f} s for 10,000 movies)")
    if not args.model_only and args.particles:
        one, two, sent = class2d_runs(root, args.particles)
        print(f"\nclass2d EM, 3 iterations, K 4, {args.particles} particles 64²: 1 process x 2 threads {one:.1f} s, "
              f"2 ranks x 1 thread {two:.1f} s; {sent} bytes all-reduced per rank per iteration")
    print(f"\nclass2d model: 1M particles, {args.particle_s:g} s/particle/GPU, {args.gpus_per_node} GPUs/node, "
          f"{args.iter_bytes:.3g} B all-reduced per iteration, 12.5 GB/s links, 2 s M-step\n")
    print("| nodes | E-step + M-step s | all-reduce s |\n|---|---|---|")
    for n, compute, reduce_s in class2d_model(args.particle_s, args.iter_bytes, 2.0,
                                              gpus_per_node=args.gpus_per_node):
        print(f"| {n} | {compute:.1f} | {reduce_s:.2f} |")
    print("the E-step shrinks with the ranks; the M-step (the same on every rank) and the all-reduce do not: "
          f"past {args.particle_s * 1e6 / (2.0 + 0.2) / args.gpus_per_node:.0f} nodes they take more than the E-step")


if __name__ == "__main__":
    main()

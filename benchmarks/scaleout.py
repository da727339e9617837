"""Scale-out benchmark: motioncorr/ctffind on 1 and 2 Dask workers, class2d/refine3d 1 process vs 2 ranks, models.

Usage::

    python benchmarks/scaleout.py [--movies 8] [--size 512] [--frames 8] [--workers 1 2] [--tasks 200]
        [--particles 400] [--out DIR] [--model-only --task-s 6 --overhead-ms 2 ...]

Simulates ``--movies`` movies (``vitrify simulate movies``) into a fresh project, imports them,
then runs ``vitrify motioncorr`` and ``vitrify ctffind`` once per ``--workers`` value (each in a
new job directory, so nothing is reused), as the command line runs them: wall seconds include
Python start-up, the cluster start and the worker processes' imports. From the 1-worker run's
``timing.tsv`` (motioncorr) comes the compute per movie; the scheduler's cost per task comes
from ``--tasks`` empty tasks on a 2-worker LocalCluster. The cost model then gives the wall time
of 10,000 movies on 1 to 64 nodes (see :func:`cost_model`). class2d (EM, 2 iterations, K 4, on
``--particles`` simulated particles of ``--box`` px) runs as 1 process with 2 threads and as 2
torchrun ranks (gloo) of 1 thread, with the peak memory of each process; ``--before-src`` runs the
2 ranks again with an older vitrify's ``src`` (memory before the particles were sharded). The bytes
each rank all-reduces per iteration and gathers per written iteration come from rank 0's run.log
and are checked against the size of the E-step sums (``_scaleout_class2d.sums_bytes``), which then
gives the bytes of the modelled configuration; ``class2d_model`` scales an EM iteration of 1M
particles over GPU nodes. refine3d (``--refine3d-particles`` of ``--refine3d-box`` px, global searches,
``--refine3d-iter`` iterations and the final one) runs likewise as 1 process x 2 threads and 2 ranks x
1 thread (:mod:`_scaleout_3d`): wall and CPU seconds, peak memory, bytes all-reduced per iteration (the
3D grids, ``_scaleout_3d.grid_bytes``, and the rest). Wall and CPU seconds (``RUSAGE_CHILDREN``) of
every command. Run it under ``flock -x /tmp/vitrify-bench.lock`` for figures to report.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _scaleout_3d import refine3d_runs, report_refine3d
from _scaleout_class2d import class2d_model, class2d_runs, resident_gb, sums_bytes, window_pixels

MOTION = ["--gain", "Sim/Movies/gain.mrc", "--patch-x", "2", "--patch-y", "2", "--dose-per-frame", "2",
          "--device", "cpu"]


def vitrify(args: list[str], cwd: Path) -> tuple[float, float]:
    """(wall s, CPU s of it and its descendants: Dask's worker processes) of ``vitrify -q ARGS`` in ``cwd``
    (fails loudly)."""
    env = {**os.environ, "VITRIFY_QUIET": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vitrify", "-q", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"vitrify {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


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
    p.add_argument("--particles", type=int, default=3000, help="class2d particles (0: no class2d runs)")
    p.add_argument("--box", type=int, default=128, help="class2d particle box (px)")
    p.add_argument("--class2d-iter", type=int, default=2, help="class2d EM iterations (2: the per-particle time)")
    p.add_argument("--refine3d-particles", type=int, default=1000, help="refine3d particles (0: no refine3d runs)")
    p.add_argument("--refine3d-box", type=int, default=64, help="refine3d particle box (px)")
    p.add_argument("--refine3d-iter", type=int, default=2, help="refine3d iterations (then the final one)")
    p.add_argument("--skip-movies", action="store_true", help="no motioncorr/ctffind runs (class2d only)")
    p.add_argument("--before-src", type=Path, default=None,
                   help="src folder of an older vitrify: its 2-rank class2d memory, for comparison")
    p.add_argument("--particle-s", type=float, default=2e-4,
                   help="E-step s per particle per GPU (class2d model; assumed: no GPU was measured)")
    p.add_argument("--mstep-s", type=float, default=2.0, help="M-step s, the same on every rank (model; assumed)")
    p.add_argument("--model-k", type=int, default=100, help="classes of the modelled class2d")
    p.add_argument("--model-psi-step", type=float, default=6.0, help="psi step (deg) of the modelled class2d")
    p.add_argument("--model-box", type=int, default=128, help="box (px) of the modelled class2d, at full radius")
    args = p.parse_args()
    task_s, overhead = args.task_s, args.overhead_ms
    if not args.model_only:
        root = args.out or Path(tempfile.mkdtemp(prefix="vitrify-scaleout-"))
        root.mkdir(parents=True, exist_ok=True)
    if not args.model_only and not args.skip_movies:
        make_project(root, args.movies, args.size, args.frames)
        print(f"{args.movies} movies {args.size}² x {args.frames} frames in {root}\n")
        print("| job | workers | wall s | CPU s | movies/min | speed-up |\n|---|---|---|---|---|---|")
        for job, first in (("motioncorr", 10), ("ctffind", 30)):
            walls = {}
            for w in args.workers:
                out = f"{'MotionCorr' if job == 'motioncorr' else 'CtfFind'}/job{first + w:03d}"
                inputs = ["--i", "Import/job001/movies.star", *MOTION] if job == "motioncorr" else \
                    ["--i", "MotionCorr/job011/corrected_micrographs.star", "--box", "256", "--device", "cpu"]
                walls[w], cpu = vitrify([job, *inputs, "--workers", str(w), "--o", out], root)
                print(f"| {job} | {w} | {walls[w]:.1f} | {cpu:.1f} | {60 * args.movies / walls[w]:.1f} | "
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
        report_class2d_runs(class2d_runs(root, args.particles, args.box, args.before_src, args.class2d_iter), args)
    if not args.model_only and args.refine3d_particles:
        run3d = refine3d_runs(root, args.refine3d_particles, args.refine3d_box, args.refine3d_iter)
        report_refine3d(run3d, args.refine3d_particles, args.refine3d_box, args.refine3d_iter)
    report_class2d_model(args)


def _mib(values: list[int]) -> str:
    return " / ".join(f"{v / 2 ** 20:.0f}" for v in values)


def report_class2d_runs(run, args) -> None:
    """Print what the class2d runs measured and check the bytes against :func:`sums_bytes`."""
    print(f"\nclass2d EM, {args.class2d_iter} iteration(s), K 4, psi 10°, {args.particles} particles of {args.box}²: "
          f"1 process x 2 threads {run.one_s:.1f} s wall / {run.one_cpu_s:.1f} s CPU, 2 ranks x 1 thread "
          f"{run.two_s:.1f} s wall / {run.two_cpu_s:.1f} s CPU")
    print("\n| iteration | window radius | bytes all-reduced per rank | predicted (sums_bytes) | "
          "bytes gathered to rank 0 |\n|---|---|---|---|---|")
    start_radius = min(args.box // 2 - 1, max(1, round(0.07 * args.box)) + 10)
    for it, sent in sorted(run.reduced.items()):
        radius = run.radius.get(it - 1, start_radius)
        predicted = sums_bytes(4, 36, window_pixels(args.box, radius), args.box)
        print(f"| {it} | {radius} | {sent:,} | {predicted:,} | {run.gathered.get(it, 0):,} |")
    print(f"iteration 0 (the start): {run.gathered.get(0, 0):,} bytes gathered to rank 0")
    print(f"\npeak resident memory MiB: 1 process {_mib(run.rss_one)}; 2 ranks (each holds "
          f"{' / '.join(map(str, run.held))} particles) {_mib(run.rss_two)}"
          + (f"; 2 ranks before sharding (each held all {args.particles}) {_mib(run.rss_before)}"
             if run.rss_before else ""))
    print(f"packed particles: {resident_gb(args.particles, args.box) * 1e3:.0f} MB for all, "
          f"{resident_gb(args.particles / 2, args.box) * 1e3:.0f} MB per rank of 2")
    radius = run.radius.get(1, 0)
    if run.one_iteration_s != run.one_iteration_s:  # NaN: one iteration only
        return
    per_particle = run.one_iteration_s / args.particles
    model_pixels = window_pixels(args.model_box, args.model_box // 2 - 1)
    scale = args.model_k * (360 / args.model_psi_step) * model_pixels / (4 * 36 * window_pixels(args.box, radius))
    print(f"one process, iteration 2 (radius {radius}): {run.one_iteration_s:.2f} s = {per_particle * 1e3:.2f} ms "
          f"per particle on 2 CPU threads; x {scale:.0f} (K x psi x P of the modelled class2d) = "
          f"{per_particle * scale:.2f} s per particle on these 2 CPU cores")


def report_class2d_model(args) -> None:
    """Print the class2d cost model for 1M particles on 1 to 64 GPU nodes."""
    n_psi = round(360 / args.model_psi_step)
    box = args.model_box
    iter_bytes = sums_bytes(args.model_k, n_psi, window_pixels(box, box // 2 - 1), box)
    print(f"\nclass2d model: EM iteration of 1M particles, K {args.model_k}, psi {args.model_psi_step:g}°, "
          f"box {box} at full radius: {iter_bytes / 1e9:.2f} GB all-reduced per rank (sums_bytes); "
          f"{args.particle_s:g} s/particle/GPU (assumed), {args.gpus_per_node} GPUs/node, 12.5 GB/s links, "
          f"{args.mstep_s:g} s M-step (assumed)\n")
    print("| nodes | ranks | E-step s | M-step s | all-reduce s | iteration s | gather to rank 0 s (written "
          "iterations) | packed particles per rank GB |\n|---|---|---|---|---|---|---|---|")
    rows = class2d_model(args.particle_s, iter_bytes, args.mstep_s, gpus_per_node=args.gpus_per_node, box_px=box)
    for r in rows:
        print(f"| {r['nodes']} | {r['ranks']} | {r['estep_s']:.1f} | {r['mstep_s']:.1f} | {r['reduce_s']:.2f} | "
              f"{r['iteration_s']:.1f} | {r['gather_s']:.3f} | {r['gb_per_rank']:.2f} |")
    fixed = args.mstep_s + 2 * iter_bytes / 12.5e9
    print(f"it stops scaling where the E-step falls below the M-step + all-reduce ({fixed:.1f} s, which do not "
          f"shrink): at {1e6 * args.particle_s / fixed / args.gpus_per_node:.0f} nodes")

if __name__ == "__main__":
    main()

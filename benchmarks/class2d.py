"""Class2D benchmark: VDAM and EM on simulated particles of a real structure, with ground truth.

Usage (defaults = the issue's case: 10,000 particles of adenylate kinase, 64 px, 3 Å/px,
SNR 0.05, 20% junk, K = 50, VDAM 200 mini-batches, EM 25 iterations)::

    python benchmarks/class2d.py [--n 10000] [--k 50] [--runs vdam,em,vdam-norepl,vdam-relionrepl,vdam-k20] \
        [--vdam-iter 200] [--em-iter 25] [--threads 2] [--data DIR] [--work DIR] [--beside-hog]

``vdam-k20`` / ``em-k20`` use K = 20 whatever ``--k`` says (RELION's GUI settings: psi step 12,
offsets 5 px step 2).

Anchor sets (particles made outside vitrify, with RELION-4's run on the same particles; README in
``../shared/anchor_sets/``): ``--data`` names one or more of their folders, comma-separated, and the
runs use RELION's settings (K 20, VDAM 200 mini-batches, T 2, psi 12°, offsets 5 / 2 px, diameter
170 Å, 2 threads); the table sets vitrify beside RELION-4 (view spread recomputed from RELION's
run_it200_data.star with the same code; CPU and wall s from its summary.tsv) with ratio columns::

    python benchmarks/class2d.py --data ../shared/anchor_sets/1bd2_snr02,../shared/anchor_sets/1bd2_snr005 \
        --beside-hog

``--beside-hog`` runs each job twice, back to back: alone, then beside a CPU hog (``--hog-procs``
busy processes on the same CPUs, default as many as ``--threads``, like a RELION job with ``--j 2``;
started and stopped by the benchmark), and prints both figures and their ratio.

Each run is its own process (``--child``), so wall time and peak memory are per run.
Printed per run: wall and CPU time (user + system of the run's process: on a shared machine
the CPU time is the fairer figure), time per 1,000 particle-passes, peak RSS, classes holding
>= 1% of the particles, the median (over those classes) of the median angular distance
between members' true viewing directions and the class's mean direction, and the
fraction of junk particles that end up in junk classes (>= 90% junk members).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RUNS = {  # name -> Options overrides
    "vdam": {"algorithm": "vdam"},
    "em": {"algorithm": "em"},
    "vdam-norepl": {"algorithm": "vdam", "class_inactivity_threshold": 0.0},
    "vdam-relionrepl": {"algorithm": "vdam", "replacement_source": "gradient"},  # RELION-4's source class
    # RELION-4's reference run (1,760 s on 2 cores): K = 20, GUI sampling (psi 12, offsets 5 / 2)
    "vdam-k20": {"algorithm": "vdam", "n_classes": 20},
    "em-k20": {"algorithm": "em", "n_classes": 20},
    # tempered posterior (--posterior-power 0.3): cleaner class averages at low SNR (docs/class2d.md)
    "vdam-tempered": {"algorithm": "vdam", "posterior_power": 0.3},
    # anchor sets: one EM iteration started from the true map's projections along K even views
    # (--ref): how well particles can be told apart by view at all (docs/class2d.md, "Low SNR")
    "oracle": {"algorithm": "em", "oracle": True},
    # junk separation (docs/class2d.md, "Junk"): refill inactive classes from the worst-fitting
    # particles; an outlier class for the particles with a large low-resolution residual
    "vdam-worst": {"algorithm": "vdam", "replacement_source": "worst"},
    "vdam-outlier": {"algorithm": "vdam", "outlier_z": 3.0},
    "vdam-worst-outlier": {"algorithm": "vdam", "replacement_source": "worst", "outlier_z": 3.0},
    "em-outlier": {"algorithm": "em", "outlier_z": 3.0},
}


def structure_file(name: str) -> str:
    """A bundled example's name as is; another ``mdanalysistests`` structure of the ranker's set
    (``1osm``, ``1hvr``, ...; ``benchmarks/ranker_data.py``) as its file path."""
    from vitrify.io.structures import EXAMPLE_STRUCTURES

    if name in EXAMPLE_STRUCTURES or Path(name).is_file():
        return name
    from ranker_data import structure_path

    return structure_path(name)


def simulate(args) -> Path:
    """Simulate (once) and return particles.star."""
    from vitrify.sim.particles import ParticleOptions, simulate_particles

    out = Path(args.data)
    star = out / "particles.star"
    if not star.exists():
        opts = ParticleOptions(structures=(structure_file(args.structure),), n_particles=args.n, box_px=args.box,
                               pixel_size_angst=args.pixel, snr=args.snr, junk_fraction=args.junk, seed=1)
        simulate_particles(opts, out)
    return star


def child(args) -> None:
    """Run one job; print a JSON line with timing, memory and particle passes."""
    from vitrify.core.threads import apply_thread_env

    apply_thread_env()  # before torch loads (libgomp reads it once); inherited from main() anyway
    import torch

    from vitrify._progress import set_quiet
    from vitrify.jobs.base import run_job
    from vitrify.jobs.class2d import Options, run

    set_quiet(True)
    overrides = dict(RUNS[args.child])
    iters = args.vdam_iter if overrides["algorithm"] == "vdam" else args.em_iter
    params = {"n_classes": args.k, **overrides}
    if params.pop("oracle", False):
        from _anchor import write_oracle_references

        truth_map = Path(args.star).with_name("truth_map.mrc")
        stack = write_oracle_references(truth_map, params["n_classes"], Path(args.work) / "oracle_refs.mrcs")
        params["reference_stack"], iters = str(stack), 1
    opts = Options(input_star=str(args.star), particle_diameter_angst=args.diameter,
                   nr_iter=iters, threads=args.threads, device="cpu", seed=1, **params)
    job_dir = Path(args.work) / args.child
    t0 = time.time()
    out = run_job(run, opts, job_dir)
    wall = time.time() - t0
    passes = 0
    for line in (job_dir / "run.log").read_text().splitlines():
        if " INFO iteration " in line:
            passes += int(line.split(" particles")[0].rsplit(" ", 1)[1])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = usage.ru_maxrss / 1024
    print(json.dumps({"run": args.child, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                      "passes": passes, "peak_mb": peak_mb, "load": os.getloadavg()[0],
                      "data": str(out), "torch_threads": torch.get_num_threads(),
                      "wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset")}))


def directions(rot_deg: np.ndarray, tilt_deg: np.ndarray) -> np.ndarray:
    """Unit viewing directions ``(N, 3)``."""
    r, t = np.deg2rad(rot_deg), np.deg2rad(tilt_deg)
    return np.stack([np.cos(r) * np.sin(t), np.sin(r) * np.sin(t), np.cos(t)], 1)


def _median_spread(dirs: np.ndarray) -> float:
    """Median angle (°) between unit directions ``(m, 3)`` and their mean direction."""
    mean = dirs.sum(0)
    mean /= np.linalg.norm(mean) + 1e-12
    return float(np.median(np.degrees(np.arccos(np.clip(dirs @ mean, -1, 1)))))


def junk_by_kind(cls: np.ndarray, kinds: np.ndarray, junk_classes: list) -> dict:
    """Fraction of each junk kind's particles (``kinds`` != "none") that end in ``junk_classes``."""
    out = {}
    for kind in sorted(set(kinds) - {"none"}):
        sel = kinds == kind
        out[kind] = float(np.isin(cls[sel], junk_classes).mean())
    return out


def quality(data_star: str, truth_star: Path) -> dict:
    """Classes >= 1%, angular spread of the true particles' directions per class, junk separation.

    ``median_spread_deg``: median over classes >= 1 % and < 90 % junk of the median angle to the
    class's mean direction; ``weighted_spread_deg``: the anchor sets' measure (size-weighted mean
    over the classes >= 1 % of that median) on the true particles of the classes that are not
    junk-only; ``junk_in_junk_classes``: junk fraction in classes of >= 90 % junk, also by kind.
    """
    from vitrify.io.star import read_star

    parts = read_star(data_star)["particles"]
    truth = read_star(truth_star)["particles"]
    cls = parts["rlnClassNumber"].to_numpy()
    junk = truth["vtfMapIndex"].to_numpy() == 0
    kinds = truth["vtfJunkKind"].astype(str).to_numpy() if "vtfJunkKind" in truth else np.where(junk, "junk", "none")
    dirs = directions(truth["rlnAngleRot"].to_numpy(float), truth["rlnAngleTilt"].to_numpy(float))
    n = len(cls)
    big = [c for c in np.unique(cls) if (cls == c).sum() >= 0.01 * n]
    spreads, acc, total = [], 0.0, 0
    for c in big:
        members = (cls == c) & ~junk
        if members.sum() < 5 or junk[cls == c].mean() >= 0.9:
            continue
        spreads.append(_median_spread(dirs[members]))
        acc, total = acc + members.sum() * spreads[-1], total + members.sum()
    junk_classes = [c for c in np.unique(cls) if junk[cls == c].mean() >= 0.9]
    junk_sep = float(np.isin(cls[junk], junk_classes).mean()) if junk.any() else float("nan")
    rng = np.random.default_rng(0)
    rand = rng.integers(0, len(big) or 1, n)
    rand_spread = [_median_spread(dirs[(rand == c) & ~junk]) for c in np.unique(rand)]
    good_in_junk = float(np.isin(cls[~junk], junk_classes).mean())
    return {"classes_ge_1pct": len(big), "median_spread_deg": float(np.median(spreads)) if spreads else None,
            "weighted_spread_deg": acc / total if total else None,
            "random_spread_deg": float(np.median(rand_spread)), "junk_in_junk_classes": junk_sep,
            "junk_by_kind": junk_by_kind(cls, kinds, junk_classes), "good_in_junk_classes": good_in_junk}


def run_child(args, name: str, star: Path, work: Path) -> dict:
    """Run ``name`` in its own process; its JSON line."""
    skip = ("child", "star", "runs", "work", "data", "beside_hog", "hog_procs")
    cmd = [sys.executable, __file__, "--child", name, "--star", str(star), f"--work={work}"] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in skip and v is not None]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def run_pair(args, name: str, star: Path, work: Path) -> dict:
    """One run alone; with ``--beside-hog`` also beside a CPU hog (``hog`` key)."""
    from _anchor import CpuHog

    res = run_child(args, name, star, work / "alone")
    if args.beside_hog:
        with CpuHog(args.hog_procs or args.threads) as hog:
            res["hog"] = run_child(args, name, star, work / "beside_hog")
        res["hog"]["hog_cpu_s"] = hog.cpu_s
    return res


def _fmt(x, spec: str = ".0f") -> str:
    return "n/a" if x is None else format(x, spec)


def anchor_main(args, folders: list[Path]) -> None:
    """vitrify beside RELION-4 on the anchor sets (RELION's settings), alone and beside a hog."""
    from _anchor import class_agreement, nearest_view_spread, relion_figures, view_spread

    rows = []
    for folder in folders:
        relion = relion_figures(folder)
        for name in args.runs.split(","):
            res = run_pair(args, name, folder / "particles.star", Path(args.work) / folder.name / name)
            for r in [res] + ([res["hog"]] if "hog" in res else []):
                r.update(view_spread(r["data"], folder / "truth.star"))
                classes = Path(r["data"]).with_name(Path(r["data"]).name.replace("_data.star", "_classes.mrcs"))
                r.update(class_agreement(classes, folder / "truth_map.mrc", args.diameter))
            rows.append((folder.name, name, res, relion))
            print(json.dumps({"set": folder.name, **res}), flush=True)
    print(f"\n# vitrify {args.threads} threads, K {args.k}, {args.vdam_iter} VDAM mini-batches / {args.em_iter} EM "
          f"iterations, diameter {args.diameter:g} Å; RELION-4 from the set's relion/ (2 threads, 2-core machine)")
    print("\n| set | run | vitrify spread ° | RELION-4 spread ° | vitrify CPU s | RELION-4 CPU s | CPU ratio | "
          "vitrify wall s | RELION-4 wall s | wall ratio | classes >= 1 % (vitrify / RELION) | "
          "class-average agreement median / worst (vitrify; RELION) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, run, r, rel in rows:
        print(f"| {name} | {run} | {r['spread_deg']:.1f} | {rel['spread_deg']:.1f} | {r['cpu_s']:.0f} | "
              f"{rel['cpu_s']:,.0f} | {r['cpu_s'] / rel['cpu_s']:.3f} | {r['wall_s']:.0f} | {rel['wall_s']:,.0f} | "
              f"{r['wall_s'] / rel['wall_s']:.3f} | {r['classes_ge_1pct']} / {rel['classes_ge_1pct']} | "
              f"{r['agreement_median']:.3f} / {r['agreement_min']:.3f}; "
              f"{rel['agreement_median']:.3f} / {rel['agreement_min']:.3f} |")
    for folder in folders:
        print(f"\n# {folder.name}: {nearest_view_spread(folder / 'truth.star', args.k):.1f}° if every particle sat "
              f"in the class of its nearest of {args.k} even views (the floor); the run 'oracle' is one EM "
              "iteration from the true map's projections along those views")
    if args.beside_hog:
        print_hog_table([(f"{name} {run}", r) for name, run, r, _ in rows], args)


def print_hog_table(rows: list[tuple[str, dict]], args) -> None:
    """Alone vs beside the hog, with ratios (the contention figures)."""
    print(f"\n# contention: each run alone, then beside {args.hog_procs or args.threads} busy process(es) on the "
          f"same CPUs; OpenMP wait policy {rows[0][1].get('wait_policy', '?')}")
    print("\n| run | CPU s alone | CPU s beside hog | CPU ratio | wall s alone | wall s beside hog | wall ratio | "
          "hog CPU s | spread ° alone / beside |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in rows:
        h = r["hog"]
        spread = (f"{r['spread_deg']:.1f} / {h['spread_deg']:.1f}" if "spread_deg" in r else
                  f"{_fmt(r.get('median_spread_deg'), '.1f')} / {_fmt(h.get('median_spread_deg'), '.1f')}")
        print(f"| {label} | {r['cpu_s']:.0f} | {h['cpu_s']:.0f} | {h['cpu_s'] / r['cpu_s']:.2f} | {r['wall_s']:.0f} | "
              f"{h['wall_s']:.0f} | {h['wall_s'] / r['wall_s']:.2f} | {h['hog_cpu_s']:.0f} | {spread} |")


def simulated_main(args) -> None:
    """The simulated set (junk, ground truth): one row per run."""
    t0 = time.time()
    star = simulate(args)
    print(f"# data: {args.n} particles, {args.box} px, {args.pixel} Å/px, SNR {args.snr}, junk {args.junk}, "
          f"K {args.k} (simulated in {time.time() - t0:.0f} s); load {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for name in args.runs.split(","):
        res = run_pair(args, name, star, Path(args.work) / name)
        for r in [res] + ([res["hog"]] if "hog" in res else []):
            r.update(quality(r["data"], star.parent / "truth.star"))
        rows.append(res)
        print(json.dumps(res), flush=True)
    print("\n| run | wall s | CPU s | s / 1k particle-passes (wall, CPU) | passes | peak MB | classes >=1% | "
          "median spread ° (random) | weighted spread ° | junk in junk classes | by kind | good in junk classes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        spread = _fmt(r["median_spread_deg"], ".1f")
        per = 1000 / max(r["passes"], 1)
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in r["junk_by_kind"].items())
        print(f"| {r['run']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {per * r['wall_s']:.2f}, "
              f"{per * r['cpu_s']:.2f} | {r['passes']} | {r['peak_mb']:.0f} | {r['classes_ge_1pct']} | {spread} "
              f"({r['random_spread_deg']:.1f}) | {_fmt(r['weighted_spread_deg'], '.1f')} | "
              f"{r['junk_in_junk_classes']:.2f} | {kinds} | {r['good_in_junk_classes']:.3f} |")
    if args.beside_hog:
        print_hog_table([(r["run"], r) for r in rows], args)


def main() -> None:
    """Parse the arguments; the anchor-set or the simulated benchmark."""
    from vitrify.core.threads import apply_thread_env

    apply_thread_env()  # the children inherit it, as jobs started by `vitrify` do
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--k", type=int, default=None, help="classes (default 50; anchor sets: 20)")
    p.add_argument("--box", type=int, default=64)
    p.add_argument("--pixel", type=float, default=3.0)
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--junk", type=float, default=0.2)
    p.add_argument("--structure", default="adk")
    p.add_argument("--diameter", type=float, default=0.0, help="Å; default 0.6 box (anchor sets: 170)")
    p.add_argument("--runs", default=None, help=f"comma-separated, of: {', '.join(RUNS)} (default vdam,em; "
                                                "anchor sets: vdam)")
    p.add_argument("--vdam-iter", type=int, default=200)
    p.add_argument("--em-iter", type=int, default=25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default="/tmp/vitrify_bench_class2d/data",
                   help="simulated set's folder (made if missing), or anchor-set folders, comma-separated")
    p.add_argument("--work", default="/tmp/vitrify_bench_class2d/work")
    p.add_argument("--beside-hog", action="store_true", help="also run each job beside a CPU hog; print both")
    p.add_argument("--hog-procs", type=int, default=0, help="busy processes of the hog (default --threads)")
    p.add_argument("--child", default="")
    p.add_argument("--star", default="")
    args = p.parse_args()
    if args.child:
        child(args)
        return
    from _anchor import is_anchor_set

    anchors = [Path(d) for d in args.data.split(",") if is_anchor_set(d)]
    if anchors and len(anchors) != len(args.data.split(",")):
        raise SystemExit(f"--data: mix of anchor sets and other folders: {args.data}")
    args.k = args.k or (20 if anchors else 50)
    args.runs = args.runs or ("vdam" if anchors else "vdam,em")
    if args.diameter <= 0:
        args.diameter = 170.0 if anchors else 0.6 * args.box * args.pixel
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs "
          f"({len(os.sched_getaffinity(0))} usable), load {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if anchors:
        anchor_main(args, anchors)
    else:
        simulated_main(args)
    print(f"# done {time.strftime('%H:%M UTC', time.gmtime())}, load "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Class-ranker benchmark: particle selection on held-out simulated 2D jobs, timing, and a baseline.

Jobs come from ``benchmarks/ranker_data.py`` (labelled and cached by ``benchmarks/ranker_train.py``):
``val*`` jobs are of structures never used in training (10-40 % junk of several kinds); the
``trn*`` jobs held out by ``ranker_train.py``'s split (every ``--val-every``-th) choose the
default threshold and the baseline's parameters, so nothing is tuned on the test jobs.

Definitions (RELION-4.0 paper, relative to the truly good particles ``G`` = real particles of the
job): ``FPR = junk particles selected / G``, ``FNR = real particles not selected / G``.
"Best threshold" is the per-job threshold minimising FPR + FNR (the paper's tuned threshold).

Oracle: the selection of every class holding more real than junk particles, the floor any
class-level selection has on that 2D job (junk that the 2D job mixed into good classes).

Baseline (what a user might script): keep classes whose estimated resolution is within a factor
``f`` of the job's best class and that hold at least 1 % of the particles; ``f`` chosen on the
validation jobs from 1.1 .. 3.

Usage::

    python benchmarks/ranker.py --root ranker_data [--model model.pt] [--timing-only]

Timing (``--timing``): features + network for 100 classes of 64 px on the CPU, best of 3, as
:func:`vitrify.ranker.selection.score_job` runs them in the job.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from vitrify.core.threads import apply_thread_env

apply_thread_env()  # the OpenMP policy of `vitrify` commands (passive waits), before torch loads

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ranker_train import cache_job, complete_jobs, optimiser_of, split  # noqa: E402

THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.01), 2)
FACTORS = (1.1, 1.25, 1.5, 2.0, 3.0)


def rates(selected: np.ndarray, cache: dict) -> tuple[float, float]:
    """(FPR, FNR) of a class selection ``(k,)`` relative to the job's real particles."""
    good = float(cache["n_total_real"])
    fp = float(cache["n_junk"][selected].sum())
    fn = good - float(cache["n_real"][selected].sum())
    return fp / good, fn / good


def scores_of(net, cache: dict) -> np.ndarray:
    """Scores of the cached ranked classes."""
    from vitrify.ranker.network import score_classes

    return score_classes(net, torch.as_tensor(cache["images"]), torch.as_tensor(cache["vectors"])).numpy()


def baseline_selection(cache: dict, factor: float) -> np.ndarray:
    """Classes within ``factor`` of the best resolution holding >= 1 % of the ranked particles."""
    counts = cache["n_real"] + cache["n_junk"]
    d = cache["resolution"]
    return (d <= factor * d.min()) & (counts >= 0.01 * counts.sum())


def pick_threshold(scored: list[tuple[np.ndarray, dict]]) -> float:
    """Threshold minimising the mean FPR + FNR over validation jobs."""
    cost = [np.mean([sum(rates(s >= t, c)) for s, c in scored]) for t in THRESHOLDS]
    return float(THRESHOLDS[int(np.argmin(cost))])


def pick_factor(caches: list[dict]) -> float:
    """Baseline factor minimising the mean FPR + FNR over validation jobs."""
    cost = [np.mean([sum(rates(baseline_selection(c, f), c)) for c in caches]) for f in FACTORS]
    return FACTORS[int(np.argmin(cost))]


def job_row(name: str, scores: np.ndarray, cache: dict, threshold: float, factor: float) -> dict:
    """One table row: FPR/FNR at the default and the best threshold, and of the baseline."""
    fpr, fnr = rates(scores >= threshold, cache)
    best_t = THRESHOLDS[int(np.argmin([sum(rates(scores >= t, cache)) for t in THRESHOLDS]))]
    bfpr, bfnr = rates(scores >= best_t, cache)
    base = rates(baseline_selection(cache, factor), cache)
    best_f = min(FACTORS, key=lambda f: sum(rates(baseline_selection(cache, f), cache)))
    base_best = rates(baseline_selection(cache, best_f), cache)
    junk = float(cache["n_junk"].sum() / (cache["n_junk"].sum() + cache["n_total_real"]))
    oracle = rates(cache["n_real"] > cache["n_junk"], cache)  # best any class-level selection can do
    return {"job": name, "classes": len(scores), "junk": junk, "fpr": fpr, "fnr": fnr, "best_t": float(best_t),
            "best_fpr": bfpr, "best_fnr": bfnr, "base_fpr": base[0], "base_fnr": base[1],
            "base_best_fpr": base_best[0], "base_best_fnr": base_best[1], "oracle_fpr": oracle[0],
            "oracle_fnr": oracle[1]}


def time_100_classes(job_dir: Path, net) -> tuple[float, float]:
    """(wall, CPU) seconds, best of 3, to compute features and scores of 100 classes (a job's classes
    tiled); the CPU time (user + system of this process) is the fairer figure on a shared machine."""
    from vitrify.ranker.inputs import read_class2d_job
    from vitrify.ranker.selection import score_job

    job = read_class2d_job(optimiser_of(job_dir))
    reps = -(-100 // len(job.model_classes))
    classes = pd.concat([job.model_classes] * reps, ignore_index=True).iloc[:100]
    classes["rlnClassDistribution"] = 0.01
    classes["rlnReferenceImage"] = [f"{i + 1:06d}@x" for i in range(100)]
    data = dataclasses.replace(job.data, data=pd.concat([job.data.data] * 2, ignore_index=True))
    big = dataclasses.replace(job, model_classes=classes, images=np.concatenate([job.images] * reps)[:100], data=data)
    walls, cpus = [], []
    for _ in range(3):
        start, cpu = time.perf_counter(), time.process_time()
        scores = score_job(big, net).scores
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    assert (scores > -1).sum() == 100
    return min(walls), min(cpus)


def print_table(rows: list[dict], threshold: float, factor: float) -> None:
    """Markdown table of the held-out jobs."""
    print(f"\ndefault threshold {threshold} (chosen on validation jobs); baseline factor {factor}\n")
    print("| job | classes | junk | FPR @default | FNR @default | best t | FPR @best | FNR @best "
          "| baseline FPR | baseline FNR | baseline (best f) FPR / FNR | oracle FPR / FNR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['job']} | {r['classes']} | {r['junk']:.2f} | {r['fpr']:.3f} | {r['fnr']:.3f} | {r['best_t']:.2f} "
              f"| {r['best_fpr']:.3f} | {r['best_fnr']:.3f} | {r['base_fpr']:.3f} | {r['base_fnr']:.3f} "
              f"| {r['base_best_fpr']:.3f} / {r['base_best_fnr']:.3f} "
              f"| {r['oracle_fpr']:.3f} / {r['oracle_fnr']:.3f} |")
    keys = ("fpr", "fnr", "best_fpr", "best_fnr", "base_fpr", "base_fnr")
    means = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    print("| **mean** | | | " + " | ".join(f"{means[k]:.3f}" for k in keys[:2]) + " | | "
          + " | ".join(f"{means[k]:.3f}" for k in keys[2:]) + " | | |")
    met = sum(r["fpr"] < 0.1 and r["fnr"] < 0.1 for r in rows)
    print(f"\nboth FPR and FNR < 0.1 at the default threshold: {met} of {len(rows)} held-out jobs")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (module docstring)."""
    from vitrify.ranker.network import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None, help="weights (default: the shipped model)")
    parser.add_argument("--val-every", type=int, default=5)
    parser.add_argument("--timing", action="store_true", help="also time scoring 100 classes")
    parser.add_argument("--timing-only", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    net, manifest = load_model(args.model)
    jobs = complete_jobs(args.root)
    _, val, test = split(jobs, args.val_every)
    report: dict = {"model": str(args.model or "shipped"), "model_info": manifest.get("info", {})}
    if args.timing or args.timing_only:
        wall, cpu = time_100_classes(test[0] if test else jobs[0], net)
        report["seconds_100_classes"] = {"wall": wall, "cpu": cpu, "threads": torch.get_num_threads()}
        print(f"features + scores of 100 classes: {wall:.3f} s wall, {cpu:.3f} s CPU "
              f"({torch.get_num_threads()} threads; best of 3)", flush=True)
        if args.timing_only:
            return
    val_scored = [(scores_of(net, cache_job(j)), cache_job(j)) for j in val]
    threshold = pick_threshold(val_scored) if val_scored else 0.5
    factor = pick_factor([c for _, c in val_scored]) if val_scored else 1.5
    rows = [job_row(j.name, scores_of(net, cache_job(j)), cache_job(j), threshold, factor) for j in test]
    print_table(rows, threshold, factor)
    report.update({"threshold": threshold, "factor": factor, "rows": rows,
                   "validation_jobs": [j.name for j in val]})
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())

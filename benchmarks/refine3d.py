"""Gold-standard 3D auto-refinement against ground truth: the figures of docs/refine3d.md.

Simulated with vitrify's simulator (adenylate kinase from mdanalysistests): an asymmetric particle (adk),
a Cn assembly (adk C4) and a Dn assembly (adk D2), ``--n`` particles of ``--box`` px, SNR ``--snr``,
CTF; each refined by ``vitrify refine3d`` (a subprocess, as a user runs it) from the true map low-passed to
40 Å (``--ini-high``), with the set's point group. Per set: FSC of the refined map with the true map at
0.5 and 0.143 (unmasked, and inside the soft sphere of the particle diameter) beside the reported
gold-standard resolution (FSC 0.143 of the halves; unmasked, RELION's default) and their ratio; median
pose error (angle to the true orientation up to the point group; offset error); iterations; wall, CPU and
peak memory in total and per iteration (from run.log). Run:

    PYTHONPATH=src python benchmarks/refine3d.py --n 10000 --box 64 [--sets adk,adk_C4,adk_D2] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import re
import resource
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

SETS = {"adk": ("C1", 2.0), "adk_C4": ("C4", 2.5), "adk_D2": ("D2", 2.5)}  # point group, pixel size (Å)


def simulate(name: str, n: int, box: int, snr: float, out: Path) -> Path:
    """The particles of one set (kept when already there)."""
    from vitrify.sim.particles import ParticleOptions, simulate_particles

    if (out / "particles.star").exists():
        return out
    sym, pix = SETS[name]
    simulate_particles(ParticleOptions(structures=("adk",), n_particles=n, box_px=box, pixel_size_angst=pix,
                                       snr=snr, symmetry=sym, seed=11), out)
    return out


def diameter_angst(data: Path) -> float:
    """Mask diameter: the simulated particle's diameter plus 10 %, within the box."""
    from vitrify.io.star import read_star

    sim = read_star(data / "truth.star")["simulation"]
    optics = read_star(data / "particles.star")["optics"]
    pix, box = float(optics["rlnImagePixelSize"].iloc[0]), int(optics["rlnImageSize"].iloc[0])
    return min(2.2 * float(sim["vtfParticleRadiusPx"]), 0.95 * box) * pix


def refine(data: Path, job: Path, sym: str, diameter: float, threads: int, extra: list[str]) -> dict:
    """Run ``vitrify refine3d``; wall and CPU of the subprocess, its peak memory from run.log."""
    cmd = [sys.executable, "-m", "vitrify", "-q", "refine3d", "--i", str(data / "particles.star"),
           "--ref", str(data / "truth_map.mrc"), "--o", str(job), "--particle-diameter", f"{diameter:.1f}",
           "--sym", sym, "--threads", str(threads), *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"refine3d failed on {data}:\n{proc.stderr[-2000:]}")
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_mb": peak_mb(job), "command": " ".join(cmd)}


def peak_mb(job: Path) -> float:
    """The job's peak resident memory (MB), the last ``peak`` of run.log (the process's own maximum)."""
    found = re.findall(r"peak ([\d.]+) MB", (job / "run.log").read_text())
    return float(found[-1]) if found else math.nan


def iterations(job: Path) -> list[tuple[float, float]]:
    """(wall s, cumulative CPU s) at the end of every iteration, from run.log."""
    out, first = [], None
    for line in (job / "run.log").read_text().splitlines():
        stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() if line[:4].isdigit() else None
        if stamp is not None and first is None:
            first = stamp
        m = re.search(r"iteration \d+.*cpu ([\d.]+) s", line)
        if m and stamp is not None:
            out.append((stamp - first, float(m.group(1))))
    return out


def truth_figures(job: Path, data: Path, diameter: float, sym: str) -> dict:
    """FSC with the truth, reported resolution, pose errors."""
    from vitrify.core.euler import euler_to_matrix
    from vitrify.core.masks import soft_spherical_mask
    from vitrify.core.symmetry import symmetric_angular_distance_deg
    from vitrify.io.mrc import read_mrc
    from vitrify.io.star import read_star
    from vitrify.ml.gold import fsc_to_truth, resolution_angst

    truth, pix = read_mrc(data / "truth_map.mrc")
    truth = torch.as_tensor(truth).float()
    final = torch.as_tensor(read_mrc(job / "run_class001.mrc")[0]).float()
    n = truth.shape[0]
    sphere = soft_spherical_mask(n, diameter / pix / 2, 5.0)
    out = {}
    for name, mask in (("plain", None), ("masked", sphere)):
        curve = fsc_to_truth(final, truth, mask)
        out[f"{name}_05"] = resolution_angst(curve, n, pix, 0.5)
        out[f"{name}_0143"] = resolution_angst(curve, n, pix, 0.143)
    out["reported"] = float(read_star(job / "run_model.star")["model_general"]["rlnCurrentResolution"])
    refined = read_star(job / "run_data.star")["particles"]
    true = read_star(data / "truth.star")["particles"]
    cols = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
    a = torch.as_tensor(refined[cols].to_numpy(np.float64))
    b = torch.as_tensor(true[cols].to_numpy(np.float64))
    ang = symmetric_angular_distance_deg(euler_to_matrix(*a.T), euler_to_matrix(*b.T), sym)
    off = np.hypot(refined["rlnOriginXAngst"].to_numpy() - true["rlnOriginXAngst"].to_numpy(),
                   refined["rlnOriginYAngst"].to_numpy() - true["rlnOriginYAngst"].to_numpy())
    out["pose_deg"], out["offset_angst"] = float(ang.median()), float(np.median(off))
    out["pixel"], out["box"] = pix, n
    return out


def main(argv: list[str] | None = None) -> None:
    """Simulate, refine and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--snr", type=float, default=0.05)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/vitrify_refine3d_bench"))
    parser.add_argument("--extra", default="", help="More refine3d options, e.g. '--max-order 3'.")
    args = parser.parse_args(argv)
    print("| set | particles | box / Å/px | sym | reported (Å) | truth 0.5 plain / masked (Å) | truth 0.143 plain / "
          "masked (Å) | reported / truth-0.5 masked | truth 0.5 masked (px) | median pose error | median offset "
          "error | iterations | wall s | CPU s | peak MB | per iteration wall / CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.sets.split(","):
        sym, _ = SETS[name]
        data = simulate(name, args.n, args.box, args.snr, args.out / f"{name}_{args.n}_{args.box}")
        diameter = diameter_angst(data)
        job = args.out / f"{name}_{args.n}_{args.box}_job{int(time.time())}"
        run = refine(data, job, sym, diameter, args.threads, args.extra.split())
        f = truth_figures(job, data, diameter, sym)
        its = iterations(job)
        per_wall = its[-1][0] / len(its) if its else math.nan
        per_cpu = its[-1][1] / len(its) if its else math.nan
        print(f"| {name} | {args.n} | {args.box} / {f['pixel']:.2f} | {sym} | {f['reported']:.2f} "
              f"| {f['plain_05']:.2f} / {f['masked_05']:.2f} | {f['plain_0143']:.2f} / {f['masked_0143']:.2f} "
              f"| {f['reported'] / f['masked_05']:.2f} | {f['masked_05'] / f['pixel']:.2f} | {f['pose_deg']:.1f}° "
              f"| {f['offset_angst']:.2f} Å | {len(its) - 1} + final | {run['wall']:.0f} | {run['cpu']:.0f} "
              f"| {run['peak_mb']:.0f} | {per_wall:.0f} / {per_cpu:.0f} |", flush=True)
        print(f"<!-- {run['command']} -->", flush=True)


if __name__ == "__main__":
    main()

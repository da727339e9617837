"""3D classification benchmark: two conformations mixed 50/50, classified from a 60 Å low-pass.

``python benchmarks/class3d.py --out /tmp/c3d_bench`` simulates, per set, ``--n`` particles (CTF,
white noise at ``--snr``) of two states of a real structure shipped in an installed package, half
of each (the simulator draws each particle's state at random), runs ``vitrify class3d --K 2`` in a
child process from the first state's true map (``--start one``; the job low-passes it to
``--ini-high`` 60 Å, as RELION does; ``--start two``: from both states' maps, one per class) with
RELION's defaults otherwise (EM, T 4; offsets 5 px in coarse steps of 1 px) unless ``--iter`` /
``--healpix-order`` say otherwise, and prints one table row per set:

- % of particles in the right class (classes matched to the states by the better permutation);
- per-class FSC to its true map at 0.5 and 0.143 (each class shifted onto its state's map by the
  integer shift of the cross-correlation peak first: each state is centred on its own centre of mass);
- wall, CPU (user + sys of the child) and peak RSS of the child.

Sets: ``dimer`` (progesterone receptor ligand-binding domain, PDB 1A28: the two-chain complex and
chain A alone, "a complex with and without a subunit"), ``adk_oc`` (adenylate kinase open vs
closed, two conformations of one chain), ``adk_d2`` (a D2 assembly of adenylate kinase with and
without one of its four chains).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

#: set -> (the two states: example structure name[:chain] or "adk:D2[-1]", pixel size Å at 64 px, diameter Å)
SETS = {
    "dimer": (("1a28", "1a28:A"), 2.2, 110.0),
    "adk_oc": (("adk", "adk_closed"), 1.6, 85.0),
    "adk_d2": (("adk:D2", "adk:D2-1"), 2.5, 140.0),
}


def _structure_files(name: str, out: Path) -> tuple[Path, Path]:
    """The two states of ``name`` as PDB files in ``out``."""
    from vitrify.io.atomic_model import write_atomic_model
    from vitrify.sim.structures import load_structure

    paths = []
    for i, spec in enumerate(SETS[name][0]):
        if spec.startswith("adk:"):
            atoms = load_structure("adk", symmetry="D2")
            if spec.endswith("-1"):
                atoms = atoms.select(atoms.chain_ids != atoms.chain_names()[-1])
        else:
            structure, _, chain = spec.partition(":")
            atoms = load_structure(structure)
            if chain:
                atoms = atoms.select_chain(chain)
        paths.append(write_atomic_model(out / f"state{i + 1}.pdb", atoms))
    return paths[0], paths[1]


def simulate(name: str, args: argparse.Namespace, out: Path) -> Path:
    """Particles of the set's two states (cached in ``out``)."""
    from vitrify.sim.particles import ParticleOptions, simulate_particles

    if (out / "truth.star").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    first, second = _structure_files(name, out)
    simulate_particles(ParticleOptions(structures=(str(first), str(second)), n_particles=args.n, box_px=args.box,
                                       pixel_size_angst=SETS[name][1] * 64 / args.box, snr=args.snr,
                                       seed=args.seed), out)
    return out


def reference(data: Path, start: str) -> Path:
    """``one``: the first state's true map; ``two``: a STAR file naming both states' maps (one per class)."""
    if start == "one":
        return data / "truth_map.mrc"
    path = data / "references.star"
    path.write_text(f"data_\nloop_\n_rlnReferenceImage\n{data / 'truth_map.mrc'}\n{data / 'truth_map_002.mrc'}\n")
    return path


def run_job(data: Path, job: Path, args: argparse.Namespace, diameter_angst: float) -> dict:
    """``vitrify class3d`` in a child process: wall, CPU and peak RSS of the child."""
    particles = data / ("truth.star" if args.sigma_ang > 0 else "particles.star")  # poses for local searches
    cmd = [sys.executable, "-m", "vitrify", "-q", "class3d", "--i", str(particles), "--ref",
           str(reference(data, args.start)), "--o", str(job), "--K", "2", "--particle-diameter", str(diameter_angst),
           "--ini-high", str(args.ini_high), "--iter", str(args.iter), "--healpix-order", str(args.healpix_order),
           "--threads", str(args.threads), "--seed", str(args.seed), "--sigma-ang", str(args.sigma_ang),
           "--offset-range", "5", "--offset-step", "1"]  # coarse 1 px (finer than RELION's 2), as recorded
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, "VITRIFY_QUIET": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"class3d failed ({status}): {' '.join(cmd)}")
    return {"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_mb": usage.ru_maxrss / 1024.0, "command": " ".join(cmd[1:])}


def shift_onto(volume: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``volume`` moved by the integer shift that maximises its cross-correlation with ``truth``."""
    cc = torch.fft.irfftn(torch.fft.rfftn(truth) * torch.fft.rfftn(volume).conj(), s=truth.shape)
    shift = np.unravel_index(int(torch.argmax(cc)), tuple(cc.shape))
    return torch.roll(volume, shifts=tuple(int(s) for s in shift), dims=(0, 1, 2))


def evaluate(data: Path, job: Path, iteration: int) -> dict:
    """Class assignment accuracy and per-class FSC(truth) of the job's last iteration."""
    from vitrify.core.fsc import fsc, resolution_at_threshold
    from vitrify.io.mrc import read_mrc
    from vitrify.io.star import read_star

    truth = read_star(data / "truth.star")["particles"]["vtfMapIndex"].to_numpy()
    cls = read_star(job / f"run_it{iteration:03d}_data.star")["particles"]["rlnClassNumber"].to_numpy()
    same, swapped = float((cls == truth).mean()), float((cls == 3 - truth).mean())
    order = (1, 2) if same >= swapped else (2, 1)  # class of state 1, class of state 2
    out = {"right_class_pct": 100.0 * max(same, swapped), "class_of_state": order}
    model = read_star(job / f"run_it{iteration:03d}_model.star")["model_classes"]
    for state, k in enumerate(order, start=1):
        name = "truth_map.mrc" if state == 1 else f"truth_map_{state:03d}.mrc"
        true_map, pixel = read_mrc(data / name)
        true_map = torch.as_tensor(true_map).float()
        vol = torch.as_tensor(read_mrc(job / f"run_it{iteration:03d}_class{k:03d}.mrc")[0]).float()
        curve = fsc(shift_onto(vol, true_map), true_map)
        n = true_map.shape[-1]
        out[f"state{state}"] = {
            "class": k, "fraction_pct": 100.0 * float(model["rlnClassDistribution"].iloc[k - 1]),
            "fsc05_angst": float(resolution_at_threshold(curve, n, pixel, 0.5)),
            "fsc0143_angst": float(resolution_at_threshold(curve, n, pixel, 0.143)),
            "estimated_resolution_angst": float(model["rlnEstimatedResolution"].iloc[k - 1])}
    return out


def main() -> None:
    """Simulate, classify and print one JSON line per set, then the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sets", default="dimer,adk_oc", help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--box", type=int, default=64, help="box (px); pixel sizes scale to keep the field of view")
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--iter", type=int, default=25)
    parser.add_argument("--healpix-order", type=int, default=2)
    parser.add_argument("--ini-high", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sigma-ang", type=float, default=0.0,
                        help="> 0: local searches around the true poses (truth.star as input, standing in for a "
                             "consensus refinement's poses)")
    parser.add_argument("--start", choices=("one", "two"), default="one",
                        help="one: K classes from state 1's map (RELION's usual start); two: each state's map")
    args = parser.parse_args()
    rows = []
    for name in args.sets.split(","):
        data = simulate(name, args, args.out / f"{name}_n{args.n}_box{args.box}_snr{args.snr}")
        search = f"local{args.sigma_ang:g}" if args.sigma_ang > 0 else "global"
        job = args.out / f"{name}_job_it{args.iter}_o{args.healpix_order}_{args.start}_{search}"
        cost = run_job(data, job, args, SETS[name][2])
        row = {"set": name, "start": args.start, "search": search, "n": args.n, "box": args.box, "snr": args.snr,
               **evaluate(data, job, args.iter), **cost}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("| set | start | search | particles | box | SNR | right class | state 1: FSC 0.5 / 0.143 (class %) | "
          "state 2: FSC 0.5 / 0.143 (class %) | wall s | CPU s | peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s1, s2 = r["state1"], r["state2"]
        print(f"| {r['set']} | {r['start']} | {r['search']} | {r['n']} | {r['box']} | {r['snr']} | "
              f"{r['right_class_pct']:.1f} % | "
              f"{s1['fsc05_angst']:.1f} / {s1['fsc0143_angst']:.1f} Å ({s1['fraction_pct']:.0f} %) | "
              f"{s2['fsc05_angst']:.1f} / {s2['fsc0143_angst']:.1f} Å ({s2['fraction_pct']:.0f} %) | "
              f"{r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()

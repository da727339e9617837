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


def run_child(cmd: list[str]) -> dict:
    """``cmd`` in a child process: wall, CPU (user + sys) and peak RSS of the child."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, "VITRIFY_QUIET": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{cmd[4]} failed ({status}): {' '.join(cmd)}")
    return {"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_mb": usage.ru_maxrss / 1024.0, "command": " ".join(cmd[1:])}


def consensus(data: Path, job: Path, args: argparse.Namespace, diameter_angst: float) -> dict:
    """``--poses refine3d``: a C1 consensus ``vitrify refine3d`` of all particles from state 1's map
    (low-passed to 40 Å by the job), RELION's usual route before classifying with local searches."""
    if (job / "run_data.star").exists():
        return {"wall_s": 0.0, "cpu_s": 0.0, "peak_mb": 0.0, "command": "(reused)"}
    return run_child([sys.executable, "-m", "vitrify", "-q", "refine3d", "--i", str(data / "particles.star"),
                      "--ref", str(data / "truth_map.mrc"), "--o", str(job), "--particle-diameter",
                      str(diameter_angst), "--threads", str(args.threads), "--offset-range", "5", "--offset-step", "1"])


def run_job(data: Path, job: Path, args: argparse.Namespace, diameter_angst: float) -> dict:
    """``vitrify class3d`` in a child process: wall, CPU and peak RSS of the child (with ``--poses
    refine3d``: of the consensus refinement and the classification together)."""
    particles, ref, cost = data / "particles.star", reference(data, args.start), None
    if args.sigma_ang > 0 and args.poses == "truth":
        particles = data / "truth.star"  # the true poses stand in for a consensus refinement's
    elif args.poses == "refine3d":
        refined = job.parent / f"{job.name}_consensus"
        cost = consensus(data, refined, args, diameter_angst)
        particles, ref = refined / "run_data.star", refined / "run_class001.mrc"
    cmd = [sys.executable, "-m", "vitrify", "-q", "class3d", "--i", str(particles), "--ref",
           str(ref), "--o", str(job), "--K", "2", "--particle-diameter", str(diameter_angst),
           "--ini-high", str(args.ini_high), "--iter", str(args.iter), "--healpix-order", str(args.healpix_order),
           "--threads", str(args.threads), "--seed", str(args.seed), "--sigma-ang", str(args.sigma_ang),
           "--offset-range", "5", "--offset-step", "1"]  # coarse 1 px (finer than RELION's 2), as recorded
    out = run_child(cmd)
    if cost is not None:
        out = {"wall_s": out["wall_s"] + cost["wall_s"], "cpu_s": out["cpu_s"] + cost["cpu_s"],
               "peak_mb": max(out["peak_mb"], cost["peak_mb"]), "command": f"{cost['command']} ; {out['command']}",
               "consensus_cpu_s": cost["cpu_s"]}
    return out


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


def oracle(data: Path, resolutions_angst: list[float]) -> dict[str, float]:
    """The ceiling of any classifier: % of particles whose image is nearer (least squares, one scale per
    map) to its own state's true map than to the other's, projected at the TRUE pose with the true CTF,
    images and projections low-passed to each resolution (0: none). It shows at which resolution the
    states' difference is carried (the CTF leaves little of it at low resolution)."""
    import mrcfile

    from vitrify.core.ctf import CtfParams
    from vitrify.core.euler import euler_to_matrix
    from vitrify.core.filters import lowpass_filter
    from vitrify.core.projector import make_projector
    from vitrify.io.mrc import read_mrc
    from vitrify.io.star import read_star
    from vitrify.sim.render import apply_ctf, project_particles

    star = read_star(data / "truth.star")
    p, optics = star["particles"], star["optics"]
    pixel = float(optics["rlnImagePixelSize"].iloc[0])
    col = lambda name: torch.tensor(p[name].to_numpy(), dtype=torch.float32)  # noqa: E731
    rot = euler_to_matrix(col("rlnAngleRot"), col("rlnAngleTilt"), col("rlnAnglePsi"))
    origins_px = torch.stack([col("rlnOriginXAngst"), col("rlnOriginYAngst")], 1) / pixel
    ctf = CtfParams(pixel_size_angst=pixel, voltage_kv=float(optics["rlnVoltage"].iloc[0]),
                    cs_mm=float(optics["rlnSphericalAberration"].iloc[0]),
                    amplitude_contrast=float(optics["rlnAmplitudeContrast"].iloc[0]),
                    defocus_u_angst=col("rlnDefocusU"), defocus_v_angst=col("rlnDefocusV"),
                    defocus_angle_deg=col("rlnDefocusAngle"))
    images = torch.as_tensor(mrcfile.read(data / "particles.mrcs").astype(np.float32))
    projections = [apply_ctf(project_particles(make_projector(torch.as_tensor(read_mrc(data / name)[0]).float()),
                                               rot, origins_px), ctf)
                   for name in ("truth_map.mrc", "truth_map_002.mrc")]
    truth = p["vtfMapIndex"].to_numpy()
    out = {}
    for res in resolutions_angst:
        filt = (lambda x: lowpass_filter(x, res, pixel)) if res > 0 else (lambda x: x)  # noqa: E731
        x = filt(images)
        misfit = []
        for proj in projections:
            proj = filt(proj)
            scale = float((proj * x).sum() / (proj * proj).sum())
            misfit.append(((x - scale * proj) ** 2).sum((1, 2)))
        nearest = np.where((misfit[0] <= misfit[1]).numpy(), 1, 2)
        out["none" if res <= 0 else f"{res:g} A"] = 100.0 * float((nearest == truth).mean())
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
    parser.add_argument("--poses", choices=("truth", "refine3d"), default="truth",
                        help="with --sigma-ang: truth: the true poses; refine3d: a consensus vitrify refine3d first")
    parser.add_argument("--start", choices=("one", "two"), default="one",
                        help="one: K classes from state 1's map (RELION's usual start); two: each state's map")
    parser.add_argument("--oracle", action="store_true",
                        help="print only the ceiling: right class at the true poses with the true maps (per low-pass)")
    args = parser.parse_args()
    rows = []
    if args.oracle:
        for name in args.sets.split(","):
            data = simulate(name, args, args.out / f"{name}_n{args.n}_box{args.box}_snr{args.snr}")
            print(json.dumps({"set": name, "box": args.box, "oracle_right_class_pct_by_lowpass":
                              oracle(data, [0.0, 10.0, 12.0, 15.0, 20.0, 30.0, 60.0])}), flush=True)
        return
    for name in args.sets.split(","):
        data = simulate(name, args, args.out / f"{name}_n{args.n}_box{args.box}_snr{args.snr}")
        search = f"local{args.sigma_ang:g}" if args.sigma_ang > 0 else "global"
        search += "_refine3d" if args.poses == "refine3d" else ""
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

r"""Make the class ranker's training and validation jobs: simulate, classify in 2D, keep the truth.

Each job is one simulated particle data set (a real structure from the ``mdanalysistests``
package, optionally built into a symmetric assembly; its own box, pixel size, SNR, defocus,
junk fraction and kinds, shifts) classified by our own class2d (EM), written as::

    <root>/<job>/spec.json            what was simulated and how it was classified
    <root>/<job>/sim/                 particles.star/.mrcs, truth.star, truth_map*.mrc
    <root>/<job>/Class2D/run_itNNN_*  the 2D job (the ranker's input)

Labels (a target score per class from the ground truth) are computed afterwards by
``vitrify.ranker.labels`` (``benchmarks/ranker_train.py``). The job list is a seeded random draw
over the grid below: ``--n-jobs`` jobs from seed ``--seed``; structures in :data:`HELD_OUT` are
only used for jobs with ``--held-out`` (validation of "a structure never seen in training").

Usage (the shipped model's set; it runs for hours on a shared 2-core machine)::

    nice -n 5 flock -s /tmp/vitrify-bench.lock python benchmarks/ranker_data.py --root ranker_data \\
        --n-jobs 60 --seed 1
    nice -n 5 flock -s /tmp/vitrify-bench.lock python benchmarks/ranker_data.py --root ranker_data \\
        --n-jobs 8 --seed 1001 --held-out

Jobs already complete in ``--root`` are skipped, so the command can be stopped and restarted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: structure name -> (file in MDAnalysisTests/data, symmetries it is used with)
STRUCTURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "adk": ("adk_open.pdb", ("C1", "C2", "D2")),
    "cftr": ("6msm.pdb.bz2", ("C1",)),
    "1hvr": ("1hvr.pdb", ("C1",)),
    "1a28": ("1a28.pdb.gz", ("C1",)),
    "19hc": ("19hc.pdb.gz", ("C1",)),
    "adk_closed": ("adk_closed.pdb", ("C3",)),
    "1osm": ("1osm.pdb.gz", ("C1", "C3")),   # held out
    "4E43": ("4E43.pdb", ("C1",)),            # held out
}
#: structures never used for training jobs
HELD_OUT: tuple[str, ...] = ("1osm", "4E43")
JUNK_SETS: tuple[tuple[str, ...], ...] = (
    ("noise", "ice", "carbon", "aggregate"), ("noise", "ice"), ("carbon", "aggregate"), ("noise",), ("ice",),
    ("aggregate",))


@dataclass(frozen=True)
class JobSpec:
    """One simulated 2D job."""

    name: str
    structure: str
    symmetry: str
    n_particles: int
    box_px: int
    pixel_size_angst: float
    snr: float
    junk_fraction: float
    junk_kinds: tuple[str, ...]
    max_shift_px: float
    defocus_max_angst: float
    n_classes: int
    iterations: int
    seed: int
    held_out: bool


def structure_path(name: str) -> str:
    """Path of a structure file of the ``mdanalysistests`` package."""
    from vitrify.io.structures import _mdanalysistests_data

    return str(_mdanalysistests_data() / STRUCTURES[name][0])


def draw_specs(n_jobs: int, seed: int, held_out: bool, scale: float = 1.0) -> list[JobSpec]:
    """A seeded random draw of ``n_jobs`` job specifications (``scale`` shrinks particle counts)."""
    rng = np.random.default_rng(seed)
    pool = [s for s in STRUCTURES if (s in HELD_OUT) == held_out]
    specs = []
    for i in range(n_jobs):
        structure = pool[i % len(pool)]
        symmetry = str(rng.choice(STRUCTURES[structure][1]))
        box = int(rng.choice([48, 64, 80]))
        radius = _radius_estimate(structure, symmetry)
        fill = float(rng.uniform(0.55, 0.8))  # particle diameter / box
        pixel = round(float(np.clip(2.0 * radius / (fill * box), 1.0, 6.0)), 2)
        specs.append(JobSpec(
            name=f"{'val' if held_out else 'trn'}{seed:04d}_{i:03d}_{structure}_{symmetry}",
            structure=structure, symmetry=symmetry, n_particles=max(60, int(scale * rng.integers(600, 1200))),
            box_px=box, pixel_size_angst=pixel, snr=float(np.exp(rng.uniform(np.log(0.02), np.log(0.3)))),
            junk_fraction=float(rng.choice([0.1, 0.2, 0.3, 0.4])),
            junk_kinds=tuple(JUNK_SETS[int(rng.integers(len(JUNK_SETS)))]),
            max_shift_px=float(rng.choice([1.0, 3.0, 5.0])), defocus_max_angst=float(rng.uniform(15000, 30000)),
            n_classes=int(rng.choice([10, 15, 20])), iterations=int(rng.choice([6, 10, 14])),
            seed=int(rng.integers(1, 2**31 - 1)), held_out=held_out))
    return specs


def _radius_estimate(structure: str, symmetry: str) -> float:
    """Rough particle radius (Å) used to choose a pixel size; assemblies are larger."""
    base = {"adk": 37.0, "cftr": 74.0, "1hvr": 32.0, "1a28": 48.0, "19hc": 47.0, "adk_closed": 28.0,
            "1osm": 35.0, "4E43": 32.0}[structure]
    return base * (1.0 if symmetry == "C1" else 1.8)


def run_spec(spec: JobSpec, root: Path, threads: int, outlier_z: float = 0.0) -> float:
    """Simulate and classify one job into ``root/spec.name``; return its wall time (s)."""
    from vitrify.jobs import class2d
    from vitrify.jobs.base import run_job
    from vitrify.sim.particles import ParticleOptions, simulate_particles

    start = time.time()
    job = root / spec.name
    sim = simulate_particles(ParticleOptions(
        structures=(structure_path(spec.structure),), symmetry=spec.symmetry, n_particles=spec.n_particles,
        box_px=spec.box_px, pixel_size_angst=spec.pixel_size_angst, snr=spec.snr,
        junk_fraction=spec.junk_fraction, junk_kinds=spec.junk_kinds, max_shift_px=spec.max_shift_px,
        defocus_max_angst=spec.defocus_max_angst, seed=spec.seed), job / "sim")
    diameter = min(2.3 * sim.particle_radius_px, spec.box_px - 2) * spec.pixel_size_angst
    options = class2d.Options(str(sim.particles_star), n_classes=spec.n_classes,
                              particle_diameter_angst=round(diameter, 1), algorithm="em",
                              nr_iter=spec.iterations, seed=spec.seed % 10000 + 1, threads=threads, device="cpu",
                              outlier_z=outlier_z)
    run_job(class2d.run, options, job / "Class2D")
    _keep_last_iteration(job / "Class2D", spec.iterations)
    (job / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
    return time.time() - start


def _keep_last_iteration(class2d_dir: Path, last: int) -> None:
    """Delete the files of earlier iterations (and the resume state) to save disk."""
    for path in class2d_dir.glob("run_it*"):
        if not path.name.startswith(f"run_it{last:03d}_") or path.name.endswith("vitrify_state.npz"):
            path.unlink()


def main(argv: list[str] | None = None) -> None:
    """Make the jobs named by the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--n-jobs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--held-out", action="store_true", help="held-out structures (validation/benchmark)")
    parser.add_argument("--scale", type=float, default=1.0, help="particle count factor (tests: tiny)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--outlier-z", type=float, default=0.0, help="class2d --outlier-z of the 2D jobs (0: off)")
    parser.add_argument("--only", default="", help="comma-separated job names: make only these")
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    for spec in draw_specs(args.n_jobs, args.seed, args.held_out, args.scale):
        if (args.root / spec.name / "spec.json").exists() or (args.only and spec.name not in args.only.split(",")):
            continue
        seconds = run_spec(spec, args.root, args.threads, args.outlier_z)
        print(f"{spec.name}: {spec.n_particles} particles, box {spec.box_px}, {spec.pixel_size_angst} A/px, "
              f"SNR {spec.snr:.3f}, junk {spec.junk_fraction} {'+'.join(spec.junk_kinds)}, K {spec.n_classes}: "
              f"{seconds:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())

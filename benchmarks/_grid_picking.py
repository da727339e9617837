"""LoG picking over a grid of micrograph conditions (recall and precision against simulated truth).

Usage::

    python benchmarks/_grid_picking.py [--size 1024] [--seeds 2] [--quick]

Each condition is simulated in memory with :mod:`vitrify.sim.micrographs` (weak-phase
particles of a real structure, ice with a thickness gradient, optional carbon edge, the CTF of
the micrograph's defocus and astigmatism, Poisson counts of the whole dose), then picked with
:func:`vitrify.preprocess.picking.pick_log` at its defaults, the diameter range taken as
relion_it takes it (:func:`vitrify.pipeline.autosetup`: LoG from 0.8 to 1.0 x the particle
diameter; the particle diameter is the structure's largest extent, 2 x its largest radius).
A pick matches an unused true centre within half the particle radius (one-to-one, greedy by
distance). The table lists per condition the precision, recall, picks/true counts and CPU
seconds of picking per micrograph; the last row pools every micrograph.
"""

from __future__ import annotations

import argparse
import resource
import time
import zlib
from dataclasses import dataclass

import numpy as np

#: tolerance of a match, as a fraction of the particle radius
MATCH_RADIUS_FRACTION = 0.5


@dataclass(frozen=True)
class Condition:
    """One cell of the grid: what changes from the base micrograph."""

    name: str
    structure: str = "cftr"
    particles: int = 60
    ice_nm: float = 30.0
    carbon: float = 0.0
    defocus_angst: tuple[float, float] = (8000.0, 30000.0)
    astigmatism_angst: float = 1500.0
    dose: float = 40.0
    pixel_angst: float = 1.5


def conditions(quick: bool = False) -> list[Condition]:
    """The grid: density, ice, carbon, defocus, astigmatism, SNR (dose), small particles."""
    grid = [
        Condition("sparse 10/field", particles=10),
        Condition("base 60/field (issue 15)"),
        Condition("dense 200/field (2.5 A/px)", particles=200, pixel_angst=2.5),
        Condition("thick ice 80 nm", ice_nm=80.0),
        Condition("carbon edge", carbon=1.0),
        Condition("defocus 0.5-1 um", defocus_angst=(5000.0, 10000.0)),
        Condition("defocus 3-4 um", defocus_angst=(30000.0, 40000.0)),
        Condition("astigmatism 2000 A", astigmatism_angst=2000.0),
        Condition("low dose 15 e/A2", dose=15.0),
        Condition("small (adk) sparse", structure="adk", particles=10),
        Condition("small (adk) 100/field", structure="adk", particles=100),
        Condition("small (adk) dense 200", structure="adk", particles=200),
        Condition("small (adk) carbon, 0.5-1 um", structure="adk", carbon=1.0, defocus_angst=(5000.0, 10000.0)),
    ]
    return grid[:3] + grid[9:10] if quick else grid


def particle_diameter_angst(structure: str) -> float:
    """The diameter a user would give: the structure's largest extent."""
    from vitrify.sim.structures import load_structure

    return 2.0 * load_structure(structure).max_radius_angst()


def simulate(condition: Condition, size_px: int, seed: int):
    """``(image (ny, nx) tensor, true centres (k, 2) x/y px, options)`` of one micrograph."""
    import torch

    from vitrify.sim.micrographs import MicrographOptions, build_specimen, draw_scene, render_intensity

    options = MicrographOptions(
        structures=(condition.structure,), n_micrographs=1, size_px=(size_px, size_px),
        pixel_size_angst=condition.pixel_angst, particles_per_micrograph=condition.particles,
        ice_thickness_nm=condition.ice_nm, carbon_fraction=condition.carbon,
        defocus_min_angst=condition.defocus_angst[0], defocus_max_angst=condition.defocus_angst[1],
        astigmatism_max_angst=condition.astigmatism_angst, n_frames=1, dose_per_frame=condition.dose,
        seed=seed)
    device = torch.device("cpu")
    rng = np.random.default_rng(seed)
    specimen = build_specimen(options, device)
    truth = draw_scene(options, specimen, rng)
    expected = render_intensity(options, specimen, truth, rng, device)
    expected = expected * options.total_dose * options.pixel_size_angst ** 2
    counts = torch.poisson(expected.clamp(min=0), generator=torch.Generator().manual_seed(seed))
    return counts, truth.coordinates_px, options


def cpu_seconds() -> float:
    """CPU time of this process and its children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def score_condition(condition: Condition, size_px: int, seeds: int, pick_options=None) -> dict:
    """Pooled matches of ``seeds`` micrographs of ``condition``."""
    from vitrify.preprocess.picking import LogPickOptions, match_picks, pick_log

    diameter = particle_diameter_angst(condition.structure)
    opts = pick_options or LogPickOptions(0.8 * diameter, diameter)
    tolerance = MATCH_RADIUS_FRACTION * diameter / 2 / condition.pixel_angst
    out = {"picks": 0, "true": 0, "tp_p": 0, "tp_t": 0, "cpu": 0.0, "n": 0}
    for seed in range(seeds):
        image, truth, _ = simulate(condition, size_px, 1000 * seed + zlib.crc32(condition.name.encode()) % 997)
        start = cpu_seconds()
        picks = pick_log(image, condition.pixel_angst, opts)
        out["cpu"] += cpu_seconds() - start
        xy = np.stack([picks.x_px, picks.y_px], 1)
        precision, recall = match_picks(xy, truth, tolerance)
        out["picks"] += len(xy)
        out["true"] += len(truth)
        out["tp_p"] += round(precision * len(xy))
        out["tp_t"] += round(recall * len(truth))
        out["n"] += 1
    return out


def row(name: str, s: dict) -> str:
    """One table row."""
    precision = s["tp_p"] / max(s["picks"], 1) if s["picks"] else 1.0
    recall = s["tp_t"] / max(s["true"], 1)
    return (f"| {name} | {precision:.3f} | {recall:.3f} | {s['picks']} / {s['true']} | "
            f"{s['cpu'] / max(s['n'], 1):.2f} |")


def picking_table(size_px: int = 1024, seeds: int = 2, quick: bool = False) -> list[str]:
    """Markdown table of LoG picking over the grid; prints rows as they finish."""
    lines = [f"LoG picking, {size_px}² px micrographs, {seeds} per condition, match within "
             f"{MATCH_RADIUS_FRACTION:g} x particle radius",
             "| condition | precision | recall | picks / true | CPU s per micrograph |", "|---|---|---|---|---|"]
    for line in lines:
        print(line, flush=True)
    total = {"picks": 0, "true": 0, "tp_p": 0, "tp_t": 0, "cpu": 0.0, "n": 0}
    for condition in conditions(quick):
        scores = score_condition(condition, size_px, seeds)
        for key in total:
            total[key] += scores[key]
        lines.append(row(condition.name, scores))
        print(lines[-1], flush=True)
    lines.append(row("**all**", total))
    print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="four conditions only")
    args = parser.parse_args(argv)
    start = time.time()
    picking_table(args.size, args.seeds, args.quick)
    print(f"({time.time() - start:.0f} s wall)")


if __name__ == "__main__":
    main()

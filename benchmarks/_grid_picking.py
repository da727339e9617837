"""LoG picking over the grid of micrograph conditions (recall and precision against simulated truth).

Usage::

    python benchmarks/_grid_picking.py [--work DIR] [--n 2] [--size 1024] [--quick]

The micrographs are the shared grid's (``benchmarks/_grid.py``: outside-like, base, density 10
and 200 per 1024² field, thick ice, carbon edge, low dose, small particles; defocus 0.5-4 µm and
astigmatism 0-2000 Å drawn per micrograph) plus small-particle (ADK) variations: sparse, dense,
on carbon, at low dose. Each micrograph is picked with
:func:`vitrify.preprocess.picking.pick_log` at its defaults, the diameter range taken as
relion_it takes it (:mod:`vitrify.pipeline.autosetup`: LoG from 0.8 to 1.0 x the particle
diameter; the particle diameter is the structure's largest extent, 2 x its largest radius).
A pick matches an unused true centre within half the particle radius (one-to-one, greedy by
distance). Printed: per condition and per defocus bin, precision, recall, picks / true centres,
the recall of *separable* particles (no other centre closer than the smallest LoG diameter:
where the grid crowds particles until their projections overlap, two centres closer than that
make one blob for a blob detector) and CPU seconds of picking per micrograph; the last row
pools every micrograph.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _grid import LOW_DOSE, grid_conditions, simulate_grid  # noqa: E402

#: tolerance of a match, as a fraction of the particle radius
MATCH_RADIUS_FRACTION = 0.5
#: defocus bins (µm) of the second table
DEFOCUS_BINS_UM = ((0.5, 1.5), (1.5, 2.5), (2.5, 4.0))


def picking_conditions(quick: bool = False) -> list:
    """The shared grid plus small-particle variations (sparse, dense, carbon, low dose)."""
    grid = grid_conditions()
    small = next(c for c in grid if c.name == "small-particles")
    extra = [replace(small, name="small-sparse-10", particles_per_field=10),
             replace(small, name="small-dense-200", particles_per_field=200),
             replace(small, name="small-carbon", carbon_fraction=1.0),
             replace(small, name="small-low-dose", dose_e_per_angst2=LOW_DOSE)]
    every = grid + extra
    if quick:
        return [c for c in every if c.name in ("outside-like", "sparse-10", "dense-200", "small-particles")]
    return every


def cpu_seconds() -> float:
    """CPU time of this process and its children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def separable(truth, distance_px: float) -> np.ndarray:
    """``(k,)`` True for true centres ``(k, 2)`` with no other centre closer than ``distance_px``."""
    if len(truth) < 2:
        return np.ones(len(truth), dtype=bool)
    d = np.sqrt(((truth[:, None] - truth[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return d.min(1) >= distance_px


def pick_set(grid_set, particles) -> list[dict]:
    """Pick every micrograph of one condition; one record of counts per micrograph."""
    import torch

    from vitrify.io.mrc import read_mrc
    from vitrify.io.star import read_star
    from vitrify.preprocess.picking import LogPickOptions, match_picks, pick_log

    diameter = 2 * grid_set.radius_angst
    options = LogPickOptions(0.8 * diameter, diameter)   # relion_it: LoG 0.8-1.0 x diameter
    star = read_star(grid_set.star)
    pixel = float(star["optics"]["rlnMicrographPixelSize"].iloc[0])
    tolerance = MATCH_RADIUS_FRACTION * grid_set.radius_angst / pixel
    records = []
    for name in star["micrographs"]["rlnMicrographName"]:
        data, _ = read_mrc(grid_set.directory / name)
        image = torch.as_tensor(np.asarray(data, dtype=np.float32))
        start = cpu_seconds()
        picks = pick_log(image, pixel, options)
        cpu = cpu_seconds() - start
        mine = particles[(particles["condition"] == grid_set.condition.name)
                         & (particles["rlnMicrographName"] == name)]
        truth = mine[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
        xy = np.stack([picks.x_px, picks.y_px], 1)
        precision, recall = match_picks(xy, truth, tolerance)
        apart = separable(truth, options.diameter_min_angst / pixel)
        _, recall_apart = match_picks(xy, truth[apart], tolerance)
        records.append({"condition": grid_set.condition.name, "micrograph": name, "picks": len(xy),
                        "true": len(truth), "tp_picks": round(precision * len(xy)),
                        "tp_true": round(recall * len(truth)), "apart": int(apart.sum()),
                        "tp_apart": round(recall_apart * apart.sum()), "cpu": cpu})
    return records


def row(name: str, records: list[dict]) -> str:
    """One table row pooled over ``records``."""
    picks = sum(r["picks"] for r in records)
    true = sum(r["true"] for r in records)
    precision = sum(r["tp_picks"] for r in records) / picks if picks else 1.0
    recall = sum(r["tp_true"] for r in records) / true if true else 1.0
    apart = sum(r["apart"] for r in records)
    recall_apart = sum(r["tp_apart"] for r in records) / apart if apart else 1.0
    cpu = sum(r["cpu"] for r in records) / max(len(records), 1)
    return (f"| {name} | {precision:.3f} | {recall:.3f} | {picks} / {true} | {recall_apart:.3f} ({apart}) "
            f"| {cpu:.2f} |")


def picking_table(work: Path, n: int = 2, size_px: int = 1024, quick: bool = False) -> list[str]:
    """Simulate (or reuse) the grid under ``work``, pick it, and return (and print) the tables."""
    grid = simulate_grid(work, picking_conditions(quick), n_per_condition=n, size_px=size_px)
    records = [r for s in grid.sets for r in pick_set(s, grid.particles)]
    header = ["| condition | precision | recall | picks / true | recall, separable (n) | CPU s per micrograph |",
              "|---|---|---|---|---|---|"]
    lines = [f"LoG picking, {n} micrographs of {size_px}² px per condition, match within "
             f"{MATCH_RADIUS_FRACTION:g} x particle radius", *header]
    lines += [row(s.condition.name, [r for r in records if r["condition"] == s.condition.name])
              for s in grid.sets]
    lines.append(row("**all**", records))
    mics = grid.micrographs.set_index(["condition", "rlnMicrographName"])["vtfTrueDefocusMean"]
    lines += ["", "By true mean defocus (all conditions):", *header]
    for lo, hi in DEFOCUS_BINS_UM:
        inside = [r for r in records if lo * 1e4 <= mics[(r["condition"], r["micrograph"])] < hi * 1e4]
        lines.append(row(f"defocus {lo:g}-{hi:g} µm ({len(inside)} micrographs)", inside))
    print("\n".join(lines), flush=True)
    return lines


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("work/grid"))
    parser.add_argument("--n", type=int, default=2, help="micrographs per condition")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="four conditions only")
    args = parser.parse_args(argv)
    start = time.time()
    picking_table(args.work, args.n, args.size, args.quick)
    print(f"({time.time() - start:.0f} s wall)")


if __name__ == "__main__":
    main()

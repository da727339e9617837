"""CTF estimation over a grid of simulated conditions (issue 15), one command.

Usage::

    python benchmarks/preprocess_grid.py [--n 3] [--size 1024] [--full] [--work DIR] [--threads 2]
        [--conditions outside-like,base] [--big 0]

Simulates ``--n`` micrographs of ``--size``² px per condition (:mod:`_grid`: particle density
10-200 per 1024² field, thin / thick ice, with / without carbon, defocus 0.5-4 µm, astigmatism
0-2000 Å, high / low dose, and the "outside-like" case: sparse particles, thin ice, no carbon,
white noise), then runs the ``ctffind`` job exactly as ``vitrify ctffind --i micrographs.star``
does (defaults, diagnostics written) in each condition's directory, and prints per condition
and overall:

* |mean-defocus error| median and 95th percentile (Å; targets < 100 / < 500);
* |astigmatism error| median and 95th percentile where the true astigmatism > 200 Å (target
  < 100), the largest reported astigmatism where the true one ≤ 200 Å, and how many fits
  report exactly 0;
* the angle error (median, degrees) where the true astigmatism > 500 Å;
* median figure of merit and rlnCtfMaxResolution (Å);
* CPU seconds per micrograph of the whole job (this process, all threads; ``--threads``).

Then a control: micrographs of pure Poisson noise (no specimen, no rings) through the same job,
whose FOM and max resolution show what "no signal" looks like to the proc scheme's selection,
and what a selection on rlnCtfMaxResolution keeps. ``--noise-free`` also fits the simulator's
expected counts (no Poisson noise): the estimator's own error, apart from the data's noise.
``--big K`` also times the job on K micrographs of 4096² (outside-like; the ≤ 4 CPU s target).
``--bound`` prints, per condition, the Cramér-Rao bound of the fit (:mod:`_ctf_bound`, from the
noise-free twin of every micrograph): the median |error| that an unbiased fit at the bound would
have, beside the measured one — whether a target is reachable on these data at all.
Timing figures are CPU time; run under ``flock /tmp/vitrify-bench.lock`` and note ``uptime``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ctf_bound import bound_median_errors  # noqa: E402
from _grid import OUTSIDE_LIKE, grid_conditions, simulate_grid  # noqa: E402


def run_ctffind(directory: Path, threads: int, noise_free: bool = False) -> tuple[pd.DataFrame, float]:
    """The ctffind job in ``directory`` (from scratch); its micrographs table and CPU s per micrograph.

    ``noise_free``: on the simulator's expected counts (``truth_micrographs/``) instead, named as
    the noisy micrographs in the returned table.
    """
    import torch

    from vitrify.io.star import read_star_optics
    from vitrify.jobs import ctffind

    torch.set_num_threads(threads)
    here = Path.cwd()
    os.chdir(directory)
    try:
        shutil.rmtree("CtfFind", ignore_errors=True)
        star = "micrographs.star"
        if noise_free:
            star = _noise_free_star()
        start = time.process_time()
        out = ctffind.run(ctffind.Options(star, device="cpu"), "CtfFind/job002")
        cpu = time.process_time() - start
        table = read_star_optics(out, "micrographs").data
        table["rlnMicrographName"] = table["rlnMicrographName"].str.replace("truth_micrographs/", "Micrographs/")
    finally:
        os.chdir(here)
    return table, cpu / max(len(table), 1)


def _noise_free_star() -> str:
    """``micrographs_noise_free.star`` (in the current directory): the truth_micrographs of micrographs.star."""
    from vitrify.io.star import read_star, write_star

    blocks = read_star("micrographs.star")
    mics = blocks["micrographs"].copy()
    mics["rlnMicrographName"] = mics["rlnMicrographName"].str.replace("Micrographs/", "truth_micrographs/")
    write_star("micrographs_noise_free.star", {"optics": blocks["optics"], "micrographs": mics})
    return "micrographs_noise_free.star"


def angle_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| of defocus angles (degrees) modulo 180."""
    return np.abs((a - b + 90.0) % 180.0 - 90.0)


def errors(fit: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per-micrograph errors of a fit table against the truth (same micrograph names)."""
    m = fit.merge(truth, on="rlnMicrographName", suffixes=("", "_true"))
    astig = (m["rlnDefocusU"] - m["rlnDefocusV"]).abs()
    return pd.DataFrame({
        "condition": m["condition"],
        "defocus_err": ((m["rlnDefocusU"] + m["rlnDefocusV"]) / 2 - m["vtfTrueDefocusMean"]).abs(),
        "true_astig": m["vtfTrueAstigmatism"], "astig": astig,
        "astig_err": (astig - m["vtfTrueAstigmatism"]).abs(),
        "angle_err": angle_error_deg(m["rlnDefocusAngle"].to_numpy(float), m["rlnDefocusAngle_true"].to_numpy(float)),
        "fom": m["rlnCtfFigureOfMerit"], "max_res": m["rlnCtfMaxResolution"]})


def _quantile(x: pd.Series, percent: float) -> float:
    return float(np.percentile(x, percent)) if len(x) else float("nan")


def summary_row(name: str, e: pd.DataFrame, cpu_per_mic: float) -> dict:
    """One row of the table: the figures of the module notes over the micrographs of ``e``."""
    big = e[e["true_astig"] > 200]
    small = e[e["true_astig"] <= 200]
    angled = e[e["true_astig"] > 500]
    q = _quantile
    return {"condition": name, "n": len(e),
            "dF med": q(e["defocus_err"], 50), "dF p95": q(e["defocus_err"], 95),
            "dAst med": q(big["astig_err"], 50), "dAst p95": q(big["astig_err"], 95),
            "ast<=200: max": float(small["astig"].max()) if len(small) else float("nan"),
            "ast=0": int((e["astig"] == 0).sum()),
            "angle med": q(angled["angle_err"], 50),
            "FOM med": q(e["fom"], 50), "maxres med": q(e["max_res"], 50), "CPU s/mic": cpu_per_mic}


def print_table(rows: list[dict]) -> None:
    """Print summary rows as an aligned table."""
    frame = pd.DataFrame(rows)
    formats = {c: "{:.0f}".format for c in ("dF med", "dF p95", "dAst med", "dAst p95", "ast<=200: max")}
    formats |= {"angle med": "{:.1f}".format, "FOM med": "{:.3f}".format, "maxres med": "{:.1f}".format,
                "CPU s/mic": "{:.2f}".format}
    print(frame.to_string(index=False, formatters=formats))


def selection_rows(e: pd.DataFrame) -> list[str]:
    """What the proc scheme's selection (rlnCtfMaxResolution <= maxval) would keep, per maxval."""
    failed = e["defocus_err"] > 1000
    lines = [f"fits off by > 1000 Å: {int(failed.sum())} of {len(e)}, their rlnCtfMaxResolution "
             f"{', '.join(f'{v:.1f}' for v in sorted(e.loc[failed, 'max_res']))} Å"]
    for maxval in (6.0, 8.0, 10.0, 15.0):
        kept = e[e["max_res"] <= maxval]
        err = kept["defocus_err"]
        lines.append(f"select rlnCtfMaxResolution <= {maxval:4.1f} Å: keeps {len(kept):3d} of {len(e)}; kept "
                     f"|dF| median {_quantile(err, 50):.0f} p95 {_quantile(err, 95):.0f} Å; "
                     f"kept fits off by > 1000 Å: {int((err > 1000).sum())}")
    return lines


def bound_rows(grid, all_errors: list[pd.DataFrame]) -> list[dict]:
    """Per condition: median |error| of a fit at the Cramér-Rao bound beside the measured one (Å)."""
    import torch

    from vitrify.core.ctf import CtfParams
    from vitrify.io.mrc import read_mrc
    from vitrify.io.star import read_star
    from vitrify.preprocess.ctf_fit import measure_spectrum

    rows = []
    for s, e in zip(grid.sets, all_errors):
        optics_row = read_star(s.star)["optics"].iloc[0]
        optics = CtfParams(pixel_size_angst=float(optics_row["rlnMicrographPixelSize"]),
                           voltage_kv=float(optics_row["rlnVoltage"]),
                           cs_mm=float(optics_row["rlnSphericalAberration"]),
                           amplitude_contrast=float(optics_row["rlnAmplitudeContrast"]))
        truth = grid.micrographs[grid.micrographs["condition"] == s.condition.name]
        mean_bounds, astig_bounds = [], []
        for _, row in truth.iterrows():
            spectra = [measure_spectrum(torch.as_tensor(read_mrc(s.directory / name)[0]), optics.pixel_size_angst, 512)
                       for name in (row["rlnMicrographName"],
                                    row["rlnMicrographName"].replace("Micrographs/", "truth_micrographs/"))]
            mean_b, astig_b = bound_median_errors(*spectra, optics, float(row["rlnDefocusU"]),
                                                  float(row["rlnDefocusV"]), float(row["rlnDefocusAngle"]))
            mean_bounds.append(mean_b)
            if row["vtfTrueAstigmatism"] > 200:
                astig_bounds.append(astig_b)
        big = e[e["true_astig"] > 200]
        rows.append({"condition": s.condition.name, "dF med": _quantile(e["defocus_err"], 50),
                     "dF med at bound": float(np.median(mean_bounds)),
                     "dAst med": _quantile(big["astig_err"], 50),
                     "dAst med at bound": float(np.median(astig_bounds)) if astig_bounds else float("nan"),
                     "_mean": mean_bounds, "_astig": astig_bounds})
    everything = pd.concat(all_errors, ignore_index=True)
    big = everything[everything["true_astig"] > 200]
    rows.append({"condition": "ALL", "dF med": _quantile(everything["defocus_err"], 50),
                 "dF med at bound": float(np.median([b for r in rows for b in r["_mean"]])),
                 "dAst med": _quantile(big["astig_err"], 50),
                 "dAst med at bound": float(np.median([b for r in rows for b in r["_astig"]]))})
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def noise_control(root: Path, n: int, size: int, threads: int) -> tuple[pd.DataFrame, float]:
    """Micrographs of pure Poisson noise (40 e/Å² at 1.5 Å/px) through the job: FOM and max resolution."""
    from vitrify.io.mrc import write_mrc
    from vitrify.io.star import write_star
    from vitrify.sim.micrographs import MicrographOptions, optics_table

    directory = root / "noise-control"
    rng = np.random.default_rng(5)
    names = []
    for i in range(n):
        name = f"Micrographs/noise_{i + 1:03d}.mrc"
        write_mrc(directory / name, rng.poisson(40 * 1.5 ** 2, (size, size)).astype(np.float32), 1.5)
        names.append(name)
    write_star(directory / "micrographs.star", {"optics": optics_table(MicrographOptions(pixel_size_angst=1.5)),
                                                "micrographs": pd.DataFrame({"rlnMicrographName": names,
                                                                             "rlnOpticsGroup": 1})})
    return run_ctffind(directory, threads)


def main(argv: list[str] | None = None) -> None:
    """Simulate the grid, run ctffind on every condition, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3, help="micrographs per condition")
    parser.add_argument("--size", type=int, default=1024, help="micrograph width = height (px)")
    parser.add_argument("--full", action="store_true", help="the factorial grid (25 conditions)")
    parser.add_argument("--conditions", default="", help="comma-separated condition names (default: all)")
    parser.add_argument("--big", type=int, default=0, help="also time K outside-like micrographs of 4096²")
    parser.add_argument("--noise-free", action="store_true",
                        help="also fit the noise-free expected counts (the estimator's own error)")
    parser.add_argument("--bound", action="store_true",
                        help="also the Cramér-Rao bound of the fit per condition (from the noise-free twins)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="", help="work directory (simulations there are reused)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    root = Path(args.work or tempfile.mkdtemp(prefix="vitrify-bench-grid-")).resolve()
    conditions = grid_conditions(full=args.full)
    if args.conditions:
        wanted = args.conditions.split(",")
        conditions = [c for c in conditions if c.name in wanted]
    start = time.perf_counter()
    grid = simulate_grid(root, conditions, n_per_condition=args.n, size_px=args.size, seed=args.seed)
    print(f"simulated {len(grid.micrographs)} micrographs of {args.size}² in {time.perf_counter() - start:.0f} s "
          f"({root})", file=sys.stderr)
    load = os.getloadavg()
    rows, all_errors, cpu_total = [], [], 0.0
    for s in grid.sets:
        table, cpu = run_ctffind(s.directory, args.threads)
        e = errors(table, grid.micrographs[grid.micrographs["condition"] == s.condition.name])
        rows.append(summary_row(s.condition.name, e, cpu))
        all_errors.append(e)
        cpu_total += cpu * len(e)
    everything = pd.concat(all_errors, ignore_index=True)
    rows.append(summary_row("ALL", everything, cpu_total / max(len(everything), 1)))
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs, torch threads "
          f"{args.threads}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before the jobs; "
          f"{args.n} micrographs of {args.size}² per condition, 1.5 Å/px")
    print("errors in Å (dF: mean defocus; dAst: astigmatism, true > 200 Å), angle in degrees (true > 500 Å)")
    print_table(rows)
    print("\n".join(selection_rows(everything)))
    if args.bound:
        print("median |error| (Å) measured and of an unbiased fit at the Cramér-Rao bound (same micrographs):")
        frame = pd.DataFrame(bound_rows(grid, all_errors))
        print(frame.to_string(index=False, float_format="{:.0f}".format))
    if args.noise_free:
        rows = []
        for s in grid.sets:
            table, cpu = run_ctffind(s.directory, args.threads, noise_free=True)
            rows.append(summary_row(s.condition.name, errors(table, grid.micrographs[
                grid.micrographs["condition"] == s.condition.name]), cpu))
        print("the same micrographs without noise (expected counts):")
        print_table(rows)
    noise, cpu = noise_control(root, max(2, args.n), args.size, args.threads)
    print(f"pure-noise control ({len(noise)} micrographs): FOM median {noise['rlnCtfFigureOfMerit'].median():.3f} "
          f"max {noise['rlnCtfFigureOfMerit'].max():.3f}; rlnCtfMaxResolution min "
          f"{noise['rlnCtfMaxResolution'].min():.1f} Å; CPU {cpu:.2f} s/mic")
    if args.big:
        big = replace(OUTSIDE_LIKE, name="outside-like-4096")
        grid = simulate_grid(root, [big], n_per_condition=args.big, size_px=4096, seed=args.seed + 77)
        table, cpu = run_ctffind(grid.sets[0].directory, args.threads)
        e = errors(table, grid.micrographs)
        print("4096² micrographs:")
        print_table([summary_row(big.name, e, cpu)])


if __name__ == "__main__":
    main()

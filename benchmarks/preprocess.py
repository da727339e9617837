"""Preprocessing benchmark: motion correction, CTF, picking and extraction against simulated truth.

Usage::

    python benchmarks/preprocess.py [--n 20] [--size 1024] [--frames 16] [--work DIR] [--threads 2]
        [--reuse-simulation]   # with the --work DIR of an earlier run: skip simulating again
    python benchmarks/preprocess.py --motion-only [--beside-hog] [--n 4 --size 1024 --frames 16 --dose 5]

``--motion-only`` (:mod:`_motion_bench`): motion correction alone, ``vitrify motioncorr`` and
RELION-4's ``relion_run_motioncorr --use_own`` (when on the PATH) as subprocesses on the same
movies: CPU s per movie (process + children) side by side with their ratio, idle and beside a
CPU-bound process, where vitrify's time goes (stage by stage), and both programs' trajectory
errors against the truth.

Simulates ``--n`` movies (``vitrify.sim.movies``: CFTR particles, well separated, 1.5 Å/px,
``--frames`` frames of ``--dose`` e/Å² (2.5), global drift 6 px + local drift 0.5 px, astigmatism up to
1500 Å) at ``--size``² pixels — smaller than a 4k detector because the development machine
has two shared cores — then runs the jobs exactly as the command line does
(motioncorr → ctffind → autopick LoG and template → extract) and prints one table:

* motion: RMS over frames of (estimated − true) shift, after removing the constant offset
  (the reference position is arbitrary), of the whole-frame trajectory and of the local
  trajectories (global + deformation model) at the simulator's 4 × 4 truth points; seconds
  per movie (whole job / movies);
* CTF: median |mean defocus error| and median max(|ΔU|, |ΔV|) in nm; median astigmatism
  angle error for micrographs with true astigmatism > 500 Å; seconds per micrograph;
* picking: precision and recall against the true centres (a pick matches an unused
  particle within half the particle radius) at the default thresholds;
* extraction: particles per second (box 160 px → 80 px, float16).

CTFFIND4 / MotionCor2 figures are printed beside ours only when those programs are on
the PATH (they are looked up, and reported as absent otherwise).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from _motion_bench import main_motion, motion_errors



JOB_DIRS = ("MotionCorr", "CtfFind", "AutoPick", "Extract")


def reuse_simulation(args, root: Path, radius: float):
    """The dataset of an earlier run in ``root/sim`` (same arguments); its job outputs are removed first."""
    from types import SimpleNamespace

    from vitrify.io.star import read_star

    truth = read_star(root / "sim" / "truth.star")
    if len(truth["micrographs"]) != args.n:
        sys.exit(f"{root}/sim holds {len(truth['micrographs'])} movies, not --n {args.n}: simulate again")
    for name in JOB_DIRS:  # every job runs from scratch (jobs reuse finished outputs)
        shutil.rmtree(root / "sim" / name, ignore_errors=True)
    return SimpleNamespace(truth=truth), radius


def simulate(args, root: Path):
    """Simulate once into ``root/sim``; return the dataset (truth tables) and the particle radius (Å)."""
    from vitrify.sim.micrographs import MicrographOptions
    from vitrify.sim.movies import simulate_movies
    from vitrify.sim.structures import load_structure

    radius = load_structure(args.structure).max_radius_angst()
    if args.reuse_simulation and (root / "sim" / "truth.star").exists():
        return reuse_simulation(args, root, radius)
    options = MicrographOptions(structures=(args.structure,), n_micrographs=args.n, size_px=(args.size, args.size),
                                pixel_size_angst=1.5, particles_per_micrograph=args.particles,
                                min_distance_angst=2.7 * radius, astigmatism_max_angst=1500.0,
                                n_frames=args.frames, dose_per_frame=args.dose, drift_total_px=6.0,
                                local_drift_px=0.5, carbon_fraction=0.0, seed=args.seed)
    return simulate_movies(options, root / "sim"), radius


def timed(run, options, job_dir: str):
    """Run a job function; return (output path, (wall seconds, CPU seconds of this process, all threads))."""
    start, cpu = time.perf_counter(), time.process_time()
    out = run(options, job_dir)
    return out, (time.perf_counter() - start, time.process_time() - cpu)


def per(seconds: tuple[float, float], n: int, digits: int = 1) -> str:
    """``wall / CPU`` seconds per item."""
    return f"{seconds[0] / n:.{digits}f} / {seconds[1] / n:.{digits}f}"


def angle_error_deg(a: float, b: float) -> float:
    """Smallest difference of two astigmatism angles (degrees, modulo 180)."""
    return abs((a - b + 90.0) % 180.0 - 90.0)


def ctf_errors(truth_mics, ctf_table) -> dict:
    """Median defocus, astigmatism and angle errors of ``ctf_table`` against the simulator's truth."""
    merged = ctf_table.merge(truth_mics, on="rlnMicrographMovieName", suffixes=("", "_true"))
    mean_err = ((merged["rlnDefocusU"] + merged["rlnDefocusV"]) - (merged["rlnDefocusU_true"]
                + merged["rlnDefocusV_true"])).abs() / 2
    uv_err = np.maximum((merged["rlnDefocusU"] - merged["rlnDefocusU_true"]).abs(),
                        (merged["rlnDefocusV"] - merged["rlnDefocusV_true"]).abs())
    astig = (merged["rlnDefocusU_true"] - merged["rlnDefocusV_true"]).abs()
    angles = [angle_error_deg(a, b) for a, b, s in zip(merged["rlnDefocusAngle"], merged["rlnDefocusAngle_true"],
                                                        astig) if s > 500]
    return {"mean_nm": float(np.median(mean_err)) / 10, "uv_nm": float(np.median(uv_err)) / 10,
            "angle_deg": float(np.median(angles)) if angles else float("nan"), "n_astig": len(angles),
            "n": len(merged), "max_res": float(np.median(merged["rlnCtfMaxResolution"])),
            "n_6a": int((merged["rlnCtfMaxResolution"] <= 6.0).sum())}


def picking_scores(truth_parts, movie_of_mic: dict, autopick_star: str,
                   tolerance_px: float) -> tuple[float, float, int]:
    """Pooled precision, recall and pick count over all micrographs."""
    from vitrify.io.star import read_star
    from vitrify.preprocess.picking import match_picks

    files = read_star(autopick_star)["coordinate_files"]
    matched_p = matched_t = n_picks = n_true = 0
    for mic, coords_file in zip(files["rlnMicrographName"], files["rlnMicrographCoordinates"]):
        coords = read_star(coords_file)[""]
        xy = coords[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float).reshape(-1, 2)
        truth = truth_parts[truth_parts["rlnMicrographName"] == movie_of_mic[mic]]
        true_xy = truth[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
        precision, recall = match_picks(xy, true_xy, tolerance_px)
        matched_p += precision * len(xy)
        matched_t += recall * len(true_xy)
        n_picks += len(xy)
        n_true += len(true_xy)
    return matched_p / max(n_picks, 1), matched_t / max(n_true, 1), n_picks


def write_references(root: Path, structure: str, radius: float) -> Path:
    """Projections of the structure's map at 6 random views (white protein): stand-ins for 2D class averages."""
    import torch

    from vitrify.core.euler import euler_to_matrix
    from vitrify.core.projector import project_real
    from vitrify.io.mrc import write_mrc
    from vitrify.sim.maps import MapOptions, simulate_map
    from vitrify.sim.structures import load_structure

    box = int(2 * np.ceil(radius / 1.5 + 3))
    volume = torch.as_tensor(simulate_map(load_structure(structure), MapOptions(box, 1.5)))
    rng = np.random.default_rng(11)
    angles = torch.as_tensor(np.stack([rng.uniform(0, 360, 6), np.degrees(np.arccos(rng.uniform(-1, 1, 6))),
                                       rng.uniform(0, 360, 6)], 1), dtype=torch.float32)
    path = root / "references.mrcs"
    write_mrc(path, project_real(volume, euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])).numpy(), 1.5)
    return path


def run_jobs(args, root: Path, radius: float) -> dict:
    """Run the jobs in ``root/sim`` (the project directory); return timings and output paths."""
    from vitrify._progress import set_quiet
    from vitrify.jobs import autopick, ctffind, extract, motioncorr
    from vitrify.preprocess.extraction import ExtractOptions
    from vitrify.preprocess.motion import MotionOptions
    from vitrify.preprocess.picking import LogPickOptions
    from vitrify.preprocess.template_pick import TemplatePickOptions

    set_quiet(True)
    references = write_references(root, args.structure, radius).resolve()
    os.chdir(root / "sim")
    motion = MotionOptions(patches_x=args.patches, patches_y=args.patches)
    mc, t_mc = timed(motioncorr.run, motioncorr.Options("movies.star", motion, dose_per_frame=args.dose,
                                                          gain="Movies/gain.mrc", device=args.device),
                     "MotionCorr/job002")
    ctf, t_ctf = timed(ctffind.run, ctffind.Options(str(mc), device=args.device), "CtfFind/job003")
    diameter = 2 * radius
    log = LogPickOptions(0.8 * diameter, 1.1 * diameter)
    pick, t_pick = timed(autopick.run, autopick.Options(str(ctf), "log", log, n_png=1, device=args.device),
                         "AutoPick/job004")
    tpl, t_tpl = timed(autopick.run, autopick.Options(str(ctf), "template", n_png=1, references=str(references),
                                                      template=TemplatePickOptions(0.8 * diameter),
                                                      device=args.device), "AutoPick/job005")
    ext, t_ext = timed(extract.run, extract.Options(str(ctf), str(pick), ExtractOptions(160, 80), float16=True,
                                                    device=args.device), "Extract/job006")
    out = {"mc": mc, "ctf": ctf, "pick": pick, "template": tpl, "extract": ext, "t_mc": t_mc, "t_ctf": t_ctf,
           "t_pick": t_pick, "t_template": t_tpl, "t_extract": t_ext}
    if external_programs()["ctffind"].startswith("on PATH"):  # the same job through CTFFIND4
        out["ctf_ext"], out["t_ctf_ext"] = timed(ctffind.run, ctffind.Options(str(mc), use_ctffind=True),
                                                 "CtfFind/job007")
    return out


def resolution_at_true_ctf(ctf_table, true_mics) -> np.ndarray:
    """The yardstick for rlnCtfMaxResolution: the same equi-phase criterion evaluated with the TRUE
    CTF parameters on each non-dose-weighted micrograph (how far the data's Thon rings reach)."""
    import torch

    from vitrify.core.ctf import CtfParams
    from vitrify.io.mrc import read_mrc
    from vitrify.preprocess import ctf_fit as cf
    from vitrify.preprocess._ctf_model import from_uv_angle

    optics, search = CtfParams(pixel_size_angst=1.5), cf.CtfSearch()
    out = []
    for _, row in ctf_table.merge(true_mics, on="rlnMicrographMovieName", suffixes=("", "_true")).iterrows():
        image = torch.as_tensor(np.asarray(read_mrc(row["rlnMicrographNameNoDW"])[0], dtype=np.float32))
        spectrum = cf.measure_spectrum(image, 1.5, search.tile_px)
        params = np.array(from_uv_angle(row["rlnDefocusU_true"], row["rlnDefocusV_true"], row["rlnDefocusAngle_true"]))
        out.append(cf.fit_resolution(spectrum, params, optics, search))
    return np.array(out)


def ctf_rows(c: dict, seconds_per_mic: float) -> list[str]:
    """The CTF figures of one estimator, in the order of the table's CTF rows."""
    return [f"{c['mean_nm']:.1f}", f"{c['uv_nm']:.1f}", f"{c['angle_deg']:.1f}", f"{c['max_res']:.1f}",
            f"{seconds_per_mic:.1f}"]


def ctf_of(out_star: str, truth: dict):
    """Errors of a micrographs_ctf.star against the truth, and the table (movie names added)."""
    from vitrify.io.star import read_star_optics

    ctf = read_star_optics(out_star, "micrographs").data
    ctf["rlnMicrographMovieName"] = [f"Movies/{Path(m).stem}.tiff" for m in ctf["rlnMicrographName"]]
    true_mics = truth["micrographs"].rename(columns={"rlnMicrographName": "rlnMicrographMovieName"})
    return ctf_errors(true_mics, ctf), ctf, true_mics


def evaluate(data, radius: float, out: dict) -> list[tuple[str, str, str, str]]:
    """Rows of the result table: (measure, ours, target, external)."""
    from vitrify.io.star import read_star_optics

    truth = data.truth
    mics = read_star_optics(out["mc"], "micrographs").data
    movies = [f"Movies/{Path(m).stem}.tiff" for m in mics["rlnMicrographName"]]
    errors = np.array([motion_errors(truth, mv, meta) for mv, meta in zip(movies, mics["rlnMicrographMetadata"])])
    n = len(truth["micrographs"])
    c, ctf, true_mics = ctf_of(out["ctf"], truth)
    at_truth = resolution_at_true_ctf(ctf, true_mics)
    ctffind = ["not on PATH"] * 5
    if "ctf_ext" in out:
        ctffind = ctf_rows(ctf_of(out["ctf_ext"], truth)[0], out["t_ctf_ext"][0] / n)
    movie_of = dict(zip(ctf["rlnMicrographName"], ctf["rlnMicrographMovieName"]))
    tolerance = radius / 1.5 / 2
    p_log = picking_scores(truth["particles"], movie_of, out["pick"], tolerance)
    p_tpl = picking_scores(truth["particles"], movie_of, out["template"], tolerance)
    n_particles = len(read_star_optics(out["extract"], "particles").data)
    ext = external_programs()
    return [
        ("motion: global trajectory RMS error (px)", f"{np.mean(errors[:, 0]):.3f}", "< 0.5", ext["motioncor2"]),
        ("motion: local trajectory RMS error (px)", f"{np.nanmean(errors[:, 1]):.3f}", "< 0.5", ext["motioncor2"]),
        ("motion: time per movie (s wall / CPU)", per(out["t_mc"], n), "", ext["motioncor2"]),
        ("CTF: median mean-defocus error (nm)", f"{c['mean_nm']:.1f}", "< 100", ctffind[0]),
        ("CTF: median max(|dU|,|dV|) error (nm)", f"{c['uv_nm']:.1f}", "", ctffind[1]),
        (f"CTF: median angle error, astig > 500 Å (n={c['n_astig']}) (deg)", f"{c['angle_deg']:.1f}", "< 10",
         ctffind[2]),
        ("CTF: median rlnCtfMaxResolution (Å)", f"{c['max_res']:.1f}", "", ctffind[3]),
        ("CTF: median rlnCtfMaxResolution at the true CTF (Å)", f"{np.median(at_truth):.1f}", "", "-"),
        (f"CTF: micrographs with rlnCtfMaxResolution <= 6 Å (of {c['n']})", f"{c['n_6a']}", "", "-"),
        ("CTF: the same at the true CTF", f"{int((at_truth <= 6.0).sum())}", "", "-"),
        ("CTF: time per micrograph (s wall / CPU)", per(out["t_ctf"], n), "", ctffind[4]),
        (f"LoG picking: precision / recall ({p_log[2]} picks)", f"{p_log[0]:.3f} / {p_log[1]:.3f}", ">= 0.85",
         "-"),
        ("LoG picking: time per micrograph (s wall / CPU)", per(out["t_pick"], n, 2), "", "-"),
        (f"template picking: precision / recall ({p_tpl[2]} picks)", f"{p_tpl[0]:.3f} / {p_tpl[1]:.3f}",
         ">= 0.85", "-"),
        ("template picking: time per micrograph (s wall / CPU)", per(out["t_template"], n, 2), "", "-"),
        (f"extraction: particles per s wall / CPU ({n_particles} particles)",
         f"{n_particles / out['t_extract'][0]:.0f} / {n_particles / out['t_extract'][1]:.0f}", "", "-"),
    ]


def external_programs() -> dict[str, str]:
    """CTFFIND4 / MotionCor2 on the PATH (CTFFIND4 is run through ``ctffind --use-ctffind``; MotionCor2 is not)."""
    found = {"ctffind": shutil.which("ctffind") or shutil.which("ctffind4"),
             "motioncor2": shutil.which("MotionCor2") or shutil.which("motioncor2")}
    return {k: (f"on PATH ({v}), not run" if v else "not on PATH") for k, v in found.items()}


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, simulate (or reuse) the data, run the jobs and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="movies (20; 4 with --motion-only)")
    parser.add_argument("--size", type=int, default=1024, help="movie width = height (px)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--particles", type=int, default=40, help="particles per micrograph (at most)")
    parser.add_argument("--patches", type=int, default=None,
                        help="patches per side for local motion (3; 5 with --motion-only)")
    parser.add_argument("--structure", default="cftr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", default="", help="work directory (default: a new temporary one)")
    parser.add_argument("--motion-only", action="store_true",
                        help="motion correction only, beside RELION-4's (relion_run_motioncorr on the PATH); "
                             "defaults then: --n 4 --frames 16 --patches 5, 5 e/Å²/frame")
    parser.add_argument("--dose", type=float, default=None, help="e/Å² per frame (2.5; 5 with --motion-only)")
    parser.add_argument("--pixel", type=float, default=1.5, help="pixel size (Å; --motion-only)")
    parser.add_argument("--beside-hog", action="store_true",
                        help="--motion-only: also time both programs beside CPU-bound processes")
    parser.add_argument("--hogs", type=int, default=1, help="CPU-bound processes for --beside-hog")
    parser.add_argument("--relion-threads", type=int, default=2, help="RELION's --j")
    parser.add_argument("--reuse-simulation", action="store_true",
                        help="reuse the movies simulated in --work by an earlier run with the same arguments")
    args = parser.parse_args(argv)
    for name, full, motion in (("n", 20, 4), ("patches", 3, 5), ("dose", 2.5, 5.0)):
        if getattr(args, name) is None:
            setattr(args, name, motion if args.motion_only else full)
    import tempfile

    root = Path(args.work or tempfile.mkdtemp(prefix="vitrify-bench-preprocess-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if args.motion_only:
        main_motion(args, root)
        return
    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    data, radius = simulate(args, root)
    print(f"simulated {args.n} movies of {args.size}² x {args.frames} frames in "
          f"{time.perf_counter() - start:.0f} s ({root})", file=sys.stderr)
    load_before = os.getloadavg()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    rows = evaluate(data, radius, run_jobs(args, root, radius))
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs, torch threads "
          f"{args.threads}; load average (1 min) {load_before[0]:.1f} before the jobs, {os.getloadavg()[0]:.1f} "
          f"after; jobs + evaluation {wall:.0f} s wall, {cpu:.0f} s CPU of this process")
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}} | {'vitrify':>15} | {'target':>8} | external")
    print(f"{'-' * width}-|-{'-' * 15}-|-{'-' * 8}-|---------")
    for measure, ours, target, ext in rows:
        print(f"{measure:<{width}} | {ours:>15} | {target:>8} | {ext}")


if __name__ == "__main__":
    main()

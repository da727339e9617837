"""Motion correction only: ``vitrify motioncorr`` beside RELION-4's own motion correction.

Both run as subprocesses on the same simulated movies (gain reference, dose weighting,
patches), as their GUIs would run them, and their CPU time is measured with
``getrusage(RUSAGE_CHILDREN)`` (process + threads + children). Printed:

* where vitrify's time goes (``MotionCorr/.../timing.tsv``: CPU s per movie by stage; the rest
  of the subprocess's CPU time is interpreter start, imports and job bookkeeping);
* CPU and wall seconds per movie of both programs and their ratio (vitrify / RELION), idle
  and beside ``--hogs`` CPU-bound processes started by the benchmark (``--beside-hog``);
* the RMS error (px) of the global and local trajectories against the simulator's truth,
  for both programs (RELION's local motion is its third-order polynomial model).

RELION is looked up on the PATH (``relion_run_motioncorr``); without it its columns say so.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _anchor import CpuHog

VITRIFY_JOB = "MotionCorr/job002"
RELION_JOB = "MotionCorr/job003"


def simulate(args, root: Path) -> Path:
    """Simulate (or reuse) ``args.n`` movies in ``root/sim_motion``; return that directory."""
    from vitrify.sim.micrographs import MicrographOptions
    from vitrify.sim.movies import simulate_movies
    from vitrify.sim.structures import load_structure

    out = root / "sim_motion"
    if args.reuse_simulation and (out / "truth.star").exists():
        return out
    radius = load_structure(args.structure).max_radius_angst()
    options = MicrographOptions(structures=(args.structure,), n_micrographs=args.n,
                                size_px=(args.size, args.size), pixel_size_angst=args.pixel,
                                particles_per_micrograph=args.particles, min_distance_angst=2.7 * radius,
                                astigmatism_max_angst=1500.0, n_frames=args.frames, dose_per_frame=args.dose,
                                drift_total_px=6.0, local_drift_px=0.5, carbon_fraction=0.0, seed=args.seed)
    simulate_movies(options, out)
    return out


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def timed_subprocess(command: list[str], cwd: Path, log: Path) -> tuple[float, float, int]:
    """Run ``command``; (CPU s of it and its children, wall s, return code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, time.perf_counter() - start, code


def run_vitrify(sim: Path, args, job: str) -> tuple[float, float]:
    shutil.rmtree(sim / job, ignore_errors=True)
    command = [sys.executable, "-m", "vitrify", "motioncorr", "--i", "movies.star", "--o", job,
               "--gain", "Movies/gain.mrc", "--dose-per-frame", str(args.dose), "--patch-x", str(args.patches),
               "--patch-y", str(args.patches), "--device", args.device]
    cpu, wall, code = timed_subprocess(command, sim, sim / f"{job.replace('/', '_')}.log")
    if code != 0:
        sys.exit(f"vitrify motioncorr failed (exit {code}); see {sim}/{job.replace('/', '_')}.log")
    return cpu, wall


def relion_executable() -> str | None:
    return shutil.which("relion_run_motioncorr")


def run_relion(sim: Path, args, job: str) -> tuple[float, float] | None:
    """RELION-4's own motion correction with the GUI's arguments (2 threads, no MPI)."""
    exe = relion_executable()
    if exe is None:
        return None
    shutil.rmtree(sim / job, ignore_errors=True)
    (sim / job).mkdir(parents=True)
    command = [exe, "--i", "movies.star", "--o", job + "/", "--first_frame_sum", "1", "--last_frame_sum", "-1",
               "--use_own", "--j", str(args.relion_threads), "--bin_factor", "1", "--bfactor", "150",
               "--dose_per_frame", str(args.dose), "--preexposure", "0", "--patch_x", str(args.patches),
               "--patch_y", str(args.patches), "--eer_grouping", "32", "--gainref", "Movies/gain.mrc",
               "--gain_rot", "0", "--gain_flip", "0", "--dose_weighting", "--only_do_unfinished"]
    cpu, wall, code = timed_subprocess(command, sim, sim / f"{job.replace('/', '_')}.log")
    if code != 0:
        print(f"relion_run_motioncorr failed (exit {code}); see {sim}/{job.replace('/', '_')}.log", file=sys.stderr)
        return None
    return cpu, wall


def _truth_tracks(truth: dict, movie: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True total shifts ``(f, points, 2)`` at the truth points and the points' (x, y) px."""
    loc = truth["local_motion"][truth["local_motion"]["rlnMicrographMovieName"] == movie]
    glob = truth["global_motion"][truth["global_motion"]["rlnMicrographMovieName"] == movie]
    n_frames = len(glob)
    true_local = loc[["rlnMicrographShiftX", "rlnMicrographShiftY"]].to_numpy(float).reshape(n_frames, -1, 2)
    total = glob[["rlnMicrographShiftX", "rlnMicrographShiftY"]].to_numpy(float)[:, None, :] + true_local
    points = loc[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)[: true_local.shape[1]]
    return total, points, glob


def _rms(err: np.ndarray) -> float:
    """RMS over frames (and points) of an error trajectory after removing its constant offset."""
    err = err - err.mean(axis=0, keepdims=True)
    return float(np.sqrt((err ** 2).sum(-1).mean()))


def motion_errors(truth: dict, movie: str, metadata: str) -> tuple[float, float]:
    """(global RMS, local RMS) in px of one vitrify movie (shifts applied = minus the drift)."""
    import torch

    from vitrify.io.star import read_star
    from vitrify.preprocess.motion import Deformation, deformation_field

    blocks = read_star(metadata)
    est = blocks["global_shift"][["rlnMicrographShiftX", "rlnMicrographShiftY"]].to_numpy(float)
    total, points, _ = _truth_tracks(truth, movie)
    rms_global = _rms(est + total.mean(axis=1))
    if "vitrify_deformation" not in blocks:
        return rms_global, float("nan")
    general = blocks["general"]
    shape = (int(general["rlnImageSizeY"]), int(general["rlnImageSizeX"]))
    model = Deformation(blocks["vitrify_deformation"]["rlnMotionModelCoeff"].to_numpy(float).reshape(2, 24),
                        shape, len(est))
    px, py = points[:, 0].round().astype(int), points[:, 1].round().astype(int)
    fields = np.stack([deformation_field(model, f, torch.device("cpu"))[py, px].numpy() for f in range(len(est))])
    return rms_global, _rms(est[:, None, :] + fields + total)


def _relion_polynomial(coeffs: np.ndarray, z: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """RELION's ThirdOrderPolynomialModel shift ``(points, 2)`` at frame index z, x/y = px/size - 0.5."""
    terms = [np.ones_like(x), x, x * x, y, y * y, x * y]
    out = np.zeros((len(x), 2))
    for d in range(2):
        c = coeffs[18 * d: 18 * (d + 1)].reshape(6, 3)
        out[:, d] = sum(t * (c[i, 0] * z + c[i, 1] * z * z + c[i, 2] * z ** 3) for i, t in enumerate(terms))
    return out


def relion_errors(truth: dict, movie: str, metadata: Path) -> tuple[float, float]:
    """(global RMS, local RMS) in px of one RELION movie. RELION records the shifts it applies
    (as vitrify does), and its local model (third-order polynomial, frame index from 0, x and y
    as fractions of the frame minus 0.5) moves the globally shifted frames further."""
    from vitrify.io.star import read_star

    blocks = read_star(metadata)
    est = blocks["global_shift"][["rlnMicrographShiftX", "rlnMicrographShiftY"]].to_numpy(float)
    total, points, _ = _truth_tracks(truth, movie)
    rms_global = _rms(est + total.mean(axis=1))
    model = blocks.get("local_motion_model")
    if model is None or len(model) == 0:
        return rms_global, _rms(est[:, None, :] + total)
    general = blocks["general"]
    nx, ny = float(general["rlnImageSizeX"]), float(general["rlnImageSizeY"])
    coeffs = model["rlnMotionModelCoeff"].to_numpy(float)
    x, y = points[:, 0] / nx - 0.5, points[:, 1] / ny - 0.5
    local = np.stack([_relion_polynomial(coeffs, float(f), x, y) for f in range(len(est))])
    return rms_global, _rms(est[:, None, :] + local + total)


def accuracy(sim: Path, job: str, relion: bool) -> tuple[float, float]:
    """Mean (global, local) RMS error over the movies of one job."""
    from vitrify.io.star import read_star

    truth = read_star(sim / "truth.star")
    errors = []
    for movie in truth["micrographs"]["rlnMicrographName"]:
        meta = sim / job / "Movies" / (Path(movie).stem + ".star")
        errors.append(relion_errors(truth, movie, meta) if relion else motion_errors(truth, movie, str(meta)))
    errors = np.array(errors)
    return float(np.mean(errors[:, 0])), float(np.nanmean(errors[:, 1]))


def stage_rows(sim: Path, job: str, n: int, total_cpu: float) -> list[tuple[str, float]]:
    """CPU s per movie by stage from the job's timing.tsv, and the rest (start, imports, bookkeeping)."""
    rows = []
    for line in (sim / job / "timing.tsv").read_text().splitlines()[1:]:
        name, cpu, _ = line.split("\t")
        rows.append((name, float(cpu) / n))
    rows.append(("interpreter start, imports, job bookkeeping", total_cpu / n - sum(c for _, c in rows)))
    return rows


def _ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f}" if b else "-"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "not run" if value is None else f"{value:.{digits}f}"


def main_motion(args, root: Path) -> None:
    """The motion-only benchmark (see the module notes)."""
    sim = simulate(args, root)
    n = args.n
    print(f"{n} movies {args.size}² x {args.frames} frames, {args.dose} e/Å²/frame, {args.pixel} Å/px, gain, "
          f"{args.patches} x {args.patches} patches, dose weighting ({sim})", file=sys.stderr)
    runs = {}
    conditions = [("idle", 0)] + ([("beside hog", args.hogs)] if args.beside_hog else [])
    for label, n_hogs in conditions:
        with CpuHog(n_hogs):
            load = _load()
            ours = run_vitrify(sim, args, VITRIFY_JOB)
            theirs = run_relion(sim, args, RELION_JOB)
        runs[label] = (ours, theirs, load)
    ours_acc = accuracy(sim, VITRIFY_JOB, relion=False)
    relion_acc = accuracy(sim, RELION_JOB, relion=True) if runs["idle"][1] else None
    exe = relion_executable() or "relion_run_motioncorr not on PATH"
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs; RELION: {exe} "
          f"(--use_own --j {args.relion_threads}); vitrify device {args.device}")
    print(f"\nwhere vitrify's CPU time goes ({runs[conditions[-1][0]][2]} load; last run), CPU s per movie:")
    for name, cpu in stage_rows(sim, VITRIFY_JOB, n, runs[conditions[-1][0]][0][0]):
        print(f"  {name:<46} {cpu:7.3f}")
    print(f"\n{'measure':<50} | {'vitrify':>8} | {'RELION-4':>8} | vitrify/RELION")
    print(f"{'-' * 50}-|-{'-' * 8}-|-{'-' * 8}-|---------------")
    for label, (ours, theirs, load) in runs.items():
        hog = f", {args.hogs} hog(s)" if label != "idle" else ""
        for k, kind in ((0, "CPU"), (1, "wall")):
            mine, other = ours[k] / n, (theirs[k] / n if theirs else None)
            print(f"{f'{kind} s per movie ({label}{hog}, load {load})':<50} | {mine:8.2f} | {_fmt(other):>8} | "
                  f"{_ratio(mine, other)}")
    for k, name in ((0, "global"), (1, "local")):
        other = relion_acc[k] if relion_acc else None
        print(f"{f'{name} trajectory RMS error vs truth (px)':<50} | {ours_acc[k]:8.3f} | {_fmt(other, 3):>8} | "
              f"{_ratio(ours_acc[k], other)}")

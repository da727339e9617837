"""Job ``motioncorr``: our own motion correction of every movie → ``corrected_micrographs.star``.

Per movie: read frames (``first_frame..last_frame``), drop black frames (with a
message), multiply by the gain reference (rotated/flipped as asked; a gain of the
wrong size skips the movie with a message; a gain whose rotation/flip does not match the
movies' fixed pattern stops the job naming the setting that fits), then
:func:`vitrify.preprocess.motion.correct_movie` (defects, global and patch alignment,
dose weighting, binning). Writes ``<mic>.mrc`` (dose-weighted when weighting),
``<mic>_noDW.mrc``, ``<mic>.star`` (shifts), ``<mic>_shifts.png`` (trajectory) and the
micrographs table with rlnAccumMotionTotal/Early/Late; ``timing.tsv`` holds the CPU and
wall seconds of each stage (read, gain, defects, FFT, alignments, sums, write, ...) summed
over the movies corrected (on whichever worker corrected them). Movies run here one after another
or as Dask tasks (``parallel``; :mod:`vitrify.jobs.scaleout`). A movie whose frame count differs
from most movies' is skipped and recorded; movies already done are kept.
EER movies are read as frames of ``eer_grouping`` summed internal frames (trailing ones dropped)
at ``eer_upsampling`` 1 (4K) or 2 (8K; give the import the halved pixel size), as RELION does;
``dose_per_frame`` is then the dose per group.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.io.errors import InputError
from vitrify.jobs._preprocess_io import Skips, relative_output, write_output_nodes
from vitrify.jobs.options.motioncorr import (
    GAIN_FLIPS,
    GAIN_ROTATIONS,
    Options,
    job_star_from_options,
    options_from_job_star,
)


def _eer_options(options: Options) -> dict[str, int]:
    return {"eer_grouping": options.eer_grouping, "eer_upsampling": options.eer_upsampling}


def _apply_gain(raw: np.ndarray, gain: np.ndarray | None) -> np.ndarray:
    """``raw`` ``(f, h, w)`` as float32 times ``gain`` ``(h, w)`` (torch's kernels: about twice
    numpy's mixed-type multiply)."""
    import torch

    frames = torch.from_numpy(np.ascontiguousarray(raw)).to(torch.float32)
    if gain is not None:
        frames.mul_(torch.from_numpy(np.ascontiguousarray(gain, dtype=np.float32)))
    return frames.numpy()


def _load_frames(movie: str, options: Options, gain: np.ndarray | None, log,
                 n_frames_expected: int | None = None, timer=None) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(f, h, w)`` float32 (gain applied, black frames dropped) and their 1-based numbers."""
    from vitrify.io.movies import read_movie
    from vitrify.preprocess.timing import stage

    with stage(timer, "read"):
        raw = read_movie(movie, **_eer_options(options))
    if n_frames_expected and raw.shape[0] != n_frames_expected:
        raise InputError(f"{raw.shape[0]} frames where most movies have {n_frames_expected}",
                         path=movie, expected="the same number of frames in every movie")
    last = raw.shape[0] if options.last_frame < 1 else min(options.last_frame, raw.shape[0])
    numbers = np.arange(options.first_frame, last + 1)
    raw = raw[options.first_frame - 1:last]
    if len(raw) < 2:
        raise InputError(f"only {len(raw)} frame(s) in the range", path=movie,
                         expected="at least 2 frames to align")
    if gain is not None and gain.shape != raw.shape[1:]:
        hint = " (rotated by 90 degrees? set gain_rot)" if gain.shape == raw.shape[:0:-1] else ""
        raise InputError(f"gain reference is {gain.shape[1]}x{gain.shape[0]}, movie frames are "
                         f"{raw.shape[2]}x{raw.shape[1]}{hint}", path=options.gain,
                         field="fn_gain_ref", expected="a gain of the frame size")
    with stage(timer, "gain"):
        frames = _apply_gain(raw, gain)
        flat = raw.reshape(len(raw), -1)
        constant = flat.min(axis=1) == flat.max(axis=1)  # cheap on the stored integers; then exact
        black = np.array([bool(c) and float(frames[i].std()) == 0.0 for i, c in enumerate(constant)])
    if black.any():
        log.warning("%s: dropped %d empty/black frame(s): %s", movie, int(black.sum()),
                    numbers[black].tolist())
        frames, numbers = frames[~black], numbers[~black]
    if len(frames) < 2:
        raise InputError("fewer than 2 frames with signal", path=movie)
    return frames, numbers


def _write_images(out: Path, result, options: Options, pixel_size_angst: float) -> str | None:
    from vitrify.io.mrc import write_mrc

    pixel = pixel_size_angst * options.binning
    main = result.dose_weighted if result.dose_weighted is not None else result.micrograph
    write_mrc(out, main.cpu().numpy(), pixel, float16=options.float16)
    if result.dose_weighted is not None and options.save_nodw:
        nodw = out.with_name(out.stem + "_noDW.mrc")
        write_mrc(nodw, result.micrograph.cpu().numpy(), pixel, float16=options.float16)
        return nodw.as_posix()
    return None


def _correct_one(row: pd.Series, options: Options, job_dir: Path, context: dict, log) -> dict:
    import torch

    from vitrify.jobs._motion_output import MovieInfo, plot_trajectory, read_accumulated_motion, write_metadata
    from vitrify.preprocess.motion import accumulated_motion, correct_movie
    from vitrify.preprocess.timing import stage

    movie = str(row["rlnMicrographMovieName"])
    out = relative_output(job_dir, movie, ".mrc")
    meta = out.with_suffix(".star")
    nodw = out.with_name(out.stem + "_noDW.mrc")
    entry = {"rlnMicrographName": out.as_posix(), "rlnMicrographMetadata": meta.as_posix(),
             "rlnOpticsGroup": int(row["rlnOpticsGroup"])}
    png = out.with_name(out.stem + "_shifts.png")
    images = (out, png, nodw) if options.dose_weighting and options.save_nodw else (out, png)
    motion = read_accumulated_motion(meta)  # the metadata is written last: its presence means done
    if motion is None or not all(p.exists() for p in images):
        timer = context["timer"]
        frames, numbers = _load_frames(movie, options, context["gain"], log, context["n_frames"], timer)
        pixel = float(row["rlnMicrographOriginalPixelSize"])
        dose = options.dose_per_frame if options.dose_weighting else 0.0
        result = correct_movie(torch.as_tensor(frames).to(context["device"]), pixel, options.motion,
                               defect_mask=context["defects"], dose_per_frame=dose,
                               pre_exposure=options.pre_exposure, voltage_kv=float(row["rlnVoltage"]),
                               binning=options.binning, frame_numbers=torch.as_tensor(numbers - 1),
                               timer=timer)
        motion = accumulated_motion(result.global_shifts_px, pixel)
        with stage(timer, "write"):
            _write_images(out, result, options, pixel)
        info = MovieInfo(movie, options.gain, (len(numbers),) + frames.shape[1:], options.binning, pixel,
                         options.dose_per_frame, options.pre_exposure, float(row["rlnVoltage"]),
                         options.first_frame, numbers)
        with stage(timer, "plot + metadata"):
            plot_trajectory(png, result, frames.shape[1:])
            write_metadata(meta, info, result, motion)
    entry.update(rlnAccumMotionTotal=motion[0], rlnAccumMotionEarly=motion[1], rlnAccumMotionLate=motion[2])
    if options.dose_weighting and options.save_nodw:
        entry["rlnMicrographNameNoDW"] = nodw.as_posix()
    return entry


def _common_frame_count(movies: list[str], options: Options) -> int | None:
    """The most frequent frame count among the movies (headers only; unreadable ones ignored)."""
    from collections import Counter

    from vitrify.io.movies import open_movie

    counts = Counter()
    for movie in movies:
        try:
            with open_movie(movie, **_eer_options(options)) as frames:
                counts[int(frames.shape[0])] += 1
        except (InputError, OSError, ValueError):
            continue
    return counts.most_common(1)[0][0] if counts else None


def _read_gain(path: str, frame_shape: tuple[int, int], eer: bool, rotation: int = 0, flip: int = 0) -> np.ndarray:
    """The gain for movies of ``frame_shape`` ``(ny, nx)``; EER movies follow RELION's EER gain rules."""
    from vitrify.io.movies import read_eer_gain, read_gain

    return read_eer_gain(path, frame_shape, rotation, flip) if eer else read_gain(path, rotation, flip)


#: frames of the first movie summed for the gain-orientation check (the fixed pattern is clear by then)
_GAIN_CHECK_FRAMES = 8


def _raw_sum(movie: str, options: Options) -> tuple[np.ndarray, tuple[int, int]]:
    """Sum of the first frames of ``movie`` (float64) and the frame shape."""
    from vitrify.io.movies import open_movie

    with open_movie(movie, **_eer_options(options)) as frames:
        total = np.zeros(frames.shape[1:], np.float64)
        for i in range(min(len(frames), _GAIN_CHECK_FRAMES)):
            total += frames[i]
        return total, tuple(frames.shape[1:])


def _gain(options: Options, movies: list[str]) -> np.ndarray | None:
    """The gain (rotated/flipped as asked), after checking that rotation/flip fit the first readable
    movie (stops with a clear message when they do not); None without a gain."""
    from vitrify.io.movies import read_gain
    from vitrify.jobs._gain_check import check_gain_orientation

    if not options.gain:
        return None
    eer = bool(movies) and Path(movies[0]).suffix.lower() == ".eer"
    for movie in movies:
        try:
            raw_sum, shape = _raw_sum(movie, options)
        except (InputError, OSError, ValueError):
            continue
        check_gain_orientation(_read_gain(options.gain, shape, eer), raw_sum,
                               options.gain_rotation, options.gain_flip, options.gain)
        return _read_gain(options.gain, shape, eer, options.gain_rotation, options.gain_flip)
    return read_gain(options.gain, options.gain_rotation, options.gain_flip)


def _context(options: Options, movies: list[str], timer) -> dict:
    """What every movie's task needs (sent once to each worker): options, gain, defects, frame count."""
    from vitrify.io.movies import read_movie
    from vitrify.preprocess.timing import stage

    with stage(timer, "gain check (once)"):
        gain = _gain(options, movies)
    defects = None
    if options.defect_file:
        defects = read_movie(options.defect_file)[0] != 0
    return {"options": options, "gain": gain, "defects": defects,
            "n_frames": _common_frame_count(movies, options)}


def correct_task(row: pd.Series, shared: dict) -> tuple[dict, list[tuple[str, float, float]]]:
    """One movie (a :func:`vitrify.jobs.scaleout.map_items` task): its micrographs-table entry and
    the CPU/wall seconds of its stages; in the project folder, on any worker."""
    import torch

    from vitrify.core.device import resolve_device
    from vitrify.preprocess.timing import StageTimer

    options, job_dir = shared["options"], Path(shared["job_dir"])
    device = resolve_device(options.device)
    defects = shared["defects"]
    context = {"gain": shared["gain"], "n_frames": shared["n_frames"], "device": device,
               "defects": None if defects is None else torch.as_tensor(defects), "timer": StageTimer(device)}
    log = logging.getLogger(f"vitrify.job.{job_dir.resolve()}")
    return _correct_one(row, options, job_dir, context, log), context["timer"].rows()


#: per-stage CPU / wall seconds of the movies corrected by the last run (tab-separated)
TIMING_FILE = "timing.tsv"


def _write_timing(path: Path, timer, log) -> None:
    """``stage<TAB>cpu_s<TAB>wall_s`` per stage (this process, all threads), and a log line."""
    from vitrify.io.atomic import atomic_path

    rows = timer.rows()
    with atomic_path(path) as tmp:
        Path(tmp).write_text("stage\tcpu_s\twall_s\n" + "".join(f"{n}\t{c:.4f}\t{w:.4f}\n" for n, c, w in rows))
    if rows:
        log.info("CPU s by stage: %s", ", ".join(f"{n} {c:.2f}" for n, c, _ in rows))


def run(options: Options, job_dir: str | Path) -> Path:
    """Correct every movie; write ``job_dir/corrected_micrographs.star``."""
    from vitrify.core.device import resolve_device
    from vitrify.io.star import read_star_optics, write_star_optics
    from vitrify.jobs.scaleout import map_items
    from vitrify.preprocess.timing import StageTimer

    job_dir = Path(job_dir)
    log = logging.getLogger(f"vitrify.job.{job_dir.resolve()}")
    star = read_star_optics(options.input_star, "movies")
    timer = StageTimer(resolve_device(options.device))
    context = _context(options, [str(m) for m in star.merged["rlnMicrographMovieName"]], timer)
    movies = [star.merged.iloc[i] for i in range(len(star.merged))]
    skips = Skips(job_dir)
    rows = []
    for outcome in map_items(correct_task, movies, {**context, "job_dir": job_dir.as_posix()}, options.parallel,
                             job_dir, "Motion correction", log):
        if outcome.skipped:
            skips.add(str(movies[outcome.index]["rlnMicrographMovieName"]), outcome.skipped, log)
            continue
        entry, stages = outcome.value
        rows.append(entry)
        for name, cpu_s, wall_s in stages:
            timer.add(name, cpu_s, wall_s)
    optics = star.optics.copy()
    optics["rlnMicrographPixelSize"] = optics["rlnMicrographOriginalPixelSize"].astype(float) * options.binning
    skips.raise_if_all_skipped(len(star.merged), "movies")
    output = job_dir / "corrected_micrographs.star"
    columns = ["rlnMicrographName", "rlnMicrographMetadata", "rlnOpticsGroup", "rlnAccumMotionTotal",
               "rlnAccumMotionEarly", "rlnAccumMotionLate"]
    if options.dose_weighting and options.save_nodw:
        columns.append("rlnMicrographNameNoDW")
    write_star_optics(output, optics, pd.DataFrame(rows, columns=columns), "micrographs")
    skips.write()
    write_output_nodes(job_dir, [(output, "MicrographsData.star.relion.motioncorr")])
    _write_timing(job_dir / TIMING_FILE, timer, log)
    log.info("%d movies corrected, %d skipped", len(rows), len(skips.items))
    return output


#: RELION-4's text of the gain rotation / flip choices, by index


__all__ = ["GAIN_FLIPS", "GAIN_ROTATIONS", "Options", "correct_task", "job_star_from_options", "options_from_job_star",
           "run"]

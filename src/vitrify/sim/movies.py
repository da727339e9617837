"""Simulated movies with ground truth (``vitrify simulate movies``).

Each movie is the micrograph scene of :mod:`vitrify.sim.micrographs` recorded frame by
frame: frame ``f`` shows the specimen moved by the drift ``d_f(r) = g_f + l_f(r)``, i.e.
``frame_f(r) = I(r - d_f(r))``, where

* ``g_f`` (global) starts at 0 on the first frame and moves fast early then slowly
  (velocity decaying exponentially, random direction turning smoothly), ``drift_total_px``
  in all;
* ``l_f(r)`` (local) is a smooth field (two low-frequency sinusoids per axis) growing
  linearly with the frame index up to ``local_drift_px``;

and the counts are Poisson with mean ``dose per frame × pixel² × I × s(r)``, where ``s`` is
the detector's per-pixel sensitivity (1 ± ``gain_sigma``). The gain reference written is
``1 / s`` (RELION multiplies raw frames by it). Written into ``out_dir``:

* ``Movies/mov_NNNNN.tiff`` (or ``.mrc``), integer counts, frames × ny × nx;
* ``truth_micrographs/mov_NNNNN.mrc``: the noise-free, motion-free expected counts of the
  whole exposure (what an ideal motion correction would give, before the gain);
* ``Movies/gain.mrc``, ``movies.star`` (optics + movies, as Import writes it);
* ``truth.star``: micrographs and particles as for micrographs, plus ``data_global_motion``
  (rlnMicrographMovieName, rlnMicrographFrameNumber, rlnMicrographShiftX/Y in px) and
  ``data_local_motion`` (local shifts on a 4 × 4 grid of points per frame);
* EPU-style ``.xml`` and SerialEM ``.mdoc`` per movie (:mod:`vitrify.sim.session`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vitrify._progress import track
from vitrify.io.movies import write_movie
from vitrify.io.mrc import write_mrc
from vitrify.io.star import write_star
from vitrify.sim import micrographs as mics
from vitrify.sim.micrographs import MicrographDataset, MicrographOptions
from vitrify.sim.session import write_session_metadata

_EXTENSIONS = {"tiff": ".tiff", "mrc": ".mrc"}


def global_drift_px(n_frames: int, total_px: float, rng: np.random.Generator) -> np.ndarray:
    """``(n_frames, 2)`` cumulative (x, y) shifts, 0 on the first frame, path length ``total_px``."""
    if n_frames == 1 or total_px == 0:
        return np.zeros((n_frames, 2))
    steps = np.exp(-np.arange(n_frames - 1) / max(n_frames / 4, 1.0))
    steps *= total_px / steps.sum()
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.3, n_frames - 1))
    moves = np.stack([steps * np.cos(heading), steps * np.sin(heading)], axis=1)
    return np.vstack([np.zeros((1, 2)), np.cumsum(moves, axis=0)])


def local_field_params(rng: np.random.Generator) -> np.ndarray:
    """``(2, 2, 4)`` per axis (x, y) and term: amplitude, kx, ky, phase of the local field."""
    amp = rng.uniform(0.5, 1.0, (2, 2))
    freq = rng.uniform(0.5, 1.5, (2, 2, 2)) * rng.choice([-1, 1], (2, 2, 2))
    phase = rng.uniform(0, 2 * np.pi, (2, 2))
    return np.concatenate([amp[..., None], freq, phase[..., None]], axis=-1)


def local_drift_px(params: np.ndarray, x_rel: np.ndarray, y_rel: np.ndarray, amplitude_px: float,
                   fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Local (dx, dy) at relative positions in [0, 1) for a frame at ``fraction`` of the movie."""
    out = []
    for axis in range(2):
        field = sum(p[0] * np.sin(2 * np.pi * (p[1] * x_rel + p[2] * y_rel) + p[3]) for p in params[axis])
        out.append(amplitude_px * fraction * field / 2.0)
    return out[0], out[1]


def warp(image: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """``out(r) = image(r - d(r))`` for ``(ny, nx)`` image and displacement fields (px), bicubic."""
    ny, nx = image.shape
    y, x = torch.meshgrid(torch.arange(ny, device=image.device, dtype=image.dtype),
                          torch.arange(nx, device=image.device, dtype=image.dtype), indexing="ij")
    gx = (x - dx + 0.5) / nx * 2 - 1
    gy = (y - dy + 0.5) / ny * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)[None]
    out = torch.nn.functional.grid_sample(image[None, None], grid, mode="bicubic",
                                          padding_mode="reflection", align_corners=False)
    return out[0, 0]


def render_frames(expected: torch.Tensor, shifts: np.ndarray, params: np.ndarray,
                  local_px: float) -> torch.Tensor:
    """``(frames, ny, nx)`` expected counts: ``expected`` moved by each frame's drift."""
    ny, nx = expected.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    frames = []
    for f, (sx, sy) in enumerate(shifts):
        fraction = f / max(len(shifts) - 1, 1)
        lx, ly = local_drift_px(params, xx / nx, yy / ny, local_px, fraction)
        dx = torch.as_tensor(sx + lx, dtype=expected.dtype, device=expected.device)
        dy = torch.as_tensor(sy + ly, dtype=expected.dtype, device=expected.device)
        frames.append(warp(expected, dx, dy))
    return torch.stack(frames)


def detector_sensitivity(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``(ny, nx)`` per-pixel sensitivity ``1 + sigma · N(0, 1)`` clipped to [0.5, 1.5]."""
    return np.clip(1 + sigma * rng.standard_normal(shape), 0.5, 1.5).astype(np.float32)


def _motion_tables(movie_names: list[str], shifts: list[np.ndarray], params: list[np.ndarray],
                   options: MicrographOptions) -> dict[str, pd.DataFrame]:
    ny, nx = options.size_px
    glob, local = [], []
    points = (np.arange(4) + 0.5) / 4
    py, px = np.meshgrid(points, points, indexing="ij")
    for name, s, p in zip(movie_names, shifts, params):
        for f in range(len(s)):
            glob.append((name, f + 1, s[f, 0], s[f, 1]))
            lx, ly = local_drift_px(p, px.ravel(), py.ravel(), options.local_drift_px,
                                    f / max(len(s) - 1, 1))
            local += [(name, f + 1, x * nx, y * ny, a, b) for x, y, a, b in zip(px.ravel(), py.ravel(), lx, ly)]
    return {
        "global_motion": pd.DataFrame(glob, columns=["rlnMicrographMovieName", "rlnMicrographFrameNumber",
                                                     "rlnMicrographShiftX", "rlnMicrographShiftY"]),
        "local_motion": pd.DataFrame(local, columns=["rlnMicrographMovieName", "rlnMicrographFrameNumber",
                                                     "rlnCoordinateX", "rlnCoordinateY",
                                                     "rlnMicrographShiftX", "rlnMicrographShiftY"]),
    }


def names_for(index: int, options: MicrographOptions) -> str:
    """Movie file name (relative to the output directory) of movie ``index`` (0-based)."""
    return f"Movies/mov_{index + 1:05d}{_EXTENSIONS[options.movie_format]}"


def _counts_dtype(counts: torch.Tensor, movie_format: str) -> np.dtype:
    return np.uint8 if movie_format == "tiff" and float(counts.max()) < 256 else np.uint16


def simulate_movies(options: MicrographOptions, out_dir: str | Path, *,
                    device: torch.device | str = "cpu") -> MicrographDataset:
    """Simulate movies, their gain reference, metadata and ground truth into ``out_dir``."""
    out_dir, device = Path(out_dir), torch.device(device)
    scene_ss, noise_ss = np.random.SeedSequence(options.seed).spawn(2)
    rng = np.random.default_rng(scene_ss)
    generator = torch.Generator(device=device).manual_seed(int(noise_ss.generate_state(1)[0]))
    specimen = mics.build_specimen(options, device)
    sensitivity = detector_sensitivity(tuple(options.size_px), options.gain_sigma, rng)
    write_mrc(out_dir / "Movies" / "gain.mrc", 1.0 / sensitivity, options.pixel_size_angst)
    sens = torch.as_tensor(sensitivity, device=device)
    counts_per_px = options.dose_per_frame * options.pixel_size_angst**2
    names, truths, shifts, params = [], [], [], []
    for index in track(range(options.n_micrographs), "simulating movies"):
        truth = mics.draw_scene(options, specimen, rng)
        expected = mics.render_intensity(options, specimen, truth, rng, device) * counts_per_px
        shifts.append(global_drift_px(options.n_frames, options.drift_total_px, rng))
        params.append(local_field_params(rng))
        mics.write_expected(out_dir, names_for(index, options), expected * options.n_frames, options)
        frames = render_frames(expected, shifts[-1], params[-1], options.local_drift_px) * sens
        counts = torch.poisson(frames.clamp(min=0), generator=generator)
        name = names_for(index, options)
        write_movie(out_dir / name, counts.cpu().numpy().astype(_counts_dtype(counts, options.movie_format)),
                    "lzw" if options.movie_format == "tiff" else None,
                    pixel_size_angst=options.pixel_size_angst)
        names.append(name)
        truths.append(truth)
    write_star(out_dir / "movies.star", {
        "optics": mics.optics_table(options, movies=True),
        "movies": pd.DataFrame({"rlnMicrographMovieName": names, "rlnOpticsGroup": 1})})
    tables = mics.truth_tables(names, truths) | _motion_tables(names, shifts, params, options)
    write_star(out_dir / "truth.star", tables, float_format="%.8g")
    mics.write_coordinates(out_dir, names, truths)
    _write_session(out_dir, names, options, truths)
    return MicrographDataset(out_dir / "movies.star", out_dir / "truth.star",
                             tuple(out_dir / n for n in names), tables)


def _write_session(out_dir: Path, names: list[str], options: MicrographOptions, truths: list) -> None:
    """EPU XML + SerialEM mdoc per movie."""
    mean_defocus = float(np.mean([t.defocus[:2].mean() for t in truths]))
    write_session_metadata(out_dir / "Movies", [out_dir / n for n in names],
                           pixel_size_angst=options.pixel_size_angst, voltage_kv=options.voltage_kv,
                           cs_mm=options.cs_mm, dose_per_frame_e_per_angst2=options.dose_per_frame,
                           exposure_time_s=options.exposure_time_s, defocus_angst=mean_defocus)

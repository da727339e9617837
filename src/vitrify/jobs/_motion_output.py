"""Motion-correction outputs: the per-micrograph metadata STAR file and the trajectory PNG.

The metadata file follows RELION's layout: ``data_general`` (sizes, binning, pixel
size, dose, voltage, accumulated motion), ``data_global_shift`` (rlnMicrographFrameNumber,
rlnMicrographShiftX/Y in unbinned pixels, frame 1 = 0) and, with patches,
``data_local_shift`` (per-patch residual trajectories). vitrify's smooth deformation
coefficients go to ``data_vitrify_deformation`` (rlnMotionModelVersion stays 0 because
the model is not RELION's third-order polynomial).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class MovieInfo:
    """What the metadata file records about one movie."""

    movie: str
    gain: str
    shape: tuple[int, int, int]       # (frames, ny, nx)
    binning: float
    pixel_size_angst: float
    dose_per_frame: float
    pre_exposure: float
    voltage_kv: float
    first_frame: int                  # 1-based
    frame_numbers: np.ndarray         # 1-based numbers of the frames used


def write_metadata(path: Path, info: MovieInfo, result, motion: tuple[float, float, float]) -> None:
    """Write the per-micrograph STAR file (see the module notes)."""
    from vitrify.io.star import write_star

    general = {"rlnImageSizeX": info.shape[2], "rlnImageSizeY": info.shape[1],
               "rlnImageSizeZ": info.shape[0], "rlnMicrographMovieName": info.movie,
               "rlnMicrographGainName": info.gain or "", "rlnMicrographBinning": info.binning,
               "rlnMicrographOriginalPixelSize": info.pixel_size_angst,
               "rlnMicrographDoseRate": info.dose_per_frame, "rlnMicrographPreExposure": info.pre_exposure,
               "rlnVoltage": info.voltage_kv, "rlnMicrographStartFrame": info.first_frame,
               "rlnMotionModelVersion": 0, "rlnAccumMotionTotal": motion[0],
               "rlnAccumMotionEarly": motion[1], "rlnAccumMotionLate": motion[2]}
    shifts = result.global_shifts_px
    blocks = {"general": general,
              "global_shift": pd.DataFrame({"rlnMicrographFrameNumber": info.frame_numbers.astype(int),
                                            "rlnMicrographShiftX": shifts[:, 0],
                                            "rlnMicrographShiftY": shifts[:, 1]})}
    if result.patches is not None:
        p = result.patches
        n_patch, n_frames, _ = p.shifts_px.shape
        blocks["local_shift"] = pd.DataFrame({
            "rlnMicrographFrameNumber": np.tile(info.frame_numbers.astype(int), n_patch),
            "rlnCoordinateX": np.repeat(p.centres_px[:, 0], n_frames),
            "rlnCoordinateY": np.repeat(p.centres_px[:, 1], n_frames),
            "rlnMicrographShiftX": p.shifts_px[:, :, 0].reshape(-1),
            "rlnMicrographShiftY": p.shifts_px[:, :, 1].reshape(-1)})
    if result.model is not None:
        coeffs = result.model.coeffs.reshape(-1)
        blocks["vitrify_deformation"] = pd.DataFrame({"rlnMotionModelCoeffsIdx": np.arange(len(coeffs)),
                                                      "rlnMotionModelCoeff": coeffs})
    write_star(path, blocks, float_format="%.6f")


def read_accumulated_motion(path: Path) -> tuple[float, float, float] | None:
    """Total/early/late motion from an existing metadata file, or None if there is none."""
    from vitrify.io.star import read_star

    if not path.exists():
        return None
    general = read_star(path).get("general", {})
    try:
        return (float(general["rlnAccumMotionTotal"]), float(general["rlnAccumMotionEarly"]),
                float(general["rlnAccumMotionLate"]))
    except (KeyError, TypeError, ValueError):
        return None


_PANEL_PX = 360
_MARGIN_PX = 28
_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def _fit(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Map ``(n, 2)`` data points in the box ``lo..hi`` onto a panel (equal aspect, y up as drawn)."""
    span = max(float((hi - lo).max()), 1e-6)
    inner = _PANEL_PX - 2 * _MARGIN_PX
    centre = (lo + hi) / 2
    xy = (points - centre) / span * inner
    return np.stack([_PANEL_PX / 2 + xy[:, 0], _PANEL_PX / 2 + xy[:, 1]], axis=1)


def plot_trajectory(path: Path, result, shape: tuple[int, int], exaggerate: float = 10.0) -> None:
    """PNG: the global trajectory (red square: frame 1), and patch trajectories drawn
    ``exaggerate`` times larger at their patch centres (rows downwards, as the micrograph).

    Drawn with Pillow (a matplotlib dependency): a few ms per movie, where a matplotlib
    figure costs a quarter of a second of CPU.
    """
    from PIL import Image, ImageDraw

    from vitrify.io.atomic import atomic_path

    panels = 2 if result.patches is not None else 1
    image = Image.new("RGB", (panels * _PANEL_PX, _PANEL_PX), "white")
    draw = ImageDraw.Draw(image)
    shifts = np.asarray(result.global_shifts_px, dtype=float)
    lo, hi = shifts.min(0) - 0.5, shifts.max(0) + 0.5
    points = _fit(shifts, lo, hi)
    box = (_MARGIN_PX // 2, _MARGIN_PX // 2, _PANEL_PX - _MARGIN_PX // 2, _PANEL_PX - _MARGIN_PX // 2)
    draw.rectangle(box, outline=(0, 0, 0))
    draw.line([tuple(p) for p in points], fill=_COLOURS[0], width=2)
    x0, y0 = points[0]
    draw.rectangle((x0 - 4, y0 - 4, x0 + 4, y0 + 4), fill=(220, 0, 0))
    span = float((hi - lo).max())
    draw.text((_MARGIN_PX // 2 + 4, 2), f"global trajectory, box {span:.1f} px (red: frame 1)", fill=(0, 0, 0))
    if result.patches is not None:
        left = _PANEL_PX
        draw.rectangle((left + box[0], box[1], left + box[2], box[3]), outline=(0, 0, 0))
        size = np.array([shape[1], shape[0]], dtype=float)
        for k, (centre, track) in enumerate(zip(result.patches.centres_px, result.patches.shifts_px)):
            curve = _fit(centre + exaggerate * np.asarray(track, dtype=float), np.zeros(2), size)
            draw.line([(left + x, y) for x, y in curve], fill=_COLOURS[k % len(_COLOURS)], width=1)
        draw.text((left + _MARGIN_PX // 2 + 4, 2), f"local residual motion (x{exaggerate:g})", fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")

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


def plot_trajectory(path: Path, result, shape: tuple[int, int], exaggerate: float = 10.0) -> None:
    """PNG: the global trajectory, and patch trajectories drawn ``exaggerate`` times larger."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitrify.io.atomic import atomic_path

    fig, axes = plt.subplots(1, 2 if result.patches is not None else 1, figsize=(8, 4), dpi=90,
                             squeeze=False)
    shifts = result.global_shifts_px
    ax = axes[0, 0]
    ax.plot(shifts[:, 0], shifts[:, 1], "-o", markersize=2)
    ax.plot(shifts[:1, 0], shifts[:1, 1], "rs", markersize=4)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("shift X (px)")
    ax.set_ylabel("shift Y (px)")
    ax.set_title("global trajectory (red: frame 1)", fontsize=8)
    if result.patches is not None:
        ax = axes[0, 1]
        for centre, track in zip(result.patches.centres_px, result.patches.shifts_px):
            ax.plot(centre[0] + exaggerate * track[:, 0], centre[1] + exaggerate * track[:, 1], "-", lw=0.8)
        ax.set_xlim(0, shape[1])
        ax.set_ylim(shape[0], 0)
        ax.set_aspect("equal")
        ax.set_title(f"local residual motion (x{exaggerate:g})", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

"""Compare what the automated pipeline found with the simulator's ground truth (``truth.star``).

Used by ``vitrify demo`` (pipeline mode). Micrographs are matched by the stem of their file name
(``MotionCorr/job002/Movies/Movies/mov_00001.mrc`` ↔ ``Movies/mov_00001.tiff``); picked and
extracted particles are matched one-to-one to the true centres of their micrograph (greedy by
distance, within a tolerance). All functions read files and return numbers or small tables;
nothing is written.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from vitrify.io.star import read_star


def movie_stem(name: str) -> str:
    """``'MotionCorr/job002/Movies/mov_00001.mrc'`` → ``'mov_00001'`` (the key that links files)."""
    return PurePosixPath(str(name)).name.split(".")[0]


def _xy(table: pd.DataFrame) -> np.ndarray:
    return table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float).reshape(-1, 2)


def match_to_truth(picked_xy: np.ndarray, true_xy: np.ndarray, tolerance_px: float) -> np.ndarray:
    """Which picks are real particles: one-to-one greedy matching by distance.

    ``picked_xy`` ``(k, 2)`` and ``true_xy`` ``(t, 2)`` in pixels of the same image. Returns a
    bool array ``(k,)``: True where the pick took an unused true centre within ``tolerance_px``.
    """
    matched = np.zeros(len(picked_xy), dtype=bool)
    if len(picked_xy) == 0 or len(true_xy) == 0:
        return matched
    dist = np.sqrt(((picked_xy[:, None, :] - true_xy[None, :, :]) ** 2).sum(-1))
    pairs = np.argwhere(dist <= tolerance_px)
    pairs = pairs[np.argsort(dist[pairs[:, 0], pairs[:, 1]], kind="stable")]
    used_truth: set[int] = set()
    for pick, true in pairs:
        if not matched[pick] and int(true) not in used_truth:
            matched[pick] = True
            used_truth.add(int(true))
    return matched


def mark_true_particles(particles: pd.DataFrame, truth_particles: pd.DataFrame, tolerance_px: float,
                        scale: float = 1.0) -> np.ndarray:
    """Bool per row of ``particles`` (``rlnMicrographName``, ``rlnCoordinateX/Y``): True where it is a real particle.

    ``scale`` converts the particles' micrograph pixels to the truth's movie pixels (the
    motion-correction binning factor).
    """
    is_true = np.zeros(len(particles), dtype=bool)
    stems = particles["rlnMicrographName"].map(movie_stem).to_numpy()
    true_stems = truth_particles["rlnMicrographName"].map(movie_stem).to_numpy()
    for stem in np.unique(stems):
        rows = np.flatnonzero(stems == stem)
        truth = truth_particles[true_stems == stem]
        is_true[rows] = match_to_truth(_xy(particles.iloc[rows]) * scale, _xy(truth), tolerance_px)
    return is_true


def motion_rms_px(estimated: np.ndarray, true_global: np.ndarray, true_local: np.ndarray) -> float:
    """RMS over frames of the whole-frame trajectory error (px), the constant offset removed.

    ``estimated`` ``(f, 2)``: motion correction's ``rlnMicrographShiftX/Y`` (the shift that
    aligns each frame, i.e. minus the drift); ``true_global`` ``(f, 2)``: the simulated drift;
    ``true_local`` ``(f, p, 2)``: the extra local drift at ``p`` points (its mean moves the
    whole frame too). Which frame is the reference is arbitrary, hence the offset removal.
    """
    drift = true_global + true_local.mean(axis=1)
    error = estimated + drift
    error = error - error.mean(axis=0)
    return float(np.sqrt((error ** 2).sum(axis=1).mean()))


def motion_errors(project: Path, corrected_star: Path, truth: dict) -> pd.DataFrame:
    """Per movie: ``movie``, ``rms_px`` (see :func:`motion_rms_px`), ``drift_px`` (true path length)."""
    micrographs = read_star(corrected_star)["micrographs"]
    shifts = ["rlnMicrographShiftX", "rlnMicrographShiftY"]
    glob, local = truth["global_motion"], truth["local_motion"]
    rows = []
    for metadata in micrographs["rlnMicrographMetadata"]:
        stem = movie_stem(metadata)
        estimated = read_star(project / metadata)["global_shift"][shifts].to_numpy(float)
        true_global = glob[glob["rlnMicrographMovieName"].map(movie_stem) == stem][shifts].to_numpy(float)
        true_local = local[local["rlnMicrographMovieName"].map(movie_stem) == stem][shifts].to_numpy(float)
        true_local = true_local.reshape(len(true_global), -1, 2)
        path = float(np.sqrt((np.diff(true_global, axis=0) ** 2).sum(1)).sum())
        rows.append({"movie": stem, "rms_px": motion_rms_px(estimated, true_global, true_local),
                     "drift_px": path})
    return pd.DataFrame(rows, columns=["movie", "rms_px", "drift_px"])


def ctf_errors(ctf_star: Path, truth: dict) -> pd.DataFrame:
    """Per micrograph: ``movie``, ``defocus_true_nm``, ``defocus_error_nm`` (mean of U and V),
    ``astig_true_nm``, ``astig_error_nm`` (|U − V|), ``max_resolution_angst``."""
    fitted = read_star(ctf_star)["micrographs"].copy()
    true = truth["micrographs"].copy()
    fitted["movie"] = fitted["rlnMicrographName"].map(movie_stem)
    true["movie"] = true["rlnMicrographName"].map(movie_stem)
    merged = fitted.merge(true, on="movie", suffixes=("", "_true"))
    mean_true = (merged["rlnDefocusU_true"] + merged["rlnDefocusV_true"]) / 2
    mean_fit = (merged["rlnDefocusU"] + merged["rlnDefocusV"]) / 2
    astig_true = (merged["rlnDefocusU_true"] - merged["rlnDefocusV_true"]).abs()
    astig_fit = (merged["rlnDefocusU"] - merged["rlnDefocusV"]).abs()
    return pd.DataFrame({"movie": merged["movie"], "defocus_true_nm": mean_true / 10,
                         "defocus_error_nm": (mean_fit - mean_true) / 10, "astig_true_nm": astig_true / 10,
                         "astig_error_nm": (astig_fit - astig_true) / 10,
                         "max_resolution_angst": merged["rlnCtfMaxResolution"]})


def picking_scores(project: Path, autopick_star: Path, truth: dict, tolerance_px: float,
                   scale: float = 1.0) -> dict:
    """Pooled over the picked micrographs: ``picks``, ``true_on_picked`` (true particles on those
    micrographs), ``found`` (picks matched to one), ``precision``, ``recall``."""
    files = read_star(autopick_star)["coordinate_files"]
    picks = []
    for micrograph, coordinates in zip(files["rlnMicrographName"], files["rlnMicrographCoordinates"]):
        table = next(iter(read_star(project / coordinates).values()))
        picks.append(pd.DataFrame({"rlnMicrographName": micrograph, "rlnCoordinateX": table["rlnCoordinateX"],
                                   "rlnCoordinateY": table["rlnCoordinateY"]}))
    picked = pd.concat(picks, ignore_index=True) if picks else pd.DataFrame(
        columns=["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"])
    stems = set(files["rlnMicrographName"].map(movie_stem))
    truth_particles = truth["particles"]
    n_true = int(truth_particles["rlnMicrographName"].map(movie_stem).isin(stems).sum())
    found = int(mark_true_particles(picked, truth_particles, tolerance_px, scale).sum())
    return {"picks": len(picked), "true_on_picked": n_true, "found": found,
            "precision": found / max(len(picked), 1), "recall": found / max(n_true, 1)}


def class_purity(data_star: Path, truth: dict, tolerance_px: float, scale: float = 1.0) -> pd.DataFrame:
    """One row per 2D class, largest first: ``class``, ``particles``, ``real`` (fraction matched
    to a true particle) and ``resolution_angst`` (from the model STAR file, when present)."""
    data = read_star(data_star)["particles"]
    data = data.assign(real=mark_true_particles(data, truth["particles"], tolerance_px, scale))
    table = data.groupby("rlnClassNumber").agg(particles=("real", "size"), real=("real", "mean"))
    model_star = data_star.with_name(data_star.name.replace("_data.star", "_model.star"))
    if model_star.is_file():
        classes = read_star(model_star)["model_classes"]
        resolution = pd.Series(classes["rlnEstimatedResolution"].to_numpy(), index=range(1, len(classes) + 1))
        table["resolution_angst"] = resolution.reindex(table.index)
    table = table.rename_axis("class").reset_index().sort_values("particles", ascending=False, kind="stable")
    return table.reset_index(drop=True)


def _rotations(table: pd.DataFrame):
    import torch

    from vitrify.core.euler import euler_to_matrix

    angles = [torch.as_tensor(table[c].to_numpy(np.float64, copy=True))
              for c in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")]
    return euler_to_matrix(*angles)


def _errors_to_consensus(relative) -> np.ndarray:
    """Angle (degrees) of each relative rotation ``(N, 3, 3)`` from the one nearest to most others."""
    from vitrify.core.euler import angular_distance_deg

    candidates = relative[:: max(1, len(relative) // 300)]
    spread = angular_distance_deg(candidates[:, None], relative[None]).median(dim=1).values
    return angular_distance_deg(relative, candidates[int(spread.argmin())][None]).numpy()


def pose_errors(data: pd.DataFrame, truth_particles: pd.DataFrame, tolerance_px: float,
                scale: float = 1.0) -> dict:
    """How far refined orientations are from the true ones, up to one rotation of the whole map.

    ``data`` (rlnMicrographName, rlnCoordinateX/Y, rlnAngleRot/Tilt/Psi) is matched to the nearest true
    particle of its micrograph within ``tolerance_px`` (movie pixels; ``scale`` as in
    :func:`mark_true_particles`). A refined map has its own frame (its reference's), so each particle's
    rotation relative to its true one, ``R_true^T R``, is compared with the consensus of them all; a map
    of the other hand is tried too (``z -> -z``). Returns ``{"matched", "within_10_deg", "median_deg",
    "hand_flipped"}``.
    """
    import torch

    rows, truth_rows = [], []
    stems, true_stems = data["rlnMicrographName"].map(movie_stem).to_numpy(), \
        truth_particles["rlnMicrographName"].map(movie_stem).to_numpy()
    for stem in np.unique(stems):
        mine, true = np.flatnonzero(stems == stem), np.flatnonzero(true_stems == stem)
        if not len(true):
            continue
        dist = np.sqrt(((_xy(data.iloc[mine])[:, None] * scale - _xy(truth_particles.iloc[true])[None]) ** 2).sum(-1))
        near = dist.argmin(1)
        keep = dist[np.arange(len(mine)), near] <= tolerance_px
        rows += list(mine[keep])
        truth_rows += list(true[near[keep]])
    if len(rows) < 3:
        return {"matched": len(rows), "within_10_deg": 0, "median_deg": float("nan"), "hand_flipped": False}
    refined, true = _rotations(data.iloc[rows]), _rotations(truth_particles.iloc[truth_rows])
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=refined.dtype))
    best = min(((_errors_to_consensus(true.transpose(1, 2) @ (mirror @ refined @ mirror if flip else refined)), flip)
                for flip in (False, True)), key=lambda found: float(np.median(found[0])))
    return {"matched": len(rows), "within_10_deg": int((best[0] < 10).sum()), "median_deg": float(np.median(best[0])),
            "hand_flipped": best[1]}

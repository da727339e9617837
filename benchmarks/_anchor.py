"""Helpers of benchmarks/class2d.py: the anchor sets' view spread, RELION-4's recorded run, a CPU hog.

The anchor sets (``../shared/anchor_sets/<set>/``, README there) hold 10,000 particles made outside
vitrify, ``truth.star`` (true angles) and ``relion/`` (RELION-4's VDAM run on the same particles:
``run_it200_data.star``, ``summary.tsv`` with wall / user / sys seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

#: RELION-4's figures as the anchor README states them (spread °, CPU s, wall s), for a cross-check.
RELION_README = {"1bd2_snr02": (47.1, 3900.0, 2024.0), "1bd2_snr005": (86.2, 3824.0, 3326.0)}


def is_anchor_set(folder: str | Path) -> bool:
    """A folder with particles.star, truth.star and RELION's run (relion/summary.tsv)."""
    folder = Path(folder)
    return all((folder / name).exists() for name in ("particles.star", "truth.star", "relion/summary.tsv"))


def _directions(rot_deg: np.ndarray, tilt_deg: np.ndarray) -> np.ndarray:
    r, t = np.deg2rad(rot_deg), np.deg2rad(tilt_deg)
    return np.stack([np.cos(r) * np.sin(t), np.sin(r) * np.sin(t), np.cos(t)], 1)


def _by_name(star: str | Path, name_label: str = "rlnImageName"):
    from vitrify.io.star import read_star

    blocks = read_star(star)
    table = blocks.get("particles", blocks.get("truth"))
    if table is None:
        table = next(iter(blocks.values()))
    names = table[name_label].astype(str).str.split("@", n=1)  # "000012@particles.mrcs": (12, particles.mrcs)
    return table.set_index(names.map(lambda n: (int(n[0]), Path(n[1]).name)))


def view_spread(data_star: str | Path, truth_star: str | Path) -> dict:
    """Size-weighted mean over classes of the median angle (°) between members' true viewing
    directions and the class's mean direction; classes >= 1 %; the same for a random split."""
    truth = _by_name(truth_star)
    parts = _by_name(data_star)
    truth = truth.loc[parts.index]
    dirs = _directions(truth["rlnAngleRot"].to_numpy(float), truth["rlnAngleTilt"].to_numpy(float))
    cls = parts["rlnClassNumber"].to_numpy(int)

    def spread(labels: np.ndarray) -> float:
        total, acc = 0, 0.0
        for c in np.unique(labels):
            members = dirs[labels == c]
            mean = members.sum(0)
            mean /= np.linalg.norm(mean) + 1e-12
            acc += len(members) * float(np.median(np.degrees(np.arccos(np.clip(members @ mean, -1, 1)))))
            total += len(members)
        return acc / max(total, 1)

    counts = np.bincount(cls)
    rand = np.random.default_rng(0).integers(0, int((counts > 0).sum()), len(cls))
    return {"spread_deg": spread(cls), "classes_ge_1pct": int((counts >= 0.01 * len(cls)).sum()),
            "random_spread_deg": spread(rand)}


def class_agreement(classes_mrcs: str | Path, truth_map: str | Path, diameter_angst: float,
                    order: int = 2) -> dict:
    """How well the class averages look like the structure: per class, the best normalised
    cross-correlation (20 Å, masked, over psi and shifts) with the true map's projections along
    HEALPix directions of ``order`` (the class ranker's label term); median and worst over the
    non-empty classes."""
    import torch

    from vitrify.core.euler import euler_to_matrix
    from vitrify.core.projector import project_real
    from vitrify.core.sampling import healpix_directions
    from vitrify.io.mrc import read_mrc
    from vitrify.ranker.labels import best_correlation

    volume, pixel = read_mrc(truth_map)
    dirs = healpix_directions(order, dtype=torch.float64)
    rotations = euler_to_matrix(dirs[:, 0], dirs[:, 1], torch.zeros_like(dirs[:, 0]))
    projections = project_real(torch.as_tensor(volume, dtype=torch.float64), rotations)
    averages, _ = read_mrc(classes_mrcs)
    cc = np.array([best_correlation(torch.as_tensor(a, dtype=torch.float64), projections, pixel,
                                    diameter_angst / (2 * pixel)) for a in averages])
    cc = cc[np.abs(averages).reshape(len(averages), -1).max(1) > 0]  # empty classes are all zero
    return {"agreement_median": float(np.median(cc)), "agreement_min": float(cc.min())}


def fibonacci_views(k: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` viewing directions spread evenly over the sphere: (rot °, tilt °) arrays."""
    i = np.arange(k) + 0.5
    return np.degrees(np.pi * (1 + 5 ** 0.5) * i) % 360.0, np.degrees(np.arccos(1 - 2 * i / k))


def write_oracle_references(truth_map: str | Path, k: int, out_path: str | Path) -> Path:
    """Projections ``(k, n, n)`` of the true map along :func:`fibonacci_views` as a stack for ``--ref``."""
    import torch

    from vitrify.core.euler import euler_to_matrix
    from vitrify.core.projector import project_real
    from vitrify.io.mrc import read_mrc, write_mrc

    volume, pixel = read_mrc(truth_map)
    rot, tilt = fibonacci_views(k)
    rotations = euler_to_matrix(torch.as_tensor(rot), torch.as_tensor(tilt), torch.zeros(k, dtype=torch.float64))
    images = project_real(torch.as_tensor(volume, dtype=torch.float64), rotations)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    write_mrc(out_path, images.float().numpy(), pixel)
    return Path(out_path)


def nearest_view_spread(truth_star: str | Path, k: int) -> float:
    """The view spread if every particle sat in the class of its nearest of the ``k`` oracle views:
    the floor no classification into ``k`` classes goes below."""
    truth = _by_name(truth_star)
    dirs = _directions(truth["rlnAngleRot"].to_numpy(float), truth["rlnAngleTilt"].to_numpy(float))
    views = _directions(*fibonacci_views(k))
    labels = np.argmax(dirs @ views.T, axis=1)
    total = 0.0
    for c in np.unique(labels):
        members = dirs[labels == c]
        mean = members.sum(0) / (np.linalg.norm(members.sum(0)) + 1e-12)
        total += len(members) * float(np.median(np.degrees(np.arccos(np.clip(members @ mean, -1, 1)))))
    return total / len(dirs)


def relion_figures(folder: str | Path) -> dict:
    """RELION-4's recorded run on an anchor set: spread (recomputed), CPU s (user + sys), wall s."""
    folder = Path(folder)
    header, values = (folder / "relion" / "summary.tsv").read_text().splitlines()[:2]
    row = dict(zip(header.split("\t"), values.split("\t")))
    spread = view_spread(folder / "relion" / "run_it200_data.star", folder / "truth.star")
    agree = class_agreement(folder / "relion" / "run_it200_classes.mrcs", folder / "truth_map.mrc", 170.0)
    return {"spread_deg": spread["spread_deg"], "classes_ge_1pct": spread["classes_ge_1pct"], **agree,
            "cpu_s": float(row["user_s"]) + float(row["sys_s"]), "wall_s": float(row["wall_s"]),
            "readme": RELION_README.get(folder.name)}


class CpuHog:
    """``n`` busy processes (``while True: pass``) on this process's CPUs while the block runs.

    ``cpu_s`` after the block: the CPU seconds they got (user + sys, from ``os.wait4``).
    """

    def __init__(self, n: int = 1) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []
        self.cpu_s = 0.0

    def __enter__(self) -> "CpuHog":
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            _, _, usage = os.wait4(proc.pid, 0)
            proc.returncode = -15
            self.cpu_s += usage.ru_utime + usage.ru_stime

"""Target scores of simulated 2D jobs from their ground truth (how our training set is labelled).

For every ranked class (``n_k > 10``) of a 2D job run on simulated particles:

* **purity** ``P``: the fraction of its particles that are real (``vtfMapIndex > 0`` in the
  simulation's ``truth.star``);
* **agreement** ``A``: the best normalised cross-correlation, over in-plane rotations (5°) and
  shifts, of the class average with a projection of the true map in the true orientation of one
  of its real members (up to 16 tried), both low-passed to 20 Å inside the particle mask; mapped
  to ``a = clip((A - 0.6) / 0.3, 0, 1)``;
* **job quality** ``J = 0.75 + 0.25 q``, with ``q`` the fraction of the job's real particles that
  sit in classes with ``P >= 0.9`` and ``a >= 0.5`` (a job that separates badly scores lower).

target ``= P^2 * (0.25 + 0.75 a) * J``, in [0, 1]: a pure class whose average looks like the
particle scores 1 in a good job; a class that is half junk at most 0.25; an empty-looking class
of real particles keeps at most 0.25 (it is still made of good particles, as the selection
metric counts them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vitrify.core.euler import euler_to_matrix
from vitrify.core.filters import lowpass_filter
from vitrify.core.fourier import irfft2_centered, rfft2_centered
from vitrify.core.masks import soft_circular_mask
from vitrify.core.projector import project_real, rotate_2d_fourier
from vitrify.io.mrc import read_mrc
from vitrify.io.star import read_star
from vitrify.ranker.inputs import Class2DJob, RankerInputs

AGREEMENT_RANGE = (0.6, 0.9)
PSI_STEP_DEG = 5.0
MAX_PROJECTIONS = 16
LOWPASS_ANGST = 20.0


@dataclass(frozen=True)
class ClassLabels:
    """Ground-truth terms and target of each processed class (arrays ``(k,)``) and the job term."""

    purity: np.ndarray
    agreement: np.ndarray
    target: np.ndarray
    job_quality: float
    n_real: np.ndarray  # real particles per class
    n_junk: np.ndarray


def _normalised(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked, zero-mean, unit-norm images ``(..., n, n)``."""
    x = images * mask
    x = x - (x.sum(dim=(-2, -1), keepdim=True) / mask.sum()) * mask
    return x / x.flatten(-2).norm(dim=-1)[..., None, None].clamp_min(1e-12)


def best_correlation(average: torch.Tensor, projections: torch.Tensor, pixel_size_angst: float,
                     radius_px: float) -> float:
    """Best normalised cross-correlation of ``average`` ``(n, n)`` with any of ``projections``
    ``(m, n, n)`` over in-plane rotations and cyclic shifts (both low-passed to 20 Å, masked)."""
    n = average.shape[-1]
    mask = soft_circular_mask(n, radius_px, 3.0, dtype=torch.float64)
    low = min(LOWPASS_ANGST, n * pixel_size_angst / 4)
    avg = _normalised(lowpass_filter(average.double(), max(low, 2.5 * pixel_size_angst), pixel_size_angst), mask)
    proj = _normalised(lowpass_filter(projections.double(), max(low, 2.5 * pixel_size_angst), pixel_size_angst), mask)
    psi = torch.arange(0.0, 360.0, PSI_STEP_DEG, dtype=torch.float64)
    rotated = rotate_2d_fourier(rfft2_centered(avg), psi)  # (a, n, n//2+1)
    rot_real = _normalised(irfft2_centered(rotated, n), mask)
    f_rot = rfft2_centered(rot_real)  # (a, n, h)
    f_proj = rfft2_centered(proj)  # (m, n, h)
    best = 0.0
    for j in range(proj.shape[0]):
        cc = irfft2_centered(f_rot * f_proj[j].conj(), n)  # (a, n, n) cyclic cross-correlation
        best = max(best, float(cc.amax()))
    return best


def _true_members(truth, members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    real = members[truth["vtfMapIndex"].to_numpy()[members] > 0]
    if len(real) > MAX_PROJECTIONS:
        real = rng.choice(real, MAX_PROJECTIONS, replace=False)
    return real


def _maps(sim_dir: Path) -> list[torch.Tensor]:
    paths = [sim_dir / "truth_map.mrc", *sorted(sim_dir.glob("truth_map_[0-9][0-9][0-9].mrc"))]
    return [torch.as_tensor(read_mrc(p)[0], dtype=torch.float64) for p in paths if p.is_file()]


def label_job(job: Class2DJob, inputs: RankerInputs, sim_dir: str | Path, seed: int = 0) -> ClassLabels:
    """Targets of the processed classes of ``job`` from the simulation in ``sim_dir``."""
    sim_dir = Path(sim_dir)
    truth = read_star(sim_dir / "truth.star")["particles"]
    assigned = job.data.data["rlnClassNumber"].astype(int).to_numpy()
    if len(truth) != len(assigned):
        raise ValueError(f"{sim_dir}: truth has {len(truth)} rows, the 2D job {len(assigned)}")
    maps = _maps(sim_dir)
    is_real = truth["vtfMapIndex"].to_numpy() > 0
    rng = np.random.default_rng(seed)
    radius_px = job.diameter_angst / (2 * job.pixel_size_angst)
    purity, agreement, n_real, n_junk = [], [], [], []
    for i, number in enumerate(inputs.class_numbers):
        members = np.flatnonzero(assigned == number)
        n_real.append(int(is_real[members].sum()))
        n_junk.append(len(members) - n_real[-1])
        purity.append(n_real[-1] / max(len(members), 1))
        chosen = _true_members(truth, members, rng)
        if len(chosen) == 0:
            agreement.append(0.0)
            continue
        angles = torch.as_tensor(truth[["rlnAngleRot", "rlnAngleTilt"]].to_numpy(np.float64)[chosen])
        rotations = euler_to_matrix(angles[:, 0], angles[:, 1], torch.zeros_like(angles[:, 0]))
        map_of = truth["vtfMapIndex"].to_numpy()[chosen]
        proj = torch.cat([project_real(maps[m - 1], rotations[map_of == m]) for m in np.unique(map_of)])
        average = torch.as_tensor(job.images[inputs.rows[i]], dtype=torch.float64)
        agreement.append(best_correlation(average, proj, job.pixel_size_angst, radius_px))
    return targets_from_terms(np.array(purity), np.array(agreement), np.array(n_real), np.array(n_junk),
                              int(is_real.sum()))


def targets_from_terms(purity: np.ndarray, agreement: np.ndarray, n_real: np.ndarray, n_junk: np.ndarray,
                       n_real_total: int) -> ClassLabels:
    """Combine purity, agreement and job quality into targets (module docstring).

    >>> t = targets_from_terms(np.array([1.0, 0.5]), np.array([0.9, 0.9]), np.array([10, 5]), np.array([0, 5]), 15)
    >>> [round(float(x), 4) for x in t.target]
    [0.9167, 0.2292]
    """
    lo, hi = AGREEMENT_RANGE
    a = np.clip((agreement - lo) / (hi - lo), 0.0, 1.0)
    good = (purity >= 0.9) & (a >= 0.5)
    q = float(n_real[good].sum() / n_real_total) if n_real_total else 0.0
    job_quality = 0.75 + 0.25 * q
    target = purity ** 2 * (0.25 + 0.75 * a) * job_quality
    return ClassLabels(purity, agreement, target, job_quality, n_real, n_junk)

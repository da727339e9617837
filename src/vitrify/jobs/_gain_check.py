"""A check that the gain reference's rotation/flip matches the movies (a clear message when not).

RELION multiplies raw frames by the gain, so the sum of a movie's raw frames carries the
detector's fixed pattern ``1 / gain``. The high-passed sum is correlated with the high-passed
``1 / gain`` in each of RELION's rotations and flips; when another orientation matches
clearly better than the one asked for, the job stops with the setting that fits.
"""

from __future__ import annotations

import numpy as np

from vitrify.io.errors import InputError

#: a correlation must exceed this many standard errors (1/sqrt(pixels)) to count
SIGNIFICANCE = 10.0


def _high_pass(image: np.ndarray) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    image = image.astype(np.float64)
    return image - uniform_filter(image, size=7, mode="nearest")


def _correlation_unit(unit: np.ndarray, b: np.ndarray) -> float:
    """Correlation of ``b`` with ``unit`` (zero mean, unit norm already)."""
    return float((unit * b).sum() / max(float(np.linalg.norm(b - b.mean())), 1e-30))


def check_gain_orientation(raw_gain: np.ndarray, raw_sum: np.ndarray, rotation: int, flip: int,
                           path: str) -> None:
    """InputError naming a better ``gain_rot``/``gain_flip`` when the asked one does not fit.

    Parameters
    ----------
    raw_gain
        ``(gy, gx)`` gain as read from the file (before rotation/flip).
    raw_sum
        ``(ny, nx)`` sum of a movie's raw frames.
    """
    from vitrify.io.movies import transform_gain

    target = _high_pass(raw_sum)
    target = (target - target.mean()) / max(float(np.linalg.norm(target - target.mean())), 1e-30)
    # the high-pass filter (a square box) commutes with RELION's rotations and flips: filter once
    pattern = _high_pass(1.0 / np.clip(raw_gain, 1e-6, None))
    scores = {}
    for r in range(4):
        for f in range(3):
            candidate = transform_gain(pattern, r, f)
            if candidate.shape == raw_sum.shape:
                scores[(r, f)] = _correlation_unit(target, candidate)
    if not scores or (rotation, flip) not in scores:
        return  # a size mismatch is reported per movie
    best = max(scores, key=scores.get)
    significant = scores[best] > SIGNIFICANCE / np.sqrt(raw_sum.size)
    if significant and scores[(rotation, flip)] < 0.5 * scores[best]:
        raise InputError(f"gain reference orientation does not match the movies (correlation "
                         f"{scores[(rotation, flip)]:.3f}; gain_rot {best[0]}, gain_flip {best[1]} gives "
                         f"{scores[best]:.3f})", path=path, field="gain_rot/gain_flip",
                         expected=f"gain_rot {best[0]} and gain_flip {best[1]}")

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


def _high_pass(image: np.ndarray, size: int = 7) -> np.ndarray:
    """``image`` minus its ``size`` × ``size`` box mean (edges repeated), by cumulative sums."""
    image = image.astype(np.float64)
    r = size // 2
    padded = np.pad(image, r, mode="edge")
    rows = np.cumsum(padded, axis=0)
    rows = np.concatenate([rows[size - 1:size], rows[size:] - rows[:-size]], axis=0)
    box = np.cumsum(rows, axis=1)
    box = np.concatenate([box[:, size - 1:size], box[:, size:] - box[:, :-size]], axis=1)
    return image - box / (size * size)


#: the check uses at most this many pixels per side around the centre
CHECK_SIZE_PX = 1024


def _crop_size(n: int) -> int:
    """At most :data:`CHECK_SIZE_PX`, with the parity of ``n`` (equal margins on both sides)."""
    return n if n <= CHECK_SIZE_PX else CHECK_SIZE_PX - (CHECK_SIZE_PX - n) % 2


def _centre(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The centred ``size`` part of ``image`` (equal margins)."""
    (ny, nx), (cy, cx) = image.shape, size
    y0, x0 = (ny - cy) // 2, (nx - cx) // 2
    return image[y0:y0 + cy, x0:x0 + cx]


def check_gain_orientation(raw_gain: np.ndarray, raw_sum: np.ndarray, rotation: int, flip: int,
                           path: str) -> None:
    """InputError naming a better ``gain_rot``/``gain_flip`` when the asked one does not fit.

    Parameters
    ----------
    raw_gain
        ``(gy, gx)`` gain as read from the file (before rotation/flip).
    raw_sum
        ``(ny, nx)`` sum of a movie's raw frames (a few are enough). Only the central
        :data:`CHECK_SIZE_PX`² pixels are used.
    """
    from vitrify.io.movies import transform_gain

    # a centred crop (equal margins) commutes with RELION's rotations and flips, and so does the
    # high-pass filter (a square box): crop and filter once, then transform the small images
    crop = (_crop_size(raw_sum.shape[0]), _crop_size(raw_sum.shape[1]))
    if raw_gain.shape not in (raw_sum.shape, raw_sum.shape[::-1]):
        return  # a size mismatch is reported per movie
    target = _high_pass(_centre(raw_sum, crop))
    target = ((target - target.mean()) / max(float(np.linalg.norm(target - target.mean())), 1e-30)).astype(np.float32)
    gain_crop = crop if raw_gain.shape == raw_sum.shape else crop[::-1]
    pattern = _high_pass(1.0 / np.clip(_centre(raw_gain, gain_crop), 1e-6, None))
    # every orientation is a permutation of the same pixels: one norm for all (target has zero mean)
    norm = max(float(np.linalg.norm(pattern - pattern.mean())), 1e-30)
    pattern = pattern.astype(np.float32)
    scores = {}
    for r in range(4):
        for f in range(3):
            candidate = transform_gain(pattern, r, f)
            if candidate.shape == target.shape:
                scores[(r, f)] = float(np.vdot(target, candidate)) / norm
    if not scores or (rotation, flip) not in scores:
        return  # a size mismatch is reported per movie
    best = max(scores, key=scores.get)
    significant = scores[best] > SIGNIFICANCE / np.sqrt(target.size)
    if significant and scores[(rotation, flip)] < 0.5 * scores[best]:
        raise InputError(f"gain reference orientation does not match the movies (correlation "
                         f"{scores[(rotation, flip)]:.3f}; gain_rot {best[0]}, gain_flip {best[1]} gives "
                         f"{scores[best]:.3f})", path=path, field="gain_rot/gain_flip",
                         expected=f"gain_rot {best[0]} and gain_flip {best[1]}")

"""Hand-made class features of RELION's class ranker (§5 of the spec), one class at a time.

Image features are computed on the 4 Å/px class average ``F`` and its 25 Å low-pass ``L``
(:mod:`vitrify.ranker.images`), with the mask radius ``R`` (4 Å pixels) and the ring
``[0.95 R, R]``:

* masks (:func:`protein_solvent_masks`): islands of ``L > 0.05 std(L)`` grown (4-connected,
  inside ``r <= R``) from seeds in ``r <= 0.6 R``; an island is protein when more than
  ``0.1 * 3.14 * 0.36 R^2`` of its pixels lie in ``r <= 0.6 R``, else "scattered"; the solvent is
  the disc minus the protein;
* moments (:func:`moments`): sum, mean, stddev, skew and (non-excess) kurtosis of ``F`` in the
  ring, the protein and the solvent;
* scattered signal, edge signal, the protein's circumference-to-area ratio (CAR), the relative
  signal intensity, statistics of ``L``, and six granulometry values (:func:`granulo`: sum of the
  grey opening by discs of radius 1..6).

Metadata features (:func:`metadata_features`): rotational and translational accuracy, the
estimated resolution ``d``, the weighted resolution ``1 / (d^2 ln n_k)`` and the relative
resolution ``d / (box * pixel)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

PI_RELION = 3.14  # RELION's value of pi in the mask thresholds
RING_RATIO = 0.95
GRANULO_RADII_PX = (1, 2, 3, 4, 5, 6)
#: accuracies RELION substitutes for a class of <= 100 particles when the model has none (deg, px)
FALLBACK_ACCURACY = (5.0, 8.0)


def radius_map(n: int) -> np.ndarray:
    """``(n, n)`` distance (px) of every pixel from the centre ``n // 2``."""
    c = np.arange(n, dtype=np.float64) - n // 2
    return np.sqrt(c[:, None] ** 2 + c[None, :] ** 2)


@dataclass(frozen=True)
class Masks:
    """Protein and solvent masks of one class and the counts behind them."""

    protein: np.ndarray  # (n, n) bool
    solvent: np.ndarray  # (n, n) bool
    protein_area: int
    solvent_area: int
    n_scattered: int


def protein_solvent_masks(lowpassed: np.ndarray, radius_px: float) -> Masks:
    """RELION's flood-fill masks of a 25 Å low-passed 4 Å/px image ``(n, n)``.

    >>> image = np.zeros((32, 32)); image[12:20, 12:20] = 1.0
    >>> m = protein_solvent_masks(image, 12.0)
    >>> m.protein_area, m.n_scattered
    (64, 0)
    """
    r2 = radius_map(lowpassed.shape[-1]) ** 2
    threshold = 0.05 * float(lowpassed.std())
    disc, inner = r2 <= radius_px ** 2, r2 <= 0.36 * radius_px ** 2
    labels, n_islands = ndimage.label((lowpassed > threshold) & disc)  # 4-connected by default
    protein = np.zeros(lowpassed.shape, dtype=bool)
    n_scattered = 0
    if n_islands:
        index = np.arange(1, n_islands + 1)
        size = ndimage.sum_labels(np.ones_like(r2), labels, index)
        inside = ndimage.sum_labels(inner.astype(np.float64), labels, index)
        seeded = inside > 0  # only islands reached from a seed in r <= 0.6 R are visited
        kept = seeded & (inside > 0.1 * PI_RELION * 0.36 * radius_px ** 2)
        protein = np.isin(labels, index[kept])
        n_scattered = int(size[seeded & ~kept].sum())
    protein_area = int(protein.sum())
    solvent = disc & ~protein
    return Masks(protein, solvent, protein_area, int(disc.sum()) - protein_area, n_scattered)


def moments(values: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, float, float]:
    """(sum, mean, stddev, skew, kurtosis) of ``values[mask]`` as RELION's ``calculateMoments``.

    Population stddev; skew ``S3 sqrt(N) / S2^1.5`` and kurtosis ``S4 N / S2^2`` (not excess) of the
    deviations; skew and kurtosis 0 when ``S2 = 0``; all 0 for an empty mask.

    >>> moments(np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4, bool))[:3]
    (10.0, 2.5, 1.118033988749895)
    """
    v = values[mask].astype(np.float64)
    if v.size == 0:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    total, n = float(v.sum()), v.size
    d = v - total / n
    s2, s3, s4 = float((d ** 2).sum()), float((d ** 3).sum()), float((d ** 4).sum())
    skew = s3 * math.sqrt(n) / s2 ** 1.5 if s2 > 0 else 0.0
    kurt = s4 * n / s2 ** 2 if s2 > 0 else 0.0
    return total, total / n, math.sqrt(s2 / n), skew, kurt


def disc_footprint(radius_px: int) -> np.ndarray:
    """``(2N+1, 2N+1)`` bool disc ``x^2 + y^2 <= N^2``."""
    c = np.arange(-radius_px, radius_px + 1)
    return c[:, None] ** 2 + c[None, :] ** 2 <= radius_px ** 2


def granulo(image: np.ndarray, radii_px: tuple[int, ...] = GRANULO_RADII_PX) -> list[float]:
    """Sum of the grey opening of ``image`` ``(n, n)`` by discs of each radius (outside ignored).

    >>> granulo(np.ones((8, 8)), (1, 2))
    [64.0, 64.0]
    """
    out = []
    for radius in radii_px:
        fp = disc_footprint(radius)
        eroded = ndimage.grey_erosion(image, footprint=fp, mode="constant", cval=np.inf)
        opened = ndimage.grey_dilation(eroded, footprint=fp, mode="constant", cval=-np.inf)
        out.append(float(opened.sum()))
    return out


def perimeter_pixels(protein: np.ndarray) -> int:
    """Protein pixels with at least one 8-neighbour that is not protein (outside counts as not)."""
    padded = np.pad(protein, 1, constant_values=False)
    all_neighbours = ndimage.binary_erosion(padded, structure=np.ones((3, 3), bool), border_value=0)[1:-1, 1:-1]
    return int((protein & ~all_neighbours).sum())


def image_features(image: np.ndarray, lowpassed: np.ndarray, radius_px: float) -> dict[str, float]:
    """Every image feature of one class (STAR label -> value) from ``F`` and ``L`` ``(n, n)``."""
    r = radius_map(image.shape[-1])
    masks = protein_solvent_masks(lowpassed, radius_px)
    out: dict[str, float] = {}
    ring = (r >= RING_RATIO * radius_px) & (r <= radius_px)
    for name, mask in (("Ring", ring), ("Protein", masks.protein), ("Solvent", masks.solvent)):
        total, mean, std, skew, kurt = moments(image, mask)
        out.update({f"rln{name}Sum": total, f"rln{name}Mean": mean, f"rln{name}Stddev": std,
                    f"rln{name}Skew": skew, f"rln{name}Kurt": kurt})
    del out["rlnRingSum"]
    out["rlnProteinArea"] = float(masks.protein_area > 1)
    out["rlnSolventArea"] = float(masks.solvent_area > 0.08 * PI_RELION * radius_px ** 2)
    out["rlnRelativeSignalIntensity"] = out["rlnProteinSum"] - out["rlnSolventMean"] * masks.protein_area
    out["rlnScatteredSignal"] = masks.n_scattered / (masks.n_scattered + masks.protein_area + 1)
    edge = np.round(r) == round(radius_px)
    out["rlnEdgeSignal"] = float((masks.protein & edge).sum() / max(int(edge.sum()), 1))
    out["rlnProteinCAR"] = (perimeter_pixels(masks.protein) / (2 * math.sqrt(PI_RELION * masks.protein_area))
                            if masks.protein_area > 1 else 0.0)
    out.update({"rlnLowpassFilteredImageMean": float(lowpassed.mean()),
                "rlnLowpassFilteredImageStddev": float(lowpassed.std()),
                "rlnLowpassFilteredImageMin": float(lowpassed.min()),
                "rlnLowpassFilteredImageMax": float(lowpassed.max())})
    for radius, value in zip(GRANULO_RADII_PX, granulo(image)):
        out[f"vtfGranulo{radius}"] = value
    return out


@dataclass(frozen=True)
class ClassMetadata:
    """What the model and data STAR files say about one class."""

    n_particles: float  # rlnClassDistribution * N
    resolution_angst: float  # d_k
    accuracy_rotation_deg: float
    accuracy_translation_angst: float
    box_px: int  # rlnOriginalImageSize
    pixel_size_angst: float


def accuracies(meta: ClassMetadata) -> tuple[float, float]:
    """(rotation, translation) accuracies; RELION's fallback (5°, 8) when the model has none (> 99).

    RELION estimates missing accuracies of classes of more than 100 particles from 101 particles'
    CTFs and the noise spectrum; our class2d writes accuracies for every class with particles,
    so that branch is replaced by the same fallback as for small classes.
    """
    if meta.accuracy_rotation_deg > 99 or meta.accuracy_translation_angst > 99:
        return FALLBACK_ACCURACY
    return meta.accuracy_rotation_deg, meta.accuracy_translation_angst


def metadata_features(meta: ClassMetadata) -> dict[str, float]:
    """Accuracies, estimated / weighted / relative resolution and class size (STAR label -> value).

    >>> f = metadata_features(ClassMetadata(math.e ** 2, 10.0, 2.0, 3.0, 100, 2.0))
    >>> round(f["rlnWeightedResolution"], 6), f["rlnRelativeResolution"]
    (0.005, 0.05)
    """
    rot, trans = accuracies(meta)
    d = meta.resolution_angst
    log_n = math.log(meta.n_particles) if meta.n_particles > 1 else 1e-12
    return {"rlnAccuracyRotations": rot, "rlnAccuracyTranslations": trans, "rlnEstimatedResolution": d,
            "rlnWeightedResolution": 1.0 / (d * d * log_n),
            "rlnRelativeResolution": d / (meta.box_px * meta.pixel_size_angst),
            "rlnParticleNr": meta.n_particles}


#: the 24-vector fed to the network: (feature, mean, std); None = normalised per job (§5.5)
VECTOR: tuple[tuple[str, float | None, float | None], ...] = (
    ("rlnAccuracyRotations", 4.352, 4.759), ("rlnAccuracyTranslations", 3.871, 3.019),
    ("rlnWeightedResolution", 0.001, 0.002), ("rlnRelativeResolution", 0.061, 0.088),
    ("rlnRingMean", -0.199, 0.283), ("rlnRingStddev", 0.424, 0.629), ("rlnProteinStddev", 0.744, 0.585),
    ("rlnSolventMean", -0.380, 0.378), ("rlnSolventStddev", 0.292, 0.485),
    ("rlnScatteredSignal", 0.024, 0.075), ("rlnEdgeSignal", 0.047, 0.075),
    ("rlnLowpassFilteredImageMean", 0.116, 0.182), ("rlnLowpassFilteredImageStddev", 0.638, 0.429),
    ("rlnLowpassFilteredImageMin", -1.112, 1.087), ("rlnLowpassFilteredImageMax", 2.990, 1.758),
    ("vtfGranulo1", 837.576, 1958.823), ("vtfGranulo2", 726.097, 2845.330), ("vtfGranulo3", 602.175, 3605.858),
    ("vtfGranulo4", 483.469, 4001.972), ("vtfGranulo5", 328.014, 4399.578), ("vtfGranulo6", 196.059, 4709.751),
    ("rlnProteinSum", None, None), ("rlnSolventSum", None, None), ("rlnRelativeSignalIntensity", None, None),
)
N_FEATURES = len(VECTOR)


def feature_vectors(rows: list[dict[str, float]]) -> np.ndarray:
    """The normalised ``(k, 24)`` float32 vectors of a job's processed classes (order of :data:`VECTOR`).

    Fixed z-scores with RELION's means and stds; the last three are z-scored over the job's classes
    (population std; 0 when the std is below 1e-10).
    """
    out = np.zeros((len(rows), N_FEATURES), dtype=np.float64)
    for j, (name, mean, std) in enumerate(VECTOR):
        x = np.array([row[name] for row in rows], dtype=np.float64)
        if mean is None:
            mean, std = (float(x.mean()), float(x.std())) if len(x) else (0.0, 0.0)
            out[:, j] = (x - mean) / std if std >= 1e-10 else 0.0
        else:
            out[:, j] = (x - mean) / std
    return out.astype(np.float32)

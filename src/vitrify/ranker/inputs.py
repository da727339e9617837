"""Read a 2D classification job for ranking: optimiser.star -> model, data, class averages.

:func:`read_class2d_job` follows ``run_itNNN_optimiser.star`` to its ``rlnModelStarFile`` and
``rlnExperimentalDataStarFile`` (names resolve from the current directory, the project or the
optimiser's folder, as every vitrify reader), reads the class averages named by
``rlnReferenceImage`` and checks what the ranker needs (CTF-corrected 2D classes, a particle
diameter, a usable pixel size). Every problem is one :class:`InputError` naming file and field.
:func:`class_inputs` turns the job into the ranker's per-class inputs (§3-5 of the spec).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vitrify.errors import InputError
from vitrify.io.mrc import read_mrc
from vitrify.io.star import OpticsStar, image_base_dirs, read_star, read_star_optics, resolve_image_name
from vitrify.ranker.features import ClassMetadata, feature_vectors, image_features, metadata_features
from vitrify.ranker.images import cnn_images, feature_image, lowpass_25, mask_radius_px

MIN_CLASS_PARTICLES = 10  # RELION ranks only classes with n_k > 10
NOT_RANKED = -999.0


@dataclass(frozen=True)
class Class2DJob:
    """What the ranker reads of one 2D classification iteration."""

    optimiser_path: Path
    optimiser: dict
    model_general: dict
    model_classes: pd.DataFrame
    model_blocks: dict
    data: OpticsStar
    data_path: Path
    model_path: Path
    images: np.ndarray  # (K, n, n) float32 class averages
    pixel_size_angst: float
    diameter_angst: float

    @property
    def class_numbers(self) -> np.ndarray:
        """1-based class index of every model row (the number before ``@`` of rlnReferenceImage)."""
        return np.array([int(str(name).split("@")[0]) for name in self.model_classes["rlnReferenceImage"]])


def _find(name: str, relative_to: Path, what: str, field: str) -> Path:
    """A file named in a STAR file: absolute, or relative to one of the usual base folders."""
    path = Path(name)
    candidates = [path] if path.is_absolute() else [base / path for base in image_base_dirs(relative_to)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"{what} {name} not found", path=relative_to, field=field,
                     expected="the 2D job's files next to its optimiser.star")


def _number(table: dict, key: str, path: Path, default: float | None = None) -> float:
    if key not in table:
        if default is not None:
            return default
        raise InputError(f"no {key}", path=path, field=key)
    try:
        return float(table[key])
    except (TypeError, ValueError):
        raise InputError(f"{key} is not a number: {table[key]!r}", path=path, field=key) from None


def _read_images(classes: pd.DataFrame, model_path: Path) -> np.ndarray:
    stacks: dict[Path, np.ndarray] = {}
    out = []
    for name in classes["rlnReferenceImage"]:
        index, _ = resolve_image_name(str(name), ".")
        path = _find(str(name).strip().split("@")[-1], model_path, "class averages", "rlnReferenceImage")
        if path not in stacks:
            stacks[path] = read_mrc(path, require_finite=True)[0]
        stack = stacks[path]
        if index >= len(stack):
            raise InputError(f"image {index + 1} of a stack of {len(stack)}", path=path, field="rlnReferenceImage")
        out.append(stack[index])
    return np.stack(out).astype(np.float32)


def read_class2d_job(optimiser_star: str | Path) -> Class2DJob:
    """Read a ``run_itNNN_optimiser.star`` and the files it names; InputError on any problem."""
    opt_path = Path(optimiser_star)
    blocks = read_star(opt_path)
    if "optimiser_general" not in blocks:
        raise InputError("no data_optimiser_general block", path=opt_path, expected="a run_itNNN_optimiser.star")
    opt = blocks["optimiser_general"]
    if int(_number(opt, "rlnDoCorrectCtf", opt_path, 0.0)) != 1:
        raise InputError("the 2D job ran without CTF correction", path=opt_path, field="rlnDoCorrectCtf",
                         expected="1 (the class ranker needs CTF-corrected classes)")
    diameter = _number(opt, "rlnParticleDiameter", opt_path)
    model_path = _find(str(opt.get("rlnModelStarFile", "")), opt_path, "model file", "rlnModelStarFile")
    data_path = _find(str(opt.get("rlnExperimentalDataStarFile", "")), opt_path, "data file",
                      "rlnExperimentalDataStarFile")
    model = read_star(model_path)
    for block in ("model_general", "model_classes"):
        if block not in model:
            raise InputError(f"no data_{block} block", path=model_path, expected="a run_itNNN_model.star")
    general = model["model_general"]
    if int(_number(general, "rlnReferenceDimensionality", model_path, 2.0)) != 2:
        raise InputError("not a 2D classification", path=model_path, field="rlnReferenceDimensionality",
                         expected="2")
    pixel = _number(general, "rlnPixelSize", model_path)
    data = read_star_optics(data_path, "particles")
    if "rlnClassNumber" not in data.data.columns:
        raise InputError("no rlnClassNumber column", path=data_path, field="data_particles",
                         expected="particles assigned to classes (a 2D job's run_itNNN_data.star)")
    images = _read_images(model["model_classes"], model_path)
    box = int(_number(general, "rlnOriginalImageSize", model_path, float(images.shape[-1])))
    if images.shape[-1] != box or images.shape[-2] != box:
        raise InputError(f"class averages are {images.shape[-1]} px, model says {box}", path=model_path,
                         field="rlnOriginalImageSize")
    if not (pixel > 0 and diameter > 0) or box * pixel < 32.0 or diameter / pixel > 4 * box:
        raise InputError(f"classes of {box} px at {pixel} Å/px with a {diameter} Å mask cannot be ranked",
                         path=opt_path, field="rlnPixelSize/rlnParticleDiameter",
                         expected="a box of at least 32 Å and a mask at most 4 boxes wide")
    return Class2DJob(opt_path, opt, general, model["model_classes"], model, data, data_path, model_path,
                      images, pixel, diameter)


CTF_FLOOR = 0.07


def undo_first_peak_ctf(job: Class2DJob) -> np.ndarray:
    """Class averages ``(K, n, n)`` divided in Fourier space by the CTF of the mean defocus
    (``(sum U + sum V) / 2N``, angle 0, optics group 1; values below 0.07 in magnitude floored),
    as RELION does for a 2D job run with "ignore CTFs until first peak"."""
    from vitrify.core.ctf import CtfParams, ctf_2d
    from vitrify.core.fourier import irfft2_centered, rfft2_centered

    data, optics = job.data.data, job.data.optics.iloc[0]
    if not {"rlnDefocusU", "rlnDefocusV"} <= set(data.columns):
        raise InputError("no defocus columns", path=job.data_path, field="rlnDefocusU",
                         expected="CTF parameters of the particles")
    defocus = float((data["rlnDefocusU"].sum() + data["rlnDefocusV"].sum()) / (2 * len(data)))
    params = CtfParams(pixel_size_angst=job.pixel_size_angst, voltage_kv=float(optics.get("rlnVoltage", 300.0)),
                       cs_mm=float(optics.get("rlnSphericalAberration", 2.7)),
                       amplitude_contrast=float(optics.get("rlnAmplitudeContrast", 0.1)),
                       defocus_u_angst=defocus, defocus_v_angst=defocus)
    n = job.images.shape[-1]
    ctf = ctf_2d(n, params, dtype=torch.float64)
    ctf = torch.where(ctf.abs() < CTF_FLOOR, torch.full_like(ctf, CTF_FLOOR) * torch.sign(ctf + 1e-30), ctf)
    images = torch.as_tensor(job.images, dtype=torch.float64)
    return irfft2_centered(rfft2_centered(images) / ctf, n).float().numpy()


def class_resolution_angst(job: Class2DJob, row: int) -> float:
    """d_k: rlnEstimatedResolution if > 0, else from the class's SSNR (first shell < 1), else 2 px."""
    value = float(job.model_classes["rlnEstimatedResolution"].iloc[row]) \
        if "rlnEstimatedResolution" in job.model_classes else -1.0
    if value > 0:
        return value
    table = job.model_blocks.get(f"model_class_{job.class_numbers[row]}")
    if isinstance(table, pd.DataFrame) and {"rlnSsnrMap", "rlnAngstromResolution"} <= set(table.columns):
        ssnr = table["rlnSsnrMap"].to_numpy()
        below = np.nonzero(ssnr[1:] < 1.0)[0]
        if below.size:
            return float(table["rlnAngstromResolution"].iloc[below[0]])
    return 2.0 * job.pixel_size_angst


@dataclass(frozen=True)
class RankerInputs:
    """Per-class inputs of the processed classes (``n_k > 10``), in class order."""

    rows: np.ndarray  # (k,) row of each processed class in model_classes
    class_numbers: np.ndarray  # (k,) 1-based class numbers
    n_particles: np.ndarray  # (k,) n_k
    images: torch.Tensor  # (k, 64, 64) CNN inputs
    vectors: np.ndarray  # (k, 24) normalised features
    features: list[dict[str, float]]  # (k,) every feature by STAR label


def _metadata(job: Class2DJob, row: int, n_k: float) -> ClassMetadata:
    classes = job.model_classes

    def value(label: str) -> float:
        return float(classes[label].iloc[row]) if label in classes else 999.0

    return ClassMetadata(n_k, class_resolution_angst(job, row), value("rlnAccuracyRotations"),
                         value("rlnAccuracyTranslationsAngst"), job.images.shape[-1], job.pixel_size_angst)


def class_inputs(job: Class2DJob) -> RankerInputs:
    """Features and 64 x 64 images of every class with more than 10 particles."""
    n_total = len(job.data.data)
    pdf = job.model_classes["rlnClassDistribution"].to_numpy(np.float64)
    rows = np.flatnonzero(pdf * n_total > MIN_CLASS_PARTICLES)
    all_images = undo_first_peak_ctf(job) if int(float(job.optimiser.get("rlnDoIgnoreCtfUntilFirstPeak", 0))) \
        else job.images
    images = torch.as_tensor(all_images[rows])
    small = feature_image(images, job.pixel_size_angst)
    lowpassed = lowpass_25(small)
    radius = mask_radius_px(job.diameter_angst, small.shape[-1])
    features = []
    for i, row in enumerate(rows):
        f = metadata_features(_metadata(job, int(row), float(pdf[row] * n_total)))
        f.update(image_features(small[i].double().numpy(), lowpassed[i].double().numpy(), radius))
        features.append(f)
    vectors = feature_vectors(features) if features else np.zeros((0, 24), np.float32)
    cnn = cnn_images(images, job.pixel_size_angst, job.diameter_angst) if len(rows) else torch.zeros(0, 64, 64)
    return RankerInputs(rows, job.class_numbers[rows], pdf[rows] * n_total, cnn, vectors, features)


def particle_counts(job: Class2DJob) -> dict[int, int]:
    """Particles per class number in data.star."""
    counts = job.data.data["rlnClassNumber"].astype(int).value_counts()
    return {int(k): int(v) for k, v in counts.items()}


__all__ = ["Class2DJob", "MIN_CLASS_PARTICLES", "NOT_RANKED", "RankerInputs", "class_inputs",
           "class_resolution_angst", "particle_counts", "read_class2d_job"]

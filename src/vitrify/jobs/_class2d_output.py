"""Class2D output in RELION-4 form: classes.mrcs, model.star, data.star, optimiser.star.

Per written iteration ``NNN`` (root ``run``): ``run_itNNN_classes.mrcs`` (references),
``run_itNNN_model.star`` (model_general, model_classes, model_class_<k>, model_groups,
model_optics_group_<g>), ``run_itNNN_data.star`` (every input column plus the assignments),
``run_itNNN_optimiser.star``, ``run_itNNN_sampling.star``, a PNG gallery
``run_itNNN_classes.png`` sorted by class size, and for VDAM the moments
``run_itNNN_1moment.mrcs`` (2K slices: half 1 then half 2) and ``run_itNNN_2moment.mrcs``
(K slices), complex values stored as interleaved (re, im) columns.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vitrify.io.atomic import atomic_path
from vitrify.io.mrc import write_mrc
from vitrify.io.star import write_star, write_star_optics
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.vdam import Moments

NOT_COMPUTED = 999.0


def iteration_paths(job_dir: Path, root: str, it: int) -> dict[str, Path]:
    """Paths of one iteration's files."""
    stem = job_dir / f"{root}_it{it:03d}"
    names = ("classes.mrcs", "model.star", "data.star", "optimiser.star", "sampling.star",
             "classes.png", "1moment.mrcs", "2moment.mrcs", "vitrify_state.npz")
    return {name.split(".")[0] + ("_png" if name.endswith("png") else ""): Path(f"{stem}_{name}")
            for name in names}


def complex_to_real(z: torch.Tensor) -> np.ndarray:
    """``(S, m, h)`` complex -> ``(S, m, 2h)`` float32 (re, im interleaved)."""
    return torch.view_as_real(z.cpu().to(torch.complex64)).reshape(*z.shape[:-1], -1).numpy()


def real_to_complex(a: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`complex_to_real`."""
    t = torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))
    return torch.view_as_complex(t.reshape(*t.shape[:-1], -1, 2).contiguous())


def _shell_resolution(model: MlModel, shell: int) -> float:
    return shell / (model.box_px * model.pixel_size_angst)


def _accuracy(values: torch.Tensor | None, k: int, scale: float) -> np.ndarray:
    """Per-class accuracies times ``scale``; 999 where not computed or unbounded (empty class)."""
    if values is None:
        return np.full(k, NOT_COMPUTED)
    v = values.detach().cpu().double().numpy() * scale
    return np.where(np.isfinite(v), v, NOT_COMPUTED)


def overall_accuracy(model: MlModel) -> tuple[float, float]:
    """Class-fraction weighted accuracies (degrees, Å) over classes with a finite value; 999 if none."""
    out = []
    for values, scale in ((model.class_accuracy_psi_deg, 1.0), (model.class_accuracy_offset_px,
                                                                 model.pixel_size_angst)):
        if values is None:
            out.append(NOT_COMPUTED)
            continue
        v = values.detach().cpu().double()
        pdf = model.pdf_class.detach().cpu().double()
        ok = torch.isfinite(v) & (pdf > 0)
        out.append(float((v[ok] * pdf[ok]).sum() / pdf[ok].sum()) * scale if bool(ok.any()) else NOT_COMPUTED)
    return out[0], out[1]


def model_blocks(model: MlModel, paths: dict[str, Path], rel, grad: bool,
                 group_names: list[str], group_counts: list[int]) -> dict:
    """The blocks of ``model.star``."""
    k_all, n = model.n_classes, model.box_px
    radius = model.current_radius
    general = {
        "rlnReferenceDimensionality": 2, "rlnDataDimensionality": 2, "rlnOriginalImageSize": n,
        "rlnCurrentResolution": model.resolution_angst(radius), "rlnCurrentImageSize": min(n, 2 * (radius + 1)),
        "rlnPaddingFactor": float(model.pad), "rlnIsHelix": 0, "rlnFourierSpaceInterpolator": 1,
        "rlnMinRadiusNnInterpolation": 10, "rlnPixelSize": model.pixel_size_angst,
        "rlnNrClasses": k_all, "rlnNrBodies": 1, "rlnNrGroups": len(group_names),
        "rlnNrOpticsGroups": len(group_names), "rlnTau2FudgeFactor": model.tau2_fudge,
        "rlnNormCorrectionAverage": 1.0,
        "rlnSigmaOffsetsAngst": math.sqrt(max(model.sigma2_offset_px, 0.0)) * model.pixel_size_angst,
        "rlnOrientationalPriorMode": 0, "rlnSigmaPriorRotAngle": 0.0, "rlnSigmaPriorTiltAngle": 0.0,
        "rlnSigmaPriorPsiAngle": 0.0, "rlnLogLikelihood": model.log_likelihood,
        "rlnAveragePmax": model.ave_pmax,
    }
    dvp = model.data_vs_prior.cpu().numpy()
    est_res = []
    for k in range(k_all):
        below = np.nonzero(dvp[k, 1:] < 1.0)[0]
        shell = int(below[0]) if below.size else dvp.shape[1] - 1
        est_res.append(model.resolution_angst(shell) if shell > 0 else NOT_COMPUTED)
    classes = pd.DataFrame({
        "rlnReferenceImage": [f"{k + 1:06d}@{rel(paths['classes'])}" for k in range(k_all)],
        **({"rlnGradMoment1": [f"{k + 1:06d}@{rel(paths['1moment'])}" for k in range(k_all)],
            "rlnGradMoment2": [f"{k + 1:06d}@{rel(paths['2moment'])}" for k in range(k_all)]} if grad else {}),
        "rlnClassDistribution": model.pdf_class.cpu().numpy(),
        "rlnAccuracyRotations": _accuracy(model.class_accuracy_psi_deg, k_all, 1.0),
        "rlnAccuracyTranslationsAngst": _accuracy(model.class_accuracy_offset_px, k_all, model.pixel_size_angst),
        "rlnEstimatedResolution": est_res,
        "rlnOverallFourierCompleteness": [float((dvp[k, 1:radius + 1] > 1).mean()) for k in range(k_all)],
        "rlnClassPriorOffsetX": 0.0, "rlnClassPriorOffsetY": 0.0,
    })
    blocks: dict = {"model_general": general, "model_classes": classes}
    shells = np.arange(n // 2 + 1)
    res = np.array([_shell_resolution(model, s) for s in shells])
    ang = np.where(shells > 0, 1.0 / np.maximum(res, 1e-30), NOT_COMPUTED)
    sigma2 = model.sigma2.cpu().numpy()
    tau2 = model.tau2.cpu().numpy()
    for k in range(k_all):
        blocks[f"model_class_{k + 1}"] = pd.DataFrame({
            "rlnSpectralIndex": shells, "rlnResolution": res, "rlnAngstromResolution": ang,
            "rlnSsnrMap": dvp[k], "rlnGoldStandardFsc": 0.0,
            "rlnFourierCompleteness": (dvp[k] > 1).astype(float),
            "rlnReferenceSigma2": sigma2[0], "rlnReferenceTau2": tau2[k],
            "rlnSpectralOrientabilityContribution": 0.0})
    blocks["model_groups"] = pd.DataFrame({
        "rlnGroupNumber": np.arange(1, len(group_names) + 1), "rlnGroupName": group_names,
        "rlnGroupNrParticles": group_counts, "rlnGroupScaleCorrection": 1.0})
    for g in range(sigma2.shape[0]):
        keep = sigma2[g] > 0
        blocks[f"model_optics_group_{g + 1}"] = pd.DataFrame({
            "rlnSpectralIndex": shells[keep], "rlnResolution": res[keep], "rlnSigma2Noise": sigma2[g][keep]})
    return blocks


def data_table(data: pd.DataFrame, particles: ParticleSet, pixel_size_angst: float,
               image_names: pd.Series | None = None) -> pd.DataFrame:
    """Input particle rows plus RELION's refinement columns; ``image_names`` replace rlnImageName
    (names that resolve from where data.star is read, :func:`vitrify.io.star.portable_image_names`)."""
    out = data.copy()
    if image_names is not None:
        out["rlnImageName"] = image_names.to_numpy()
    off = particles.offset_px.cpu().numpy().astype(np.float64) * pixel_size_angst
    psi = particles.psi_deg.cpu().numpy().astype(np.float64)
    out["rlnAnglePsi"] = np.where(psi > 180.0, psi - 360.0, psi)
    out["rlnOriginXAngst"] = off[:, 0]
    out["rlnOriginYAngst"] = off[:, 1]
    out["rlnClassNumber"] = particles.class_index.cpu().numpy().astype(np.int64) + 1
    out["rlnGroupNumber"] = particles.group.cpu().numpy().astype(np.int64) + 1
    out["rlnNormCorrection"] = 1.0
    out["rlnLogLikeliContribution"] = particles.log_likelihood.cpu().numpy()
    out["rlnMaxValueProbDistribution"] = particles.pmax.cpu().numpy().astype(np.float64)
    out["rlnNrOfSignificantSamples"] = particles.n_significant.cpu().numpy().astype(np.int64)
    return out


def gallery_mosaic(refs: torch.Tensor, order: list[int], cols: int) -> np.ndarray:
    """Tiles of ``refs`` ``(K, n, n)`` in ``order``, each scaled to [0, 1], 1-px gaps -> ``(H, W)``."""
    n = refs.shape[-1]
    rows = -(-len(order) // cols)
    out = np.ones((rows * (n + 1) + 1, cols * (n + 1) + 1), dtype=np.float32)
    imgs = refs.detach().cpu().float().numpy()
    for i, c in enumerate(order):
        img = imgs[c]
        lo, hi = float(img.min()), float(img.max())
        r, q = divmod(i, cols)
        out[1 + r * (n + 1): 1 + r * (n + 1) + n, 1 + q * (n + 1): 1 + q * (n + 1) + n] = (
            (img - lo) / (hi - lo) if hi > lo else 0.5)
    return out


def write_gallery(path: Path, refs: torch.Tensor, pdf: torch.Tensor) -> None:
    """PNG grid of the class averages, largest class first, labelled with number and size.

    One mosaic image in one axes (50 subplots cost seconds per written iteration).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = torch.argsort(pdf.cpu(), descending=True).tolist()
    k, n = len(order), refs.shape[-1]
    cols = min(10, k)
    rows = -(-k // cols)
    fig = plt.figure(figsize=(1.3 * cols, 1.45 * rows))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - 0.1 / rows))
    ax.imshow(gallery_mosaic(refs, order, cols), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    for i, c in enumerate(order):
        r, q = divmod(i, cols)
        ax.text(q * (n + 1) + 1 + n / 2, r * (n + 1) + 1.5, f"{c + 1}: {100 * float(pdf[c]):.1f}%",
                fontsize=7, ha="center", va="top", color="black",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def write_moments(paths: dict[str, Path], moments: Moments, pixel_size_angst: float) -> None:
    """VDAM moments as MRC stacks (complex interleaved)."""
    k = moments.m2.shape[0]
    write_mrc(paths["1moment"], complex_to_real(moments.m1.reshape(2 * k, *moments.m1.shape[2:])),
              pixel_size_angst)
    write_mrc(paths["2moment"], complex_to_real(moments.m2.to(torch.complex64)), pixel_size_angst)


#: ParticleSet fields kept (exactly) in ``run_itNNN_vitrify_state.npz``
STATE_PARTICLE_FIELDS = ("offset_px", "class_index", "psi_deg", "pmax", "n_significant", "log_likelihood")
#: MlModel fields kept there (what model.star holds only as rounded text)
STATE_MODEL_ARRAYS = ("pdf_class", "sigma2", "tau2", "data_vs_prior")
STATE_MODEL_SCALARS = ("sigma2_offset_px", "tau2_fudge", "current_radius", "log_likelihood", "ave_pmax")


def write_state(path: Path, it: int, model: MlModel, particles: ParticleSet, options: object) -> None:
    """The exact model and particle state of iteration ``it`` (the RELION files round numbers to
    6 digits) and the run's ``options`` (a dataclass, as JSON), so that ``--continue`` goes on
    exactly as the uninterrupted run would."""
    import dataclasses
    import json

    arrays = {"options_json": np.asarray(json.dumps(dataclasses.asdict(options), default=str))}
    arrays.update({f"model_{name}": getattr(model, name).detach().cpu().numpy() for name in STATE_MODEL_ARRAYS})
    arrays.update({f"model_{name}": np.asarray(getattr(model, name)) for name in STATE_MODEL_SCALARS})
    arrays.update({f"particles_{name}": getattr(particles, name).detach().cpu().numpy()
                   for name in STATE_PARTICLE_FIELDS})
    with atomic_path(path) as tmp:
        np.savez(tmp, iteration=np.asarray(it), **arrays)


def write_tables(paths: dict[str, Path], optics: pd.DataFrame, data: pd.DataFrame, model_star: dict,
                 optimiser: dict, sampling: dict) -> None:
    """The STAR files of one iteration (data.star last-but-one, optimiser.star last)."""
    write_star(paths["model"], model_star)
    write_star(paths["sampling"], {"sampling_general": sampling})
    write_star_optics(paths["data"], optics, data, "particles")
    write_star(paths["optimiser"], {"optimiser_general": optimiser})

"""InitialModel output in RELION-4 form.

Per written iteration ``NNN`` (root ``run``): ``run_itNNN_classKKK.mrc`` (one volume per class,
pixel size in the header), ``run_itNNN_model.star`` (model_general, model_classes,
model_class_<k>, model_groups, model_optics_group_<g>), ``run_itNNN_data.star`` (every input
column plus rlnAngleRot/Tilt/Psi, origins, class), ``run_itNNN_optimiser.star``,
``run_itNNN_sampling.star`` and ``run_itNNN_slices.png`` (central xy, xz, yz sections of every
class). The blocks follow Class2D's (:mod:`vitrify.jobs._class2d_output`) with the 3D values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vitrify.io.atomic import atomic_path
from vitrify.io.mrc import write_mrc
from vitrify.jobs._class2d_output import data_table, model_blocks
from vitrify.ml.model import MlModel, ParticleSet


def iteration_paths(job_dir: Path, root: str, it: int, n_classes: int) -> dict[str, Path]:
    """Paths of one iteration's files (``class001`` ... for the volumes)."""
    stem = job_dir / f"{root}_it{it:03d}"
    out = {name: Path(f"{stem}_{name}.star") for name in ("model", "data", "optimiser", "sampling")}
    out["slices_png"] = Path(f"{stem}_slices.png")
    for k in range(n_classes):
        out[f"class{k + 1:03d}"] = Path(f"{stem}_class{k + 1:03d}.mrc")
    return out


def write_volumes(paths: dict[str, Path], refs: torch.Tensor, pixel_size_angst: float) -> None:
    """One MRC file per class volume ``(K, n, n, n)``."""
    for k in range(refs.shape[0]):
        write_mrc(paths[f"class{k + 1:03d}"], refs[k].detach().cpu().float().numpy(), pixel_size_angst)


def model_blocks_3d(model: MlModel, paths: dict[str, Path], rel, group_names: list[str],
                    group_counts: list[int], accuracy_deg: float) -> dict:
    """``model.star`` blocks of a 3D run (Class2D's with 3D dimensionality and volume names)."""
    blocks = model_blocks(model, {"classes": Path("unused")}, rel, False, group_names, group_counts)
    blocks["model_general"]["rlnReferenceDimensionality"] = 3
    classes = blocks["model_classes"]
    classes["rlnReferenceImage"] = [rel(paths[f"class{k + 1:03d}"]) for k in range(model.n_classes)]
    classes["rlnAccuracyRotations"] = accuracy_deg
    blocks["model_classes"] = classes.drop(columns=["rlnClassPriorOffsetX", "rlnClassPriorOffsetY"])
    return blocks


def data_table_3d(data: pd.DataFrame, particles: ParticleSet, angles_deg: torch.Tensor, pixel_size_angst: float,
                  image_names: pd.Series | None) -> pd.DataFrame:
    """Input rows plus RELION's refinement columns, Euler angles ``(N, 3)`` (rot, tilt, psi)."""
    out = data_table(data, particles, pixel_size_angst, image_names)
    ang = angles_deg.detach().cpu().double().numpy()
    out["rlnAngleRot"] = ang[:, 0]
    out["rlnAngleTilt"] = ang[:, 1]
    out["rlnAnglePsi"] = ang[:, 2]
    return out


def central_sections(volume: np.ndarray) -> np.ndarray:
    """The xy, xz and yz central sections of ``(n, n, n)`` side by side, each scaled to [0, 1]."""
    n = volume.shape[-1]
    c = n // 2
    tiles = [volume[c], volume[:, c, :], volume[:, :, c]]
    out = np.ones((n, 3 * n + 2), dtype=np.float32)
    for i, t in enumerate(tiles):
        lo, hi = float(t.min()), float(t.max())
        out[:, i * (n + 1): i * (n + 1) + n] = (t - lo) / (hi - lo) if hi > lo else 0.5
    return out


def write_sections_png(path: Path, refs: torch.Tensor, pdf: torch.Tensor, scale: int = 2) -> None:
    """PNG with one row per class: central xy, xz, yz sections (``scale`` x enlarged), labelled with the class size.

    Drawn with Pillow (a matplotlib dependency): milliseconds, where importing pyplot alone costs
    2 s of CPU, a few per cent of a whole initial model.
    """
    from PIL import Image, ImageDraw

    vols = refs.detach().cpu().float().numpy()
    label_px = 14
    tiles = [np.kron(central_sections(v), np.ones((scale, scale), dtype=np.float32)) for v in vols]
    height, width = tiles[0].shape
    image = Image.new("L", (width, len(tiles) * (height + label_px)), 255)
    draw = ImageDraw.Draw(image)
    for i, tile in enumerate(tiles):
        top = i * (height + label_px)
        draw.text((2, top + 1), f"class {i + 1}: {100 * float(pdf[i]):.1f}%  (xy | xz | yz)", fill=0)
        image.paste(Image.fromarray((255 * tile).clip(0, 255).astype(np.uint8)), (0, top + label_px))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def sampling_block(order: int, symmetry: str, psi_step_deg: float, offset_range_px: float, offset_step_px: float,
                   pixel_size_angst: float) -> dict:
    """``sampling_general`` of a 3D run."""
    return {"rlnIs3DSampling": 1, "rlnIs3DTranslationalSampling": 0, "rlnHealpixOrder": order,
            "rlnSymmetryGroup": symmetry, "rlnTiltAngleLimit": -91.0, "rlnPsiStep": psi_step_deg,
            "rlnOffsetRange": offset_range_px * pixel_size_angst, "rlnOffsetStep": offset_step_px * pixel_size_angst,
            "rlnHelicalOffsetStep": -1.0, "rlnSamplingPerturbInstance": 0.0, "rlnSamplingPerturbFactor": 0.0,
            "rlnPsiStepOriginal": psi_step_deg, "rlnOffsetRangeOriginal": offset_range_px * pixel_size_angst,
            "rlnOffsetStepOriginal": offset_step_px * pixel_size_angst, "rlnHealpixOrderOriginal": order}

"""Files of the class-ranker job, as RELION's ``relion_class_ranker`` writes them (§7 of the spec).

``particles.star`` (optics + every column of the selected classes' particles, input order),
``class_averages.star`` (every class: rlnReferenceImage, rlnClassScore, rlnPredictedClassScore,
rlnSelected, size, accuracies, resolution; best score first), ``rank_model.star``
(``data_model_classes`` with rlnClassScore), ``rank_data.star`` (the input data),
``rank_optimiser.star`` (the input optimiser naming those two), ``backup_selection.star``,
``features.star`` (``data_class_features``: every feature of every ranked class) and the
gallery ``rank_classes.png`` (all classes by score, the score on each, selected ones framed).
Everything is computed before the first file is written; each file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.io.atomic import atomic_path
from vitrify.io.star import portable_name, write_star, write_star_optics
from vitrify.ranker.inputs import Class2DJob
from vitrify.ranker.selection import JobScores

GALLERY = "rank_classes.png"


def class_table(job: Class2DJob, scores: np.ndarray, selected: np.ndarray, counts: np.ndarray,
                job_dir: Path) -> pd.DataFrame:
    """Every class with its score, selection and metadata, best score first."""
    classes = job.model_classes
    out = pd.DataFrame({
        "rlnReferenceImage": [_portable_reference(str(n), job, job_dir) for n in classes["rlnReferenceImage"]],
        "rlnClassScore": scores, "rlnPredictedClassScore": scores, "rlnSelected": selected.astype(int),
        "rlnClassDistribution": classes["rlnClassDistribution"].to_numpy(), "rlnClassNumber": job.class_numbers,
        "rlnNrOfParticles": counts})
    for label in ("rlnAccuracyRotations", "rlnAccuracyTranslationsAngst", "rlnEstimatedResolution"):
        if label in classes:
            out[label] = classes[label].to_numpy()
    order = np.argsort(-scores, kind="stable")
    return out.iloc[order].reset_index(drop=True)


def _portable_reference(name: str, job: Class2DJob, job_dir: Path) -> str:
    """``N@stack`` naming the stack so that it resolves from the ranker job's STAR files."""
    from vitrify.io.star import image_base_dirs

    index, _, stack = name.partition("@")
    for base in image_base_dirs(job.model_path):
        candidate = Path(stack) if Path(stack).is_absolute() else base / stack
        if candidate.is_file():
            return f"{index}@{portable_name(candidate, job_dir)}"
    return name


def features_table(job: Class2DJob, result: JobScores, selected: np.ndarray, job_dir: Path) -> pd.DataFrame:
    """``data_class_features``: one row per ranked class (model order), every feature."""
    rows = result.inputs.rows
    table = pd.DataFrame(result.inputs.features)
    names = [_portable_reference(str(job.model_classes["rlnReferenceImage"].iloc[r]), job, job_dir) for r in rows]
    head = pd.DataFrame({"rlnReferenceImage": names, "rlnClassScore": result.scores[rows],
                         "rlnIsSelected": selected[rows].astype(int), "rlnClassIndex": result.inputs.class_numbers,
                         "rlnClassDistribution": job.model_classes["rlnClassDistribution"].to_numpy()[rows]})
    return pd.concat([head, table], axis=1)


def selected_particles(job: Class2DJob, class_numbers: np.ndarray) -> pd.DataFrame:
    """Rows of data_particles in a selected class, input order, every column."""
    data = job.data.data
    keep = data["rlnClassNumber"].astype(int).isin(set(int(c) for c in class_numbers)).to_numpy()
    return data[keep].reset_index(drop=True)


def write_gallery(path: Path, images: np.ndarray, table: pd.DataFrame) -> None:
    """PNG of every class, best score first, score on each, selected ones framed in green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    k, n = len(table), images.shape[-1]
    cols = min(10, k)
    rows = -(-k // cols)
    fig = plt.figure(figsize=(1.3 * cols, 1.45 * rows))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    mosaic = np.ones((rows * (n + 2) + 2, cols * (n + 2) + 2), dtype=np.float32)
    for i, number in enumerate(table["rlnClassNumber"].to_numpy()):
        img = images[int(number) - 1]
        lo, hi = float(img.min()), float(img.max())
        r, q = divmod(i, cols)
        mosaic[2 + r * (n + 2): 2 + r * (n + 2) + n, 2 + q * (n + 2): 2 + q * (n + 2) + n] = (
            (img - lo) / (hi - lo) if hi > lo else 0.5)
    ax.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    for i, (score, sel, number) in enumerate(table[["rlnClassScore", "rlnSelected", "rlnClassNumber"]].to_numpy()):
        r, q = divmod(i, cols)
        x0, y0 = q * (n + 2) + 1.5, r * (n + 2) + 1.5
        if sel:
            ax.add_patch(Rectangle((x0, y0), n, n, fill=False, edgecolor="lime", linewidth=2.0))
        label = f"{int(number)}: {score:.2f}" if score > -1 else f"{int(number)}: n/a"
        ax.text(x0 + n / 2, y0 + 1, label, fontsize=7, ha="center", va="top", color="black",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def write_outputs(job_dir: Path, job: Class2DJob, result: JobScores, selected: np.ndarray) -> list[tuple[Path, str]]:
    """Write every output file; return the output nodes (path, RELION node type)."""
    counts = np.array([int((job.data.data["rlnClassNumber"].astype(int) == c).sum()) for c in job.class_numbers])
    classes = class_table(job, result.scores, selected, counts, job_dir)
    particles = selected_particles(job, job.class_numbers[selected])
    model = job.model_classes.copy()
    model.insert(1, "rlnClassScore", result.scores)
    optimiser = dict(job.optimiser)
    optimiser["rlnModelStarFile"] = portable_name(job_dir / "rank_model.star", job_dir)
    optimiser["rlnExperimentalDataStarFile"] = portable_name(job_dir / "rank_data.star", job_dir)
    features = features_table(job, result, selected, job_dir)
    write_star(job_dir / "features.star", {"class_features": features})
    write_star(job_dir / "rank_model.star", {"model_classes": model})
    write_star_optics(job_dir / "rank_data.star", job.data.optics, job.data.data, "particles")
    write_star(job_dir / "backup_selection.star", pd.DataFrame({"rlnSelected": selected.astype(int)}))
    write_gallery(job_dir / GALLERY, job.images, classes)
    write_star_optics(job_dir / "particles.star", job.data.optics, particles, "particles")
    write_star(job_dir / "class_averages.star", classes)
    write_star(job_dir / "rank_optimiser.star", {"optimiser_general": optimiser})
    return [(job_dir / "particles.star", "ParticlesData.star.relion"),
            (job_dir / "class_averages.star", "ImagesData.star.relion.classaverages"),
            (job_dir / "rank_optimiser.star", "ProcessData.star.relion.optimiser.autoselect")]

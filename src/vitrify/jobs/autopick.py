"""Job ``autopick``: particle picking → per-micrograph coordinate STAR files + ``autopick.star``.

Methods (dispatch table :data:`PICKERS`): ``log`` (Laplacian-of-Gaussian,
:mod:`vitrify.preprocess.picking`), ``template`` (normalised cross-correlation with 2D class
averages, :mod:`vitrify.preprocess.template_pick`; the references get each micrograph's CTF
when the input STAR file has one), ``topaz`` (the optional ``topaz-em`` package; the job
fails at once with the install command when it is absent). Each micrograph gets ``<job>/<mic path>_autopick.star``
(RELION's per-micrograph coordinate file: rlnCoordinateX/Y, rlnClassNumber,
rlnAutopickFigureOfMerit, rlnAnglePsi); ``autopick.star`` lists them
(data_coordinate_files). A few micrographs get a PNG with the picks drawn. Existing
coordinate files are kept on a re-run (only new micrographs are picked). Micrographs are picked
here one after another or as Dask tasks (``parallel``; :mod:`vitrify.jobs.scaleout`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vitrify.io.errors import InputError
from vitrify.jobs._preprocess_io import Skips, relative_output, write_output_nodes
from vitrify.jobs.options.autopick import METHODS, Options, job_star_from_options, options_from_job_star
from vitrify.preprocess.picking import Picks
from vitrify.preprocess.template_pick import TemplatePickOptions

if TYPE_CHECKING:
    import torch


def load_references(options: Options) -> tuple["torch.Tensor", float, TemplatePickOptions]:
    """Class averages ``(k, b, b)``, their pixel size and the template options to use."""
    import torch

    from vitrify.io.mrc import read_images, read_mrc
    from vitrify.io.star import read_star

    path = options.references
    if not Path(path).exists():
        raise InputError("reference file not found", path=path, field="fn_refs_autopick",
                         expected="2D class averages (.mrcs or class_averages.star)")
    if path.endswith(".star"):
        table = next((b for b in read_star(path).values()
                      if isinstance(b, pd.DataFrame) and "rlnReferenceImage" in b.columns), None)
        if table is None:
            raise InputError("no rlnReferenceImage column", path=path, expected="RELION class_averages.star")
        images = read_images(table["rlnReferenceImage"])
        _, header_pixel = read_mrc(str(table["rlnReferenceImage"].iloc[0]).split("@")[-1])
    else:
        images, header_pixel = read_mrc(path)
    images = images.reshape((-1,) + images.shape[-2:])
    pixel = options.reference_pixel_angst if options.reference_pixel_angst > 0 else header_pixel
    if pixel <= 0:
        raise InputError("reference pixel size unknown", path=path, field="angpix_ref",
                         expected="a pixel size in the MRC header or angpix_ref")
    from vitrify.preprocess.template_pick import resolve_diameter

    template = resolve_diameter(options.template or TemplatePickOptions(), images.shape, pixel)
    return torch.as_tensor(images), pixel, template


def _pick_log(image, row: pd.Series, options: Options, context: dict) -> Picks:
    from vitrify.preprocess.picking import pick_log

    return pick_log(image, float(row["rlnMicrographPixelSize"]), options.log)


def _micrograph_ctf(row: pd.Series):
    from vitrify.core.ctf import CtfParams

    needed = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle")
    if not all(label in row.index and pd.notna(row[label]) for label in needed):
        return None
    return CtfParams.from_relion(row.dropna(), pixel_size_angst=float(row["rlnMicrographPixelSize"]))


def _pick_template(image, row: pd.Series, options: Options, context: dict) -> Picks:
    from vitrify.preprocess.template_pick import pick_templates

    references, ref_pixel, template = context["references"]
    return pick_templates(image, float(row["rlnMicrographPixelSize"]), references.to(image.device), ref_pixel,
                          template, _micrograph_ctf(row))


def _pick_topaz(image, row: pd.Series, options: Options, context: dict) -> Picks:
    from vitrify.preprocess.topaz_pick import pick_topaz

    return pick_topaz(image, float(row["rlnMicrographPixelSize"]), options.topaz_diameter_angst,
                      options.topaz_model, options.topaz_threshold)


#: method name → picker(image (ny, nx) tensor, micrograph row, options, context) → Picks
PICKERS: dict[str, Callable[..., Picks]] = {"log": _pick_log, "template": _pick_template, "topaz": _pick_topaz}


def coordinates_table(picks: Picks) -> pd.DataFrame:
    """RELION's per-micrograph coordinate table for ``picks``."""
    n = len(picks)
    classes = picks.class_number if picks.class_number is not None else np.zeros(n, dtype=int)
    psi = picks.psi_deg if picks.psi_deg is not None else np.full(n, -999.0)
    return pd.DataFrame({"rlnCoordinateX": picks.x_px.astype(float), "rlnCoordinateY": picks.y_px.astype(float),
                         "rlnClassNumber": np.asarray(classes, dtype=int),
                         "rlnAutopickFigureOfMerit": picks.figure_of_merit.astype(float),
                         "rlnAnglePsi": np.asarray(psi, dtype=float)})


def _diameter_angst(options: Options, context: dict) -> float:
    if options.method == "template":
        return context["references"][2].diameter_angst
    return options.topaz_diameter_angst if options.method == "topaz" else options.log.diameter_max_angst


def _write_overlay(path: Path, image: np.ndarray, picks: Picks, radius_px: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from vitrify.io.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 6 * image.shape[0] / image.shape[1]), dpi=100)
    lo, hi = np.percentile(image, [1, 99])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
    for x, y in zip(picks.x_px, picks.y_px):
        ax.add_patch(Circle((x, y), radius_px, fill=False, color="lime", linewidth=0.8))
    ax.set_title(f"{len(picks)} picks", fontsize=8)
    ax.axis("off")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def _pick_one(row: pd.Series, options: Options, job_dir: Path, context: dict, png: bool) -> Path:
    import torch

    from vitrify.io.star import write_star
    from vitrify.jobs._preprocess_io import read_micrograph

    name = str(row["rlnMicrographName"])
    out = relative_output(job_dir, name, "_autopick.star")
    if out.exists() and (not png or out.with_suffix(".png").exists()):  # the STAR file is written last
        return out
    data, _ = read_micrograph(name)
    image = torch.as_tensor(np.asarray(data, dtype=np.float32)).to(context["device"])
    pixel = float(row["rlnMicrographPixelSize"])
    picks = PICKERS[options.method](image, row, options, context)
    out.parent.mkdir(parents=True, exist_ok=True)
    if png:
        radius = 0.5 * _diameter_angst(options, context) / pixel
        _write_overlay(out.with_suffix(".png"), np.asarray(data, dtype=np.float32), picks, radius)
    write_star(out, {"": coordinates_table(picks)})
    return out


def pick_task(item: tuple[pd.Series, bool], shared: dict) -> Path:
    """One micrograph and whether to draw its PNG (a :func:`vitrify.jobs.scaleout.map_items` task):
    the coordinate file written."""
    from vitrify.core.device import resolve_device

    row, png = item
    options = shared["options"]
    context = {"device": resolve_device(options.device), **shared["context"]}
    return _pick_one(row, options, Path(shared["job_dir"]), context, png)


def run(options: Options, job_dir: str | Path) -> Path:
    """Pick every micrograph; write the coordinate files and ``job_dir/autopick.star``."""
    from vitrify.io.star import read_star_optics, write_star
    from vitrify.jobs.scaleout import map_items

    job_dir = Path(job_dir)
    log = logging.getLogger(f"vitrify.job.{job_dir.resolve()}")
    context = {}
    if options.method == "topaz":
        from vitrify.preprocess.topaz_pick import require_topaz

        require_topaz()
    if options.method == "template":
        context["references"] = load_references(options)
    star = read_star_optics(options.input_star, "micrographs")
    skips = Skips(job_dir)
    mics, files = [], []
    items = [(star.merged.iloc[i], i < options.n_png) for i in range(len(star.merged))]
    shared = {"options": options, "job_dir": job_dir.as_posix(), "context": context}
    for outcome in map_items(pick_task, items, shared, options.parallel, job_dir, "Auto-picking", log):
        name = str(items[outcome.index][0]["rlnMicrographName"])
        if outcome.skipped:
            skips.add(name, outcome.skipped, log)
            continue
        mics.append(name)
        files.append(outcome.value.as_posix())
    skips.raise_if_all_skipped(len(star.merged), "micrographs")
    output = job_dir / "autopick.star"
    write_star(output, {"coordinate_files": pd.DataFrame({"rlnMicrographName": mics,
                                                          "rlnMicrographCoordinates": files})})
    skips.write()
    write_output_nodes(job_dir, [(output, "MicrographsCoords.star.relion.autopick")])
    log.info("%d micrographs picked, %d skipped", len(files), len(skips.items))
    return output


__all__ = ["METHODS", "Options", "PICKERS", "job_star_from_options", "load_references", "options_from_job_star",
           "pick_task", "run"]

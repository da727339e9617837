"""Job ``ctffind``: CTF estimation of every micrograph → ``micrographs_ctf.star``.

For each micrograph (the non-dose-weighted one when ``rlnMicrographNameNoDW`` is
present and ``use_noDW``) :func:`vitrify.preprocess.ctf_fit.fit_spectrum` runs; the
fit is kept in a small per-micrograph STAR file (so a re-run only fits new
micrographs, as RELION's "continue" does), a diagnostic image goes to
``<mic>.ctf`` (MRC; ``rlnCtfImage = <mic>.ctf:mrc``) and ``<mic>_ctf.png``. A
micrograph that cannot be read or fitted is skipped with a message; the job goes on.
Micrographs are fitted here one after another or as Dask tasks (``parallel``;
:mod:`vitrify.jobs.scaleout`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.core.ctf import CtfParams
from vitrify.jobs._preprocess_io import Skips, relative_output, write_output_nodes
from vitrify.jobs.options.ctffind import Options, job_star_from_options, options_from_job_star
from vitrify.preprocess.ctf_fit import CtfFit, CtfSearch

CTF_COLUMNS = ("rlnCtfImage", "rlnDefocusU", "rlnDefocusV", "rlnCtfAstigmatism", "rlnDefocusAngle",
               "rlnCtfFigureOfMerit", "rlnCtfMaxResolution")


def _fit_star(out: Path) -> Path:
    return out.with_name(out.stem + "_ctf.star")


def _load_fit(path: Path) -> CtfFit | None:
    from vitrify.io.star import read_star

    if not path.exists():
        return None
    row = read_star(path)["ctf"]
    return CtfFit(float(row["rlnDefocusU"]), float(row["rlnDefocusV"]), float(row["rlnDefocusAngle"]),
                  float(row["rlnPhaseShift"]), float(row["rlnCtfFigureOfMerit"]),
                  float(row["rlnCtfMaxResolution"]))


def _save_fit(path: Path, fit: CtfFit) -> None:
    from vitrify.io.star import write_star

    write_star(path, {"ctf": {"rlnDefocusU": fit.defocus_u_angst, "rlnDefocusV": fit.defocus_v_angst,
                              "rlnDefocusAngle": fit.defocus_angle_deg, "rlnPhaseShift": fit.phase_shift_deg,
                              "rlnCtfFigureOfMerit": fit.figure_of_merit,
                              "rlnCtfMaxResolution": fit.max_resolution_angst}}, float_format="%.6f")


def _write_diagnostics(out: Path, spectrum, fit: CtfFit, optics: CtfParams) -> None:
    """``<mic>.ctf`` (MRC) and ``<mic>_ctf.png`` (the picture under a line with the fitted values)."""
    from PIL import Image, ImageDraw

    from vitrify.io.atomic import atomic_path
    from vitrify.io.mrc import write_mrc
    from vitrify.preprocess.ctf_fit import diagnostic_image

    picture = diagnostic_image(spectrum, fit, optics)
    write_mrc(out, picture, optics.pixel_size_angst)
    pixels = np.flipud(np.rint(picture * 255).astype(np.uint8))  # origin at the bottom, as the MRC
    image = Image.new("L", (pixels.shape[1], pixels.shape[0] + 14), 255)
    image.paste(Image.fromarray(pixels), (0, 14))
    ImageDraw.Draw(image).text((2, 1), f"U {fit.defocus_u_angst:.0f} V {fit.defocus_v_angst:.0f} A "
                                       f"{fit.defocus_angle_deg:.0f} deg  FOM {fit.figure_of_merit:.2f}  "
                                       f"fit to {fit.max_resolution_angst:.1f} A", fill=0)
    with atomic_path(out.with_name(out.stem + "_ctf.png")) as tmp:
        image.save(tmp, format="PNG")


def _fit_one(row: pd.Series, options: Options, job_dir: Path, device) -> tuple[CtfFit, Path]:
    import torch

    from vitrify.jobs._preprocess_io import read_micrograph
    from vitrify.preprocess.ctf_fit import check_micrograph, fit_spectrum, measure_spectrum

    name = str(row["rlnMicrographName"])
    source = name
    if options.use_nodw and isinstance(row.get("rlnMicrographNameNoDW"), str):
        source = str(row["rlnMicrographNameNoDW"])
    out = relative_output(job_dir, name, ".ctf")
    cached = _load_fit(_fit_star(out))
    if cached is not None:
        return cached, out
    optics = CtfParams(pixel_size_angst=float(row["rlnMicrographPixelSize"]),
                       voltage_kv=float(row["rlnVoltage"]), cs_mm=float(row["rlnSphericalAberration"]),
                       amplitude_contrast=float(row["rlnAmplitudeContrast"]))
    data, _ = read_micrograph(source)
    image = torch.as_tensor(np.asarray(data, dtype=np.float32)).to(device)
    if image.ndim == 3:
        image = image.sum(0)
    search = options.search
    if min(image.shape) < search.tile_px:  # small micrographs: the largest even box that fits
        search = _replace_box(search, 2 * (min(image.shape) // 2))
    if options.use_ctffind:
        from vitrify.jobs._ctffind_external import run_ctffind

        fit = run_ctffind(options.ctffind_exe, source, out, optics, search)
        _save_fit(_fit_star(out), fit)
        return fit, out
    check_micrograph(image)
    spectrum = measure_spectrum(image, optics.pixel_size_angst, search.tile_px)
    fit = fit_spectrum(spectrum, optics, search)
    out.parent.mkdir(parents=True, exist_ok=True)
    if options.write_diagnostics:
        _write_diagnostics(out, spectrum, fit, optics)
    _save_fit(_fit_star(out), fit)
    return fit, out


def fit_task(row: pd.Series, shared: dict) -> tuple[CtfFit, Path]:
    """One micrograph (a :func:`vitrify.jobs.scaleout.map_items` task): its fit and ``.ctf`` path."""
    from vitrify.core.device import resolve_device

    options = shared["options"]
    return _fit_one(row, options, Path(shared["job_dir"]), resolve_device(options.device))


def _replace_box(search: CtfSearch, box: int) -> CtfSearch:
    from dataclasses import replace

    return replace(search, tile_px=box)


def _ctf_columns(fit: CtfFit, out: Path) -> dict:
    return {"rlnCtfImage": f"{out.as_posix()}:mrc", "rlnDefocusU": fit.defocus_u_angst,
            "rlnDefocusV": fit.defocus_v_angst, "rlnCtfAstigmatism": fit.astigmatism_angst,
            "rlnDefocusAngle": fit.defocus_angle_deg, "rlnCtfFigureOfMerit": fit.figure_of_merit,
            "rlnCtfMaxResolution": fit.max_resolution_angst}


def run(options: Options, job_dir: str | Path) -> Path:
    """Fit every micrograph; write ``job_dir/micrographs_ctf.star``; return its path."""
    from vitrify.io.star import read_star_optics, write_star_optics
    from vitrify.jobs.scaleout import map_items

    job_dir = Path(job_dir)
    log = logging.getLogger(f"vitrify.job.{job_dir.resolve()}")
    if options.use_ctffind:  # stop at once, before any micrograph, when CTFFIND4 is absent
        from vitrify.jobs._ctffind_external import find_ctffind

        options = replace(options, ctffind_exe=find_ctffind(options.ctffind_exe))
        log.info("running %s", options.ctffind_exe)
    star = read_star_optics(options.input_star, "micrographs")
    skips = Skips(job_dir)
    rows = []
    micrographs = [star.merged.iloc[i] for i in range(len(star.merged))]
    for outcome in map_items(fit_task, micrographs, {"options": options, "job_dir": job_dir.as_posix()},
                             options.parallel, job_dir, "CTF estimation", log):
        i = outcome.index
        if outcome.skipped:
            skips.add(str(micrographs[i]["rlnMicrographName"]), outcome.skipped, log)
            continue
        fit, out = outcome.value
        entry = star.data.iloc[i].to_dict()
        entry.update(_ctf_columns(fit, out))
        if options.search.do_phase_shift:
            entry["rlnPhaseShift"] = fit.phase_shift_deg
        rows.append(entry)
    columns = list(star.data.columns) + [c for c in CTF_COLUMNS if c not in star.data.columns]
    if options.search.do_phase_shift and "rlnPhaseShift" not in columns:
        columns.append("rlnPhaseShift")
    table = pd.DataFrame(rows, columns=columns)
    skips.raise_if_all_skipped(len(star.merged), "micrographs")
    output = job_dir / "micrographs_ctf.star"
    write_star_optics(output, star.optics, table, "micrographs")
    skips.write()
    write_output_nodes(job_dir, [(output, "MicrographsData.star.relion.ctf")])
    log.info("%d micrographs fitted, %d skipped", len(rows), len(skips.items))
    return output


__all__ = ["CTF_COLUMNS", "Options", "fit_task", "job_star_from_options", "options_from_job_star", "run"]

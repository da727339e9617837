"""Job ``extract``: particle stacks per micrograph + ``particles.star``.

Coordinates come from an ``autopick.star`` (per-micrograph coordinate files) or, for
re-extraction, from a particles STAR file with refined origins: the new centre is
``coordinate - round(origin / pixel)`` and the fractional remainder stays in
``rlnOriginX/YAngst`` (or is reset). Images are processed by
:func:`vitrify.preprocess.extraction.extract_particles` (window → rescale → normalise →
invert) and written to ``<job>/<mic path>.mrcs`` (float16 when asked). The optics
table gains rlnImagePixelSize = micrograph pixel × box / rescale and rlnImageSize.
Micrographs without particles are recorded and skipped; the job goes on. Micrographs are
extracted here one after another or as Dask tasks (``parallel``; :mod:`vitrify.jobs.scaleout`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.io.errors import InputError
from vitrify.jobs._preprocess_io import Skips, relative_output, write_output_nodes
from vitrify.jobs.options.extract import Options, job_star_from_options, options_from_job_star

#: micrograph columns copied to every particle
MIC_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnCtfBfactor", "rlnCtfScalefactor",
               "rlnPhaseShift", "rlnCtfMaxResolution", "rlnCtfFigureOfMerit")
PICK_COLUMNS = ("rlnClassNumber", "rlnAutopickFigureOfMerit", "rlnAnglePsi")


def _coordinates_from_autopick(path: str) -> dict[str, pd.DataFrame]:
    from vitrify.io.star import check_table, read_star

    table = read_star(path).get("coordinate_files")
    if not isinstance(table, pd.DataFrame) or "rlnMicrographCoordinates" not in table.columns:
        raise InputError("no coordinate file list", path=path, field="data_coordinate_files",
                         expected="rlnMicrographName and rlnMicrographCoordinates columns")
    coords = {}
    for mic, file in zip(table["rlnMicrographName"], table["rlnMicrographCoordinates"]):
        blocks = read_star(file)
        name, frame = next(((n, b) for n, b in blocks.items() if isinstance(b, pd.DataFrame)), ("", None))
        if frame is None:  # no table: no particles on this micrograph (skipped later)
            frame = pd.DataFrame()
        else:
            check_table(frame, file, name, ("rlnCoordinateX", "rlnCoordinateY"))
        coords[str(mic)] = frame
    return coords


def _coordinates_from_particles(path: str, reset_offsets: bool) -> dict[str, pd.DataFrame]:
    """Re-extraction: centre = coordinate - round(origin/pixel), remainder kept in the origins."""
    from vitrify.io.star import read_star_optics

    star = read_star_optics(path, "particles")
    table = star.merged.copy()
    pixel = table["rlnMicrographPixelSize"] if "rlnMicrographPixelSize" in table else table["rlnImagePixelSize"]
    for axis in ("X", "Y"):
        origin = table.get(f"rlnOrigin{axis}Angst", pd.Series(0.0, index=table.index)).astype(float)
        offset = origin / pixel.astype(float)
        table[f"rlnCoordinate{axis}"] = table[f"rlnCoordinate{axis}"].astype(float) - offset.round()
        table[f"rlnOrigin{axis}Angst"] = 0.0 if reset_offsets else (offset - offset.round()) * pixel
    keep = [c for c in star.data.columns if c not in ("rlnImageName", "rlnMicrographName", "rlnOpticsGroup")]
    keep = [c for c in keep if c not in MIC_COLUMNS]
    return {mic: group[keep].reset_index(drop=True) for mic, group in table.groupby("rlnMicrographName")}


def _extract_one(mic_row: pd.Series, coords: pd.DataFrame, options: Options, job_dir: Path, device,
                 ) -> pd.DataFrame:
    import torch

    from vitrify.io.mrc import write_mrc
    from vitrify.jobs._preprocess_io import read_micrograph
    from vitrify.preprocess.extraction import extract_particles

    name = str(mic_row["rlnMicrographName"])
    if options.min_fom is not None and "rlnAutopickFigureOfMerit" in coords:
        coords = coords[coords["rlnAutopickFigureOfMerit"].astype(float) >= options.min_fom]
    if len(coords) == 0:
        raise InputError("no particles", path=name)
    data, _ = read_micrograph(name)
    image = torch.as_tensor(np.asarray(data, dtype=np.float32)).to(device)
    x = coords["rlnCoordinateX"].to_numpy(float)
    y = coords["rlnCoordinateY"].to_numpy(float)
    images, kept = extract_particles(image, x, y, options.extract)
    if len(kept) == 0:
        raise InputError(f"all {len(coords)} particles lie too close to the edge", path=name)
    out = relative_output(job_dir, name, ".mrcs")
    pixel = float(mic_row["rlnMicrographPixelSize"]) * options.extract.box_px / options.extract.output_px
    write_mrc(out, images.cpu().numpy(), pixel, float16=options.float16)
    table = coords.iloc[kept].reset_index(drop=True).copy()
    table["rlnImageName"] = [f"{i + 1:06d}@{out.as_posix()}" for i in range(len(kept))]
    table["rlnMicrographName"] = name
    table["rlnOpticsGroup"] = int(mic_row["rlnOpticsGroup"])
    for label in MIC_COLUMNS:
        if label in mic_row.index and pd.notna(mic_row[label]):
            table[label] = mic_row[label]
    return table


def extract_task(item: tuple[pd.Series, pd.DataFrame], shared: dict) -> pd.DataFrame:
    """One micrograph and its coordinates (a :func:`vitrify.jobs.scaleout.map_items` task): its
    particles table."""
    from vitrify.core.device import resolve_device

    row, coords = item
    options = shared["options"]
    return _extract_one(row, coords, options, Path(shared["job_dir"]), resolve_device(options.device))


def _particle_optics(optics: pd.DataFrame, options: Options) -> pd.DataFrame:
    optics = optics.copy()
    ratio = options.extract.box_px / options.extract.output_px
    optics["rlnImagePixelSize"] = optics["rlnMicrographPixelSize"].astype(float) * ratio
    optics["rlnImageSize"] = options.extract.output_px
    optics["rlnImageDimensionality"] = 2
    optics["rlnCtfDataAreCtfPremultiplied"] = 0
    return optics


def run(options: Options, job_dir: str | Path) -> Path:
    """Extract particles of every micrograph; write ``job_dir/particles.star``."""
    from vitrify.io.star import read_star_optics, write_star_optics
    from vitrify.jobs.scaleout import map_items

    job_dir = Path(job_dir)
    log = logging.getLogger(f"vitrify.job.{job_dir.resolve()}")
    star = read_star_optics(options.input_star, "micrographs")
    coords = (_coordinates_from_particles(options.reextract_star, options.reset_offsets)
              if options.reextract_star else _coordinates_from_autopick(options.coords_star))
    skips = Skips(job_dir)
    tables = []
    rows = [star.merged.iloc[i] for i in range(len(star.merged))]
    items = [(row, coords.get(str(row["rlnMicrographName"]), pd.DataFrame())) for row in rows]
    for outcome in map_items(extract_task, items, {"options": options, "job_dir": job_dir.as_posix()},
                             options.parallel, job_dir, "Extracting", log):
        if outcome.skipped:
            skips.add(str(rows[outcome.index]["rlnMicrographName"]), outcome.skipped, log)
        else:
            tables.append(outcome.value)
    particles = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=["rlnCoordinateX", "rlnCoordinateY", "rlnImageName", "rlnMicrographName", "rlnOpticsGroup"])
    skips.raise_if_all_skipped(len(star.merged), "micrographs")
    output = job_dir / "particles.star"
    write_star_optics(output, _particle_optics(star.optics, options), particles, "particles")
    skips.write()
    label = "ParticlesData.star.relion.reextract" if options.reextract_star else "ParticlesData.star.relion"
    write_output_nodes(job_dir, [(output, label)])
    log.info("%d particles from %d micrographs, %d micrographs skipped", len(particles), len(tables),
             len(skips.items))
    return output


__all__ = ["MIC_COLUMNS", "Options", "PICK_COLUMNS", "extract_task", "job_star_from_options", "options_from_job_star",
           "run"]

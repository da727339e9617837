"""Job ``import``: movies or micrographs by glob pattern → ``movies.star`` / ``micrographs.star``.

The optics table carries the group name, pixel size, voltage, Cs, amplitude contrast,
optional MTF file (a validated RELION MTF STAR file, or the name of a real detector curve
shipped by the optional ``ttsim3d`` package, copied into the job; :mod:`._mtf`) and beam
tilt. In on-the-fly mode (``only_new``), files already in the output STAR file are kept
and only new ones are added; files modified less than ``stable_seconds`` ago are taken to
be still being written and left for the next run.
"""

from __future__ import annotations

import glob
import logging
import time
from pathlib import Path

import pandas as pd

from vitrify.io.errors import InputError
from vitrify.jobs._preprocess_io import write_output_nodes
from vitrify.jobs.options.import_ import Options, job_star_from_options, options_from_job_star

MOVIE_SUFFIXES = (".mrc", ".mrcs", ".tif", ".tiff", ".eer")
MICROGRAPH_SUFFIXES = (".mrc",)


def _optics(options: Options, mtf_path: str) -> pd.DataFrame:
    optics = {"rlnOpticsGroupName": [options.optics_group_name], "rlnOpticsGroup": [1]}
    if mtf_path:
        optics["rlnMtfFileName"] = [mtf_path]
    optics["rlnMicrographOriginalPixelSize"] = [options.pixel_size_angst]
    optics["rlnVoltage"] = [options.voltage_kv]
    optics["rlnSphericalAberration"] = [options.cs_mm]
    optics["rlnAmplitudeContrast"] = [options.amplitude_contrast]
    if not options.movies:
        optics["rlnMicrographPixelSize"] = [options.pixel_size_angst]
    if options.beamtilt_x_mrad or options.beamtilt_y_mrad:
        optics["rlnBeamTiltX"] = [options.beamtilt_x_mrad]
        optics["rlnBeamTiltY"] = [options.beamtilt_y_mrad]
    return pd.DataFrame(optics)


def find_files(options: Options, known: set[str], now: float | None = None) -> tuple[list[str], list[str]]:
    """Files matching the pattern that are new and complete, and those still being written."""
    now = time.time() if now is None else now
    suffixes = MOVIE_SUFFIXES if options.movies else MICROGRAPH_SUFFIXES
    fresh, busy = [], []
    for name in sorted(glob.glob(options.pattern)):
        if name in known or not name.lower().endswith(suffixes):
            continue
        if now - Path(name).stat().st_mtime < options.stable_seconds:
            busy.append(name)
        else:
            fresh.append(name)
    return fresh, busy


def run(options: Options, job_dir: str | Path) -> Path:
    """Import the files; write ``movies.star`` or ``micrographs.star`` in ``job_dir``; return it."""
    from vitrify.io.star import read_star_optics, write_star_optics
    from vitrify.jobs._mtf import resolve_mtf

    job_dir = Path(job_dir)
    log = logging.getLogger(f"vitrify.job.{job_dir.resolve()}")
    mtf_path = resolve_mtf(options.mtf_file, job_dir) if options.mtf_file else ""
    block, label = ("movies", "rlnMicrographMovieName") if options.movies else ("micrographs", "rlnMicrographName")
    output = job_dir / f"{block}.star"
    known: list[str] = []
    if options.only_new and output.exists():
        known = [str(n) for n in read_star_optics(output, block).data[label]]
    fresh, busy = find_files(options, set(known))
    if busy:
        log.info("%d file(s) still being written, left for the next run", len(busy))
    names = known + fresh
    if not names:
        suffixes = ", ".join(MOVIE_SUFFIXES if options.movies else MICROGRAPH_SUFFIXES)
        raise InputError("no files match the pattern", field="fn_in_raw",
                         expected=f"files such as {options.pattern} ({suffixes})")
    table = pd.DataFrame({label: names, "rlnOpticsGroup": [1] * len(names)})
    write_star_optics(output, _optics(options, mtf_path), table, block)
    node = "MicrographMoviesData.star.relion" if options.movies else "MicrographsData.star.relion"
    write_output_nodes(job_dir, [(output, node)])
    log.info("imported %d new file(s), %d in total", len(fresh), len(names))
    return output


__all__ = ["Options", "find_files", "job_star_from_options", "options_from_job_star", "run"]

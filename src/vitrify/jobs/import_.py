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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vitrify.io.errors import InputError
from vitrify.jobs._preprocess_io import flag, number, text, write_output_nodes

MOVIE_SUFFIXES = (".mrc", ".mrcs", ".tif", ".tiff", ".eer")
MICROGRAPH_SUFFIXES = (".mrc",)


@dataclass(frozen=True)
class Options:
    """Import job (RELION job.star names in brackets)."""

    pattern: str                                  # [fn_in_raw] e.g. "Movies/*.tiff"
    movies: bool = True                           # [is_multiframe]
    pixel_size_angst: float = 1.0                 # [angpix]
    voltage_kv: float = 300.0                     # [kV]
    cs_mm: float = 2.7                            # [Cs]
    amplitude_contrast: float = 0.1               # [Q0]
    optics_group_name: str = "opticsGroup1"       # [optics_group_name]
    mtf_file: str = ""                            # [fn_mtf]
    beamtilt_x_mrad: float = 0.0                  # [beamtilt_x]
    beamtilt_y_mrad: float = 0.0                  # [beamtilt_y]
    only_new: bool = False                        # on-the-fly: keep earlier imports, add new files
    stable_seconds: float = 0.0                   # skip files modified more recently than this

    def __post_init__(self) -> None:
        if not self.pattern:
            raise InputError("no file pattern", field="fn_in_raw", expected="a glob such as Movies/*.tiff")
        from vitrify.io.star import check_plausible

        for label, value, name in (("rlnMicrographOriginalPixelSize", self.pixel_size_angst, "angpix"),
                                   ("rlnVoltage", self.voltage_kv, "kV"), ("rlnSphericalAberration", self.cs_mm, "Cs")):
            check_plausible(label, value, field=name)
        if not 0 <= self.amplitude_contrast < 1:
            raise InputError(f"amplitude contrast {self.amplitude_contrast}", field="Q0",
                             expected="a fraction in [0, 1)")
        if not self.optics_group_name.replace("-", "").replace("_", "").isalnum():
            raise InputError(f"optics group name {self.optics_group_name!r}", field="optics_group_name",
                             expected="letters, digits and '-' only")


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION Import job.star values."""
    return Options(pattern=text(values, "fn_in_raw"), movies=flag(values, "is_multiframe", True),
                   pixel_size_angst=number(values, "angpix", 1.0), voltage_kv=number(values, "kV", 300.0),
                   cs_mm=number(values, "Cs", 2.7), amplitude_contrast=number(values, "Q0", 0.1),
                   optics_group_name=text(values, "optics_group_name", "opticsGroup1"),
                   mtf_file=text(values, "fn_mtf"), beamtilt_x_mrad=number(values, "beamtilt_x", 0.0),
                   beamtilt_y_mrad=number(values, "beamtilt_y", 0.0))


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
        raise InputError("no files match the pattern", field="fn_in_raw",
                         expected=f"files such as {options.pattern} ({', '.join(MOVIE_SUFFIXES if options.movies else MICROGRAPH_SUFFIXES)})")
    table = pd.DataFrame({label: names, "rlnOpticsGroup": [1] * len(names)})
    write_star_optics(output, _optics(options, mtf_path), table, block)
    node = "MicrographMoviesData.star.relion" if options.movies else "MicrographsData.star.relion"
    write_output_nodes(job_dir, [(output, node)])
    log.info("imported %d new file(s), %d in total", len(fresh), len(names))
    return output


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION Import job.star values for ``options`` (inverse of :func:`options_from_job_star`;
    on-the-fly settings as ``vitrify_*`` rows, see :mod:`vitrify.jobs.jobstar_values`)."""
    from vitrify.jobs.jobstar_values import number_text as num, with_extras, yes_no

    values = {"do_raw": "Yes", "do_other": "No", "fn_in_raw": options.pattern,
              "is_multiframe": yes_no(options.movies), "angpix": num(options.pixel_size_angst),
              "kV": num(options.voltage_kv), "Cs": num(options.cs_mm), "Q0": num(options.amplitude_contrast),
              "optics_group_name": options.optics_group_name, "fn_mtf": options.mtf_file,
              "beamtilt_x": num(options.beamtilt_x_mrad), "beamtilt_y": num(options.beamtilt_y_mrad)}
    return with_extras(options, values, options_from_job_star)

"""Job ``select``: keep micrographs or particles whose column value lies in a range.

Drives the proc scheme's ``select_mics`` (``select_label rlnCtfMaxResolution``,
``select_maxval 6``): rows with ``min <= value <= max`` are kept; the optics table is
copied. Other RELION Select modes dispatch through :data:`MODES`; automatic 2D class
selection (``do_class_ranker``) belongs to the class-ranker job and is refused here with
a clear message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from vitrify.io.errors import InputError
from vitrify.jobs._preprocess_io import write_output_nodes
from vitrify.jobs.options.select import MODES, Options, job_star_from_options, options_from_job_star


def _data_block(path: str) -> str:
    from vitrify.io.star import read_star

    blocks = read_star(path)
    for name in ("particles", "micrographs", "movies"):
        if name in blocks:
            return name
    raise InputError("no particles, micrographs or movies table", path=path,
                     expected="a RELION data_particles / data_micrographs block")


def _select_values(options: Options, job_dir: Path) -> Path:
    from vitrify.io.star import read_star_optics, write_star_optics

    block = _data_block(options.input_star)
    star = read_star_optics(options.input_star, block)
    if options.label not in star.merged.columns:
        raise InputError(f"no column {options.label}", path=options.input_star, field=f"data_{block}",
                         expected="the label to select on")
    values = pd.to_numeric(star.merged[options.label], errors="coerce")
    keep = (values >= options.min_value) & (values <= options.max_value)
    output = job_dir / f"{block}.star"
    write_star_optics(output, star.optics, star.data[keep.to_numpy()].reset_index(drop=True), block)
    node = "ParticlesData.star.relion" if block == "particles" else "MicrographsData.star.relion"
    write_output_nodes(job_dir, [(output, node)])
    logging.getLogger(f"vitrify.job.{job_dir.resolve()}").info(
        "kept %d of %d rows with %g <= %s <= %g", int(keep.sum()), len(keep), options.min_value,
        options.label, options.max_value)
    return output


def _select_class_ranker(options: Options, job_dir: Path) -> Path:
    raise InputError("automatic 2D class selection is done by the class-ranker job", field="do_class_ranker",
                     expected="relion.select.class2dauto (vitrify's class-ranker job)")


#: mode → selector(options, job_dir) → output STAR path
SELECTORS: dict[str, Callable[[Options, Path], Path]] = {
    "values": _select_values, "class_ranker": _select_class_ranker}


def run(options: Options, job_dir: str | Path) -> Path:
    """Select rows; write ``job_dir/micrographs.star`` or ``particles.star``; return its path."""
    return SELECTORS[options.mode](options, Path(job_dir))


__all__ = ["MODES", "Options", "SELECTORS", "job_star_from_options", "options_from_job_star", "run"]

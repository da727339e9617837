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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vitrify.io.errors import InputError
from vitrify.jobs._preprocess_io import flag, number, text, write_output_nodes

MODES = ("values", "class_ranker")


@dataclass(frozen=True)
class Options:
    """Selection job (RELION job.star names in brackets)."""

    input_star: str                               # [fn_mic] or [fn_data]
    mode: str = "values"                          # [do_select_values] / [do_class_ranker]
    label: str = "rlnCtfMaxResolution"            # [select_label]
    min_value: float = -9999.0                    # [select_minval]
    max_value: float = 9999.0                     # [select_maxval]

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown selection mode {self.mode!r}", field="mode",
                             expected=" | ".join(MODES))
        if not self.input_star:
            raise InputError("no input STAR file", field="fn_mic/fn_data",
                             expected="a micrographs.star or particles.star")
        if self.min_value > self.max_value:
            raise InputError("empty value range", field="select_minval/select_maxval",
                             expected="min <= max")


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION Select job.star values (``fn_mic``/``fn_data``, ``do_select_values``,
    ``select_label``, ``select_minval``, ``select_maxval``, ``do_class_ranker``/``fn_model``)."""
    mode = "class_ranker" if flag(values, "do_class_ranker", False) else "values"
    source = text(values, "fn_mic") or text(values, "fn_data")
    if mode == "class_ranker":
        source = text(values, "fn_model") or source
    return Options(input_star=source, mode=mode, label=text(values, "select_label", "rlnCtfMaxResolution"),
                   min_value=number(values, "select_minval", -9999.0),
                   max_value=number(values, "select_maxval", 9999.0))


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


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION Select job.star values for ``options`` (inverse of :func:`options_from_job_star`).

    The input goes to ``fn_data`` when it holds particles (by its data block, or by its name
    while the file does not exist yet), else to ``fn_mic``; class ranking names ``fn_model``.
    """
    from vitrify.jobs.jobstar_values import number_text as num, with_extras, yes_no

    ranker = options.mode == "class_ranker"
    values = {"do_select_values": yes_no(not ranker), "do_class_ranker": yes_no(ranker),
              "select_label": options.label, "select_minval": num(options.min_value),
              "select_maxval": num(options.max_value), "fn_mic": "", "fn_data": "", "fn_model": ""}
    if ranker:
        values["fn_model"] = options.input_star
    else:
        values["fn_data" if _holds_particles(options.input_star) else "fn_mic"] = options.input_star
    return with_extras(options, values, options_from_job_star)


def _holds_particles(path: str) -> bool:
    try:
        if Path(path).is_file():
            return _data_block(path) == "particles"
    except (InputError, OSError, ValueError):
        pass
    return "particles" in Path(path).name

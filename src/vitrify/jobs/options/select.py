"""Options of the ``select`` job (:mod:`vitrify.jobs.select`); RELION ``relion.select``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import setting
from vitrify.jobs.jobstar_values import flag, text, yes_no

MODES = ("values", "class_ranker")


def _read_mode(values) -> str:
    return "class_ranker" if flag(values, "do_class_ranker", False) else "values"


def _write_mode(mode: str, _owner) -> dict[str, str]:
    return {"do_select_values": yes_no(mode != "class_ranker"), "do_class_ranker": yes_no(mode == "class_ranker")}


def _read_input(values) -> str:
    source = text(values, "fn_mic") or text(values, "fn_data")
    return (text(values, "fn_model") or source) if _read_mode(values) == "class_ranker" else source


def _write_input(path: str, options) -> dict[str, str]:
    """The input goes to ``fn_data`` when it holds particles (by its data block, or by its name
    while the file does not exist yet), else to ``fn_mic``; class ranking names ``fn_model``."""
    values = {"fn_mic": "", "fn_data": "", "fn_model": ""}
    if options.mode == "class_ranker":
        values["fn_model"] = path
    else:
        values["fn_data" if _holds_particles(path) else "fn_mic"] = path
    return values


def _holds_particles(path: str) -> bool:
    try:
        if Path(path).is_file():
            from vitrify.io.star import read_star

            blocks = read_star(path)
            if any(name in blocks for name in ("particles", "micrographs", "movies")):
                return "particles" in blocks
    except (InputError, OSError, ValueError):
        pass
    return "particles" in Path(path).name


@dataclass(frozen=True)
class Options:
    """Selection job (RELION job.star names on the fields)."""

    input_star: str = setting(help="micrographs.star or particles.star.", flag="--i", required=True,
                              read=_read_input, write=_write_input)
    mode: str = setting("values", help="values | class_ranker (automatic 2D class selection: the class-ranker job).",
                        flag="--mode", read=_read_mode, write=_write_mode)
    label: str = setting("rlnCtfMaxResolution", help="Column to select on.", flag="--label", star="select_label")
    min_value: float = setting(-9999.0, help="Keep rows with value >= this.", flag="--min", star="select_minval")
    max_value: float = setting(9999.0, help="Keep rows with value <= this.", flag="--max", star="select_maxval")

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
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION Select job.star values for ``options`` (inverse of :func:`options_from_job_star`)."""
    return fields.job_star_from_options(options)

"""Options of the ``extract`` job (:mod:`vitrify.jobs.extract`); RELION ``relion.extract``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import NEGATED, Convert, Group, Setting, group, setting
from vitrify.jobs.options._parallel import PARALLEL
from vitrify.jobs.jobstar_values import flag, number, number_text, text, whole_number, yes_no

if TYPE_CHECKING:
    from vitrify.jobs.scaleout import ParallelOptions
    from vitrify.preprocess.extraction import ExtractOptions


def _read_rescale(values) -> int | None:
    if not flag(values, "do_rescale", False):
        return None
    return whole_number(values, "rescale", whole_number(values, "extract_size", 128))


def _write_rescale(rescale: int | None, extract) -> dict[str, str]:
    return {"do_rescale": yes_no(rescale is not None),
            "rescale": number_text(rescale if rescale is not None else extract.box_px)}


def _read_bg_radius(values) -> float | None:
    diameter = number(values, "bg_diameter", -1.0)
    return diameter / 2 if diameter > 0 else None


def _write_bg_radius(radius: float | None, _owner) -> dict[str, str]:
    return {"bg_diameter": number_text(2 * radius if radius is not None else -1.0)}


def _read_min_fom(values) -> float | None:
    return number(values, "minimum_pick_fom", -999.0) if flag(values, "do_fom_threshold", False) else None


def _write_min_fom(min_fom: float | None, _owner) -> dict[str, str]:
    return {"do_fom_threshold": yes_no(min_fom is not None),
            "minimum_pick_fom": number_text(min_fom if min_fom is not None else -999.0)}


def _read_reextract(values) -> str:
    return text(values, "fndata_reextract") if flag(values, "do_reextract", False) else ""


def _write_reextract(star: str, _owner) -> dict[str, str]:
    return {"do_reextract": yes_no(bool(star)), "fndata_reextract": star}


#: CLI ``--bg-diameter`` (output px, -1: RELION's default) ↔ ``bg_radius_px`` (None: RELION's default)
_BG_DIAMETER = Convert(lambda d: d / 2 if d > 0 else None, lambda r: 2 * r if r is not None else -1.0)

EXTRACT = Group(
    help="Box, rescale, normalisation, inversion, dust removal (vitrify.preprocess.extraction.ExtractOptions).",
    cls="vitrify.preprocess.extraction:ExtractOptions",
    members={
        "box_px": Setting("Box size in micrograph pixels (even).", flag="--box", required=True,
                          star="extract_size", default=128),
        "rescale_px": Setting("Rescale to this box (px, even; 0 = no).", flag="--rescale", default=None,
                              cli=Convert(lambda b: b or None, lambda b: b or 0), read=_read_rescale,
                              write=_write_rescale),
        "normalise": Setting("Do not normalise.", flag="--no-norm", cli=NEGATED, star="do_norm", default=True),
        "invert_contrast": Setting("Keep the micrograph contrast.", flag="--no-invert", cli=NEGATED,
                                   star="do_invert", default=True),
        "bg_radius_px": Setting("Background circle (output px; -1 = RELION default).", flag="--bg-diameter",
                                default=None, cli=_BG_DIAMETER, read=_read_bg_radius, write=_write_bg_radius),
        "white_dust_sigma": Setting("σ for white dust removal (-1 off).", flag="--white-dust", star="white_dust",
                                    default=-1.0),
        "black_dust_sigma": Setting("σ for black dust removal (-1 off).", flag="--black-dust", star="black_dust",
                                    default=-1.0),
    })


@dataclass(frozen=True)
class Options:
    """Extraction job (RELION job.star names on the fields)."""

    input_star: str = setting(help="micrographs(_ctf).star.", flag="--i", required=True, star="star_mics")
    coords_star: str = setting("", help="autopick.star listing coordinate files.", flag="--coords",
                               required="unless --reextract", star="coords_suffix")
    extract: ExtractOptions = group(EXTRACT)
    float16: bool = setting(False, help="Write stacks as MRC mode 12.", flag="--float16", star="do_float16")
    min_fom: float | None = setting(None, help="Drop picks with a lower figure of merit.", flag="--min-fom",
                                    cli_type=float, read=_read_min_fom, write=_write_min_fom)
    reextract_star: str = setting("", help="particles.star with refined origins.", flag="--reextract",
                                  required="unless --coords", read=_read_reextract, write=_write_reextract)
    reset_offsets: bool = setting(False, help="Re-extraction: zero origins.", flag="--reset-offsets",
                                  star="do_reset_offsets")
    device: str = setting("auto", help="auto | cpu | cuda.", flag="--device")
    parallel: ParallelOptions = group(PARALLEL)

    def __post_init__(self) -> None:
        if not self.input_star:
            raise InputError("no input micrographs STAR file", field="star_mics",
                             expected="a micrographs.star path")
        if not self.coords_star and not self.reextract_star:
            raise InputError("no coordinates given", field="coords_suffix",
                             expected="an autopick.star (or a particles.star to re-extract)")


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION Extract job.star values (names on the fields)."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION Extract job.star values for ``options`` (settings RELION lacks as ``vitrify_*`` rows)."""
    return fields.job_star_from_options(options)

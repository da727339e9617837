"""Options of the ``postprocess`` job (:mod:`vitrify.jobs.postprocess`); RELION ``relion.postprocess``."""

from __future__ import annotations

from dataclasses import dataclass

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import setting
from vitrify.jobs.jobstar_values import flag, number, number_text, yes_no


def _read_bfactor(values) -> float:
    return number(values, "adhoc_bfac", -1000.0) if flag(values, "do_adhoc_bfac", False) else 0.0


def _write_bfactor(bfactor: float, _owner) -> dict[str, str]:
    return {"do_auto_bfac": yes_no(bfactor == 0), "do_adhoc_bfac": yes_no(bfactor != 0),
            "adhoc_bfac": number_text(bfactor if bfactor != 0 else -1000.0)}


@dataclass(frozen=True)
class Options:
    """Post-processing (RELION job.star names on the fields; relion_postprocess's options)."""

    half1_map: str = setting(help="First unfiltered half-map; the second is found by replacing 'half1' "
                             "with 'half2' in its name.", flag="--i", required=True, star="fn_in")
    mask: str = setting(help="Solvent mask (values in [0, 1], same box).", flag="--mask", required=True,
                        star="fn_mask")
    half2_map: str = setting("", help="Second half-map (default: the name of --i with half1 -> half2).",
                             flag="--i2")
    pixel_size_angst: float = setting(-1.0, help="Pixel size (-1: from the half-map header).", unit="Å",
                                      flag="--angpix", star="angpix")
    adhoc_bfactor_angst2: float = setting(0.0, help="Sharpen with this B-factor (0: estimate it from a "
                                          "Guinier fit).", unit="Å²", flag="--adhoc-bfac",
                                          read=_read_bfactor, write=_write_bfactor)
    autob_lowres_angst: float = setting(10.0, help="Lowest resolution of the Guinier fit.", unit="Å",
                                        flag="--autob-lowres", star="autob_lowres")
    lowpass_angst: float = setting(0.0, help="Low-pass the sharpened map here (0: at the FSC 0.143 "
                                   "resolution).", unit="Å", flag="--low-pass", star="low_pass")
    mtf_file: str = setting("", help="Detector MTF STAR file to divide the map by (optional).", flag="--mtf",
                            star="fn_mtf")

    def __post_init__(self) -> None:
        if not self.half1_map:
            raise InputError("no half-map", field="fn_in", expected="run_half1_class001_unfil.mrc")
        if not self.mask:
            raise InputError("no mask", field="fn_mask", expected="a mask from mask-create")
        if self.autob_lowres_angst <= 0 or self.lowpass_angst < 0:
            raise InputError("resolutions must be positive", field="autob_lowres/low_pass", expected="Å > 0")


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION PostProcess job.star values."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION PostProcess job.star values for ``options``."""
    return fields.job_star_from_options(options)

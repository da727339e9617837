"""Options of the ``ctffind`` job (:mod:`vitrify.jobs.ctffind`); RELION ``relion.ctffind``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import NEGATED, Group, Setting, group, setting
from vitrify.jobs.options._parallel import PARALLEL
from vitrify.jobs.jobstar_values import number, number_text

if TYPE_CHECKING:
    from vitrify.jobs.scaleout import ParallelOptions
    from vitrify.preprocess.ctf_fit import CtfSearch


def _read_astigmatism(values) -> float:
    """RELION's ``dast`` (expected astigmatism, Å) → our search range: 10 × dast, at least 3000 Å."""
    return max(3000.0, 10 * number(values, "dast", 100.0))


def _write_astigmatism(value: float, _owner) -> dict[str, str]:
    return {"dast": number_text(value / 10 if value > 3000 else 100.0)}


SEARCH = Group(
    help="What to search (vitrify.preprocess.ctf_fit.CtfSearch).",
    cls="vitrify.preprocess.ctf_fit:CtfSearch",
    members={
        "tile_px": Setting("FFT box for the power spectrum.", unit="px", flag="--box", star="box", default=512),
        "resolution_min_angst": Setting("Lowest resolution fitted.", unit="Å", flag="--resmin", star="resmin",
                                        default=30.0),
        "resolution_max_angst": Setting("Highest resolution fitted.", unit="Å", flag="--resmax", star="resmax",
                                        default=5.0),
        "defocus_min_angst": Setting("Smallest defocus searched.", unit="Å", flag="--dfmin", star="dfmin",
                                     default=5000.0),
        "defocus_max_angst": Setting("Largest defocus searched.", unit="Å", flag="--dfmax", star="dfmax",
                                     default=50000.0),
        "defocus_step_angst": Setting("Defocus step of the search.", unit="Å", flag="--dfstep", star="dfstep",
                                      default=500.0),
        "astigmatism_max_angst": Setting("Largest astigmatism |U - V| searched.", unit="Å",
                                         flag="--astigmatism-max", default=3000.0,
                                         read=_read_astigmatism, write=_write_astigmatism),
        "do_phase_shift": Setting("Also fit a phase-plate shift.", flag="--phase-shift", star="do_phaseshift",
                                  default=False),
        "phase_min_deg": Setting("Smallest phase shift searched.", unit="deg", flag="--phase-min",
                                 star="phase_min", default=0.0),
        "phase_max_deg": Setting("Largest phase shift searched.", unit="deg", flag="--phase-max",
                                 star="phase_max", default=180.0),
        "phase_step_deg": Setting("Phase shift step.", unit="deg", flag="--phase-step", star="phase_step",
                                  default=10.0),
    })


@dataclass(frozen=True)
class Options:
    """CTF estimation job (RELION job.star names on the fields)."""

    input_star: str = setting(help="micrographs.star (motion-corrected or imported).", flag="--i", required=True,
                              star="input_star_mics")
    search: CtfSearch = group(SEARCH)
    use_nodw: bool = setting(True, help="Fit the dose-weighted sums.",
                             flag="--use-dw", cli=NEGATED, star="use_noDW")
    write_diagnostics: bool = setting(True, help="No .ctf/.png diagnostics.", flag="--no-diagnostics", cli=NEGATED)
    device: str = setting("auto", help="auto | cpu | cuda.", flag="--device")
    parallel: ParallelOptions = group(PARALLEL)
    use_ctffind: bool = setting(False, help="Run an external CTFFIND4 instead.", flag="--use-ctffind")
    ctffind_exe: str = setting("", help="CTFFIND4 executable (default: ctffind or ctffind4 on the PATH).",
                               flag="--ctffind-exe")

    def __post_init__(self) -> None:
        if not self.input_star:
            raise InputError("no input micrographs STAR file", field="input_star_mics",
                             expected="a micrographs.star path")


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION CtfFind job.star values (names on the fields)."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION CtfFind job.star values for ``options`` (settings RELION lacks as ``vitrify_*`` rows)."""
    return fields.job_star_from_options(options)

"""Options of the ``autopick`` job (:mod:`vitrify.jobs.autopick`); RELION ``relion.autopick``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import Convert, Group, Setting, group, setting
from vitrify.jobs.options._parallel import PARALLEL
from vitrify.jobs.jobstar_values import flag, number, number_text, text, yes_no

if TYPE_CHECKING:
    from vitrify.jobs.scaleout import ParallelOptions
    from vitrify.preprocess.picking import LogPickOptions
    from vitrify.preprocess.template_pick import TemplatePickOptions

METHODS = ("log", "template", "topaz")


def _read_method(values) -> str:
    """``do_log`` wins; else ``do_refs`` (template) or ``do_topaz``; else LoG."""
    if flag(values, "do_refs", False) and not flag(values, "do_log", False):
        return "template"
    if flag(values, "do_topaz", False) and not flag(values, "do_log", False):
        return "topaz"
    return "log"


def _write_method(method: str, _owner) -> dict[str, str]:
    return {"do_log": yes_no(method == "log"), "do_refs": yes_no(method == "template"),
            "do_topaz": yes_no(method == "topaz")}


def _read_references(values) -> str:
    return text(values, "fn_refs_autopick") if _read_method(values) == "template" else ""


def _read_min_distance(values) -> float:
    """RELION's ``mindist_autopick`` (Å) as a fraction of the diameter (0.8 when unset)."""
    diameter, mindist = number(values, "particle_diameter", -1.0), number(values, "mindist_autopick", -1.0)
    return mindist / diameter if mindist > 0 and diameter > 0 else 0.8


def _write_min_distance(fraction: float, template) -> dict[str, str]:
    return {"mindist_autopick": number_text(fraction * template.diameter_angst)}


LOG = Group(
    help="LoG picker settings (vitrify.preprocess.picking.LogPickOptions).",
    cls="vitrify.preprocess.picking:LogPickOptions",
    members={
        "diameter_min_angst": Setting("Smallest particle diameter.", unit="Å", flag="--log-diameter-min",
                                      star="log_diam_min", default=150.0),
        "diameter_max_angst": Setting("Largest particle diameter.", unit="Å", flag="--log-diameter-max",
                                      star="log_diam_max", default=180.0),
        "lowpass_angst": Setting("Low-pass before picking.", unit="Å", flag="--log-lowpass", star="log_maxres",
                                 default=20.0),
        "invert": Setting("Particles are white on the micrographs.", flag="--log-invert", star="log_invert",
                          default=False),
        "threshold_adjust": Setting("σ units; negative picks more, positive fewer.", flag="--log-adjust-threshold",
                                    star="log_adjust_thr", default=0.0),
        "upper_threshold": Setting("Drop picks above this (σ).", flag="--log-upper-threshold",
                                   star="log_upper_thr", default=999.0),
    })

TEMPLATE = Group(
    help="Template picker settings (vitrify.preprocess.template_pick.TemplatePickOptions); "
         "None: defaults, diameter from the references.",
    cls="vitrify.preprocess.template_pick:TemplatePickOptions",
    optional=True,
    present=lambda values: number(values, "particle_diameter", -1.0) > 0,
    shown=lambda template: template.diameter_angst > 0,
    absent={"particle_diameter": "-1"},
    members={
        "diameter_angst": Setting("Template picking: particle diameter (Å; -1: 0.75 x reference box).",
                                  flag="--diameter", star="particle_diameter", default=-1.0,
                                  cli=Convert(lambda d: d if d > 0 else -1.0, lambda d: d)),
        "psi_step_deg": Setting("Template picking: in-plane step (degrees).", flag="--psi-step",
                                star="psi_sampling_autopick", default=10.0),
        "lowpass_angst": Setting("Template picking: low-pass of references and micrographs.", unit="Å",
                                 flag="--template-lowpass", star="lowpass", default=20.0),
        "highpass_angst": Setting("Template picking: high-pass in Å (-1: 2 x diameter).", unit="Å",
                                  flag="--template-highpass", star="highpass", default=-1.0),
        "references_white": Setting("Template picking: the class averages show white protein (RELION's).",
                                    flag="--references-white/--references-black", star="do_invert_refs",
                                    default=True),
        "invert": Setting("Particles are white on the micrographs (set by --log-invert).", cli_from="log.invert",
                          default=False),
        "threshold_adjust": Setting("Template picking: σ above the default threshold (5 σ).",
                                    flag="--template-adjust-threshold", default=0.0),
        "min_distance_fraction": Setting("Template picking: least distance between picks, fraction of the "
                                         "diameter.", flag="--template-min-distance", default=0.8,
                                         read=_read_min_distance, write=_write_min_distance),
    })


@dataclass(frozen=True)
class Options:
    """Auto-picking job (RELION job.star names on the fields)."""

    input_star: str = setting(help="micrographs(_ctf).star.", flag="--i", required=True, star="fn_input_autopick")
    method: str = setting("log", help="log | template | topaz.", flag="--method", read=_read_method,
                          write=_write_method)
    log: LogPickOptions = group(LOG)
    n_png: int = setting(3, help="Micrographs with a PNG overlay of the picks.", flag="--png")
    topaz_model: str = setting("resnet16_u64", help="Topaz pretrained model.", flag="--topaz-model",
                               star="topaz_model")
    topaz_diameter_angst: float = setting(100.0, help="Particle diameter for Topaz (Å).", flag="--topaz-diameter",
                                          star="topaz_particle_diameter")
    topaz_threshold: float = setting(-3.0, help="Topaz score threshold.", flag="--topaz-threshold")
    references: str = setting("", help="Template picking: class averages (.mrcs or class_averages.star).",
                              flag="--references", required="with --method template", star="fn_refs_autopick",
                              read=_read_references)
    reference_pixel_angst: float = setting(-1.0, help="Reference pixel size (Å; -1: header).", flag="--ref-angpix",
                                           star="angpix_ref")
    template: TemplatePickOptions | None = group(TEMPLATE)
    device: str = setting("auto", help="auto | cpu | cuda.", flag="--device")
    parallel: ParallelOptions = group(PARALLEL)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown picking method {self.method!r}", field="method",
                             expected=" | ".join(METHODS))
        if not self.input_star:
            raise InputError("no input micrographs STAR file", field="fn_input_autopick",
                             expected="a micrographs.star path")
        if self.method == "template" and not self.references:
            raise InputError("template picking needs references", field="fn_refs_autopick",
                             expected="2D class averages (.mrcs or class_averages.star)")


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION AutoPick job.star values (names on the fields). RELION's
    ``threshold_autopick`` is on another scale and is not used."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION AutoPick job.star values for ``options`` (settings RELION lacks as ``vitrify_*`` rows)."""
    return fields.job_star_from_options(options)

"""Options of the ``class_ranker`` job (:mod:`vitrify.jobs.class_ranker`); RELION ``relion.select.class2dauto``.

RELION runs automatic 2D class selection as a Select job with ``do_class_ranker = Yes``
(the proc scheme's ``select_parts``): the 2D job's optimiser.star in ``fn_model``, the score
threshold in ``rank_threshold`` and the top-up rules in ``select_nr_parts`` /
``select_nr_classes`` (particles take precedence when > 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import setting
from vitrify.jobs.jobstar_values import yes_no

#: default score threshold (vitrify's model; chosen on validation jobs, docs/ranker.md)
DEFAULT_MIN_SCORE = 0.23
DEVICES = ("auto", "cpu", "cuda")


def _write_input(path: str, _owner) -> dict[str, str]:
    return {"fn_model": path, "do_class_ranker": yes_no(True), "do_select_values": yes_no(False)}


@dataclass(frozen=True)
class Options:
    """Automatic 2D class selection (RELION job.star names on the fields)."""

    input_optimiser: str = setting("", help="The 2D job's run_itNNN_optimiser.star.", flag="--opt",
                                   required="(not for `class-ranker train`)", star="fn_model", write=_write_input)
    min_score: float = setting(DEFAULT_MIN_SCORE, help="Select classes scoring at least this (0..1).",
                               flag="--min-score", star="rank_threshold")
    min_particles: int = setting(-1, help="Add the best-scoring classes until this many particles are selected "
                                          "(-1: off; takes precedence over --min-classes).",
                                 flag="--min-particles", star="select_nr_parts")
    min_classes: int = setting(-1, help="Add the best-scoring classes until this many are selected (-1: off).",
                               flag="--min-classes", star="select_nr_classes")
    model: str = setting("", help="Weights written by `vitrify class-ranker train` (default: the shipped model).",
                         flag="--model")
    device: str = setting("cpu", help="auto | cpu | cuda.", flag="--device")

    def __post_init__(self) -> None:
        if not self.input_optimiser:
            raise InputError("no input optimiser.star", field="--opt/fn_model",
                             expected="a 2D job's run_itNNN_optimiser.star")
        if not 0.0 <= self.min_score <= 1.0:
            raise InputError(f"score threshold {self.min_score}", field="--min-score/rank_threshold",
                             expected="a number in [0, 1]")
        if self.device not in DEVICES:
            raise InputError(f"unknown device {self.device!r}", field="--device", expected=" | ".join(DEVICES))


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION Select job.star values (``fn_model``, ``rank_threshold``, ``select_nr_parts``,
    ``select_nr_classes``; vitrify's ``model`` and ``device`` as ``vitrify_*`` rows)."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION Select job.star values for ``options`` (``do_class_ranker = Yes``)."""
    return fields.job_star_from_options(options)

"""Options of the ``class2d`` job (:mod:`vitrify.jobs.class2d`); RELION ``relion.class2d``.

RELION's GUI passes twice its psi and offset steps to relion_refine; so do we
(job.star ``psi_sampling`` 6 -> 12 degrees).
"""

from __future__ import annotations

from dataclasses import dataclass

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import setting
from vitrify.jobs.options._engine_checks import check_engine_options
from vitrify.jobs.jobstar_values import (flag, number_text, read_device, read_threads, whole_number,
                                         write_device, write_threads, yes_no)

ALGORITHMS = ("vdam", "em")
DEFAULT_ITER = {"vdam": 200, "em": 25}


def _read_algorithm(values) -> str:
    return "vdam" if flag(values, "do_grad", True) else "em"


def _write_algorithm(algorithm: str, _owner) -> dict[str, str]:
    return {"do_grad": yes_no(algorithm == "vdam")}


def _read_iterations(values) -> int:
    """``nr_iter_grad`` (VDAM) or ``nr_iter`` (EM), the other as a fallback, then RELION's default."""
    algorithm = _read_algorithm(values)
    key = "nr_iter_grad" if algorithm == "vdam" else "nr_iter"
    return whole_number(values, key, whole_number(values, "nr_iter", DEFAULT_ITER[algorithm]))


def _write_iterations(_nr_iter: int, options) -> dict[str, str]:
    return {"nr_iter_grad" if options.algorithm == "vdam" else "nr_iter": number_text(options.iterations)}


@dataclass(frozen=True)
class Options:
    """Options of a Class2D job (CLI flags and RELION job.star names on the fields)."""

    input_star: str = setting("", help="Input particles.star.", flag="--i", required="unless --continue", star="fn_img")
    n_classes: int = setting(50, help="Number of classes.", flag="--K", star="nr_classes")
    particle_diameter_angst: float = setting(0.0, help="Mask diameter.", unit="Å", flag="--particle-diameter",
                                             required="unless --continue", star="particle_diameter")
    algorithm: str = setting("vdam", help="vdam | em.", flag="--algorithm", read=_read_algorithm,
                             write=_write_algorithm)
    nr_iter: int = setting(-1, help="Iterations (default 200 VDAM, 25 EM).", flag="--iter",
                           read=_read_iterations, write=_write_iterations)
    psi_step_deg: float = setting(12.0, help="In-plane angular step.", unit="deg", flag="--psi-step",
                                  star="psi_sampling", scale=2.0)
    offset_range_px: float = setting(5.0, help="Offset search range.", unit="px", flag="--offset-range",
                                     star="offset_range")
    offset_step_px: float = setting(2.0, help="Offset search step.", unit="px", flag="--offset-step",
                                    star="offset_step", scale=2.0)
    tau2_fudge: float = setting(2.0, help="Regularisation parameter T.", flag="--tau2-fudge", star="tau_fudge")
    do_ctf: bool = setting(True, help="CTF correction.", flag="--ctf/--no-ctf", star="do_ctf_correction")
    ctf_intact_first_peak: bool = setting(False, help="Ignore CTFs until first peak.", flag="--ctf-intact-first-peak",
                                          star="ctf_intact_first_peak")
    class_inactivity_threshold: float = setting(0.1, help="VDAM class replacement.",
                                                flag="--class-inactivity-threshold")
    replacement_source: str = setting(
        "largest", flag="--replace-from",
        help="VDAM: what refills an inactive class: a copy of the largest class (largest) | of RELION's "
             "gradient choice (gradient) | the average of the mini-batch's worst-fitting particles (worst).")
    grad_write_iter: int = setting(10, help="VDAM: write every N iterations.", flag="--grad-write-iter")
    ini_subset: int = setting(-1, help="VDAM: initial mini-batch size (-1: RELION's choice).", flag="--ini-subset")
    fin_subset: int = setting(-1, help="VDAM: final mini-batch size (-1: RELION's choice).", flag="--fin-subset")
    max_significant: int = setting(-1, help="Most significant poses kept per particle (-1: RELION's default).",
                                   flag="--max-significant")
    oversampling: int = setting(1, help="1: coarse pass + fine pass (RELION); 0: one pass.", flag="--oversampling")
    reference_stack: str = setting("", help="Start from these 2D references (MRC stack of K images of the particles' "
                                            "box and pixel size, e.g. projections of a map) instead of blobs.",
                                   flag="--ref", star="fn_ref")
    posterior_power: float = setting(1.0, help="Posterior weights as (likelihood x prior)^power; < 1 keeps "
                                               "low-SNR assignments soft (1: RELION).", flag="--posterior-power")
    outlier_z: float = setting(0.0, help="Particles whose low-resolution residual at their class and pose exceeds the "
                                         "median by this many robust standard deviations go to one outlier class "
                                         "(0: off).", flag="--outlier-z")
    seed: int = setting(1, help="Random seed.", flag="--seed")
    threads: int = setting(0, help="CPU threads (0: every CPU this process may use).", flag="--threads",
                           read=read_threads, write=write_threads)
    device: str = setting("auto", help="auto | cpu | cuda.", flag="--device", read=read_device, write=write_device)
    memory_budget_mb: int = setting(0, help="Memory per E-step block in MB (0: 1024 on a GPU, 64 on a CPU).", unit="MB",
                                    flag="--memory-budget")
    continue_from: str = setting("", help="Continue from a run_itNNN_optimiser.star.", flag="--continue",
                                 star="fn_cont")
    root: str = setting("run", help="Output file name root (<root>_itNNN_*).", flag="--root")

    def __post_init__(self) -> None:
        from vitrify.ml.vdam import REPLACEMENT_SOURCES

        def bad(field, message, expected):
            raise InputError(message, field=field, expected=expected)

        if self.algorithm not in ALGORITHMS:
            bad("--algorithm", f"unknown algorithm {self.algorithm!r}", " | ".join(ALGORITHMS))
        if self.replacement_source not in REPLACEMENT_SOURCES:
            bad("--replace-from", f"unknown replacement source {self.replacement_source!r}",
                " | ".join(REPLACEMENT_SOURCES))
        if not self.continue_from and not self.input_star:
            bad("--i", "no input particles", "a particles.star file")
        if self.n_classes < 1:
            bad("--K", f"{self.n_classes} classes", "at least 1")
        if not self.continue_from and not self.particle_diameter_angst > 0:
            bad("--particle-diameter", "particle diameter must be given", "a diameter in Å > 0")
        if self.psi_step_deg <= 0 or self.psi_step_deg > 180:
            bad("--psi-step", f"psi step {self.psi_step_deg}", "0 < step <= 180 degrees")
        check_engine_options(self)
        if self.outlier_z < 0 or (self.outlier_z > 0 and self.n_classes < 2):
            bad("--outlier-z", f"outlier z {self.outlier_z} with {self.n_classes} classes",
                "0 (off), or > 0 with at least one class besides the outlier class")
        if not 0 < self.posterior_power <= 1:
            bad("--posterior-power", f"posterior power {self.posterior_power}", "0 < power <= 1")

    @property
    def iterations(self) -> int:
        """Requested iterations (RELION defaults: 200 VDAM mini-batches, 25 EM iterations)."""
        return self.nr_iter if self.nr_iter > 0 else DEFAULT_ITER[self.algorithm]


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION class2d ``job.star`` values (``fn_img``, ``nr_classes``, ``do_grad`` ...;
    names on the fields); RELION's halved ``psi_sampling`` and ``offset_step`` are doubled."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION Class2D job.star values for ``options`` (inverse of :func:`options_from_job_star`: half the
    psi and offset steps, as RELION's GUI; settings RELION lacks as ``vitrify_*`` rows)."""
    return fields.job_star_from_options(options)

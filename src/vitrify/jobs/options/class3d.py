"""Options of the ``class3d`` job (:mod:`vitrify.jobs.class3d`); RELION ``relion.class3d``.

RELION-4's GUI runs ``relion_refine --i particles.star --ref ref.mrc --ini_high 60 --K <K>
--tau2_fudge 4 --iter 25 --healpix_order 2 --offset_range 5 --offset_step 2 --sym C1
--flatten_solvent --zero_mask --ctf --oversampling 1`` (its "7.5 degrees" sampling is HEALPix
order 2 with one oversampling step; its job.star ``offset_step`` 1 is doubled by the GUI for the
coarse pass, as for Class2D: ``--offset-step 2`` here, 1 px after oversampling). Local searches
(``do_local_ang_searches``, ``sigma_angles`` / 3 = ``--sigma-ang``) search around the input poses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import setting
from vitrify.jobs.jobstar_values import (flag, number_text, read_device, read_threads, text, write_device,
                                         write_threads, yes_no)
from vitrify.jobs.options._engine_checks import check_engine_options, check_reference_options

DEFAULT_ITER = {"em": 25, "vdam": 100}


def _read_sampling(values) -> int:
    """RELION's ``sampling`` ("7.5 degrees": the oversampled step) -> coarse HEALPix order."""
    raw = text(values, "sampling", "7.5 degrees").split()
    try:
        step = float(raw[0]) if raw else 7.5
    except ValueError:
        raise InputError(f"angular sampling {' '.join(raw)!r}", field="sampling",
                         expected="RELION's '30 degrees', '15 degrees', '7.5 degrees', ...") from None
    return max(0, int(round(math.log2(30.0 / step))))


def _write_sampling(order: int, _owner) -> dict[str, str]:
    step = 30.0 / 2 ** order
    return {"sampling": f"{step:.3g} degrees"}


def _read_algorithm(values) -> bool:
    return flag(values, "do_grad", False)


def _write_algorithm(grad: bool, _owner) -> dict[str, str]:
    return {"do_grad": yes_no(grad)}


def _read_local(values) -> float:
    """RELION's GUI passes ``--sigma_ang sigma_angles / 3`` when ``do_local_ang_searches`` is Yes (its
    ``sigma_angles`` is the search range, 3 sigma); 0 (global searches) otherwise."""
    if not flag(values, "do_local_ang_searches", False):
        return 0.0
    try:
        return float(text(values, "sigma_angles", "5")) / 3.0
    except ValueError:
        raise InputError("not a number", field="sigma_angles", expected="an angle in degrees") from None


def _write_local(sigma: float, _owner) -> dict[str, str]:
    return {"do_local_ang_searches": yes_no(sigma > 0), "sigma_angles": number_text(3.0 * sigma if sigma > 0 else 5.0)}


@dataclass(frozen=True)
class Options:
    """Options of a Class3D job (CLI flags and RELION job.star names on the fields)."""

    input_star: str = setting("", help="Input particles.star.", flag="--i", required="unless --continue", star="fn_img")
    reference: str = setting("", help="Reference map (MRC; or a STAR file of K maps, one per class); another box "
                                      "or pixel size is rescaled.", flag="--ref",
                             required="unless --continue", star="fn_ref")
    solvent_mask: str = setting("", help="Solvent mask (MRC, values in [0, 1], the particles' box); default a "
                                         "soft sphere of the particle diameter.", flag="--solvent-mask", star="fn_mask")
    n_classes: int = setting(1, help="Number of classes.", flag="--K", star="nr_classes")
    particle_diameter_angst: float = setting(0.0, help="Mask diameter.", unit="Å", flag="--particle-diameter",
                                             required="unless --continue", star="particle_diameter")
    ini_high_angst: float = setting(60.0, help="Low-pass filter of the reference.", unit="Å", flag="--ini-high",
                                    star="ini_high")
    symmetry: str = setting("C1", help="Point group of the particle.", flag="--sym", star="sym_name")
    grad: bool = setting(False, help="VDAM (gradient) instead of EM.", flag="--grad/--no-grad",
                         read=_read_algorithm, write=_write_algorithm)
    nr_iter: int = setting(-1, help="Iterations (default 25 EM, 100 VDAM).", flag="--iter", star="nr_iter")
    tau2_fudge: float = setting(4.0, help="Regularisation parameter T.", flag="--tau2-fudge", star="tau_fudge")
    healpix_order: int = setting(2, help="Coarse HEALPix order (2: 15°, oversampled to RELION's '7.5 degrees').",
                                 flag="--healpix-order", read=_read_sampling, write=_write_sampling)
    sigma_ang_deg: float = setting(0.0, help="Local angular searches around the input poses with this sigma "
                                             "(RELION --sigma_ang; 0: global).", unit="deg", flag="--sigma-ang",
                                   read=_read_local, write=_write_local)
    offset_range_px: float = setting(5.0, help="Offset search range.", unit="px", flag="--offset-range",
                                     star="offset_range")
    offset_step_px: float = setting(2.0, help="Offset search step (coarse; oversampled to half).", unit="px",
                                    flag="--offset-step", star="offset_step", scale=2.0)
    do_ctf: bool = setting(True, help="CTF correction.", flag="--ctf/--no-ctf", star="do_ctf_correction")
    ctf_intact_first_peak: bool = setting(False, help="Ignore CTFs until first peak.",
                                          flag="--ctf-intact-first-peak", star="ctf_intact_first_peak")
    flatten_solvent: bool = setting(True, help="Flatten the solvent outside the mask.",
                                    flag="--flatten-solvent/--no-flatten-solvent")
    class_inactivity_threshold: float = setting(0.1, help="VDAM class replacement.",
                                                flag="--class-inactivity-threshold")
    grad_write_iter: int = setting(10, help="VDAM: write every N iterations.", flag="--grad-write-iter")
    ini_subset: int = setting(-1, help="VDAM: initial mini-batch size (-1: RELION's choice).", flag="--ini-subset")
    fin_subset: int = setting(-1, help="VDAM: final mini-batch size (-1: RELION's choice).", flag="--fin-subset")
    max_significant: int = setting(-1, help="Most significant coarse poses kept per particle (-1: --fine-cap).",
                                   flag="--max-significant")
    fine_cap: int = setting(8, help="Particles with at most this many significant coarse poses get the fine "
                                     "pass.", flag="--fine-cap")
    oversampling: int = setting(1, help="1: coarse pass + fine pass (RELION); 0: one pass.", flag="--oversampling")
    seed: int = setting(1, help="Random seed (the first iteration's random class assignment).", flag="--seed")
    threads: int = setting(0, help="CPU threads (0: every CPU this process may use).", flag="--threads",
                           read=read_threads, write=write_threads)
    device: str = setting("auto", help="auto | cpu | cuda.", flag="--device", read=read_device, write=write_device)
    memory_budget_mb: int = setting(0, help="Memory per E-step block in MB (0: 1024 on a GPU, 64 on a CPU).",
                                    unit="MB", flag="--memory-budget")
    continue_from: str = setting("", help="Continue from a run_itNNN_optimiser.star.", flag="--continue",
                                 star="fn_cont")
    root: str = setting("run", help="Output file name root (<root>_itNNN_*).", flag="--root")

    def __post_init__(self) -> None:
        def bad(field, message, expected):
            raise InputError(message, field=field, expected=expected)

        check_reference_options(self, "an MRC map")
        if self.n_classes < 1:
            bad("--K", f"{self.n_classes} classes", "at least 1")
        if not 0 <= self.healpix_order <= 4:
            bad("--healpix-order", f"HEALPix order {self.healpix_order}", "0..4")
        if self.sigma_ang_deg < 0:
            bad("--sigma-ang", f"sigma {self.sigma_ang_deg}", "0 (global) or an angle > 0")
        check_engine_options(self)

    @property
    def algorithm(self) -> str:
        """``vdam`` with ``--grad``, else ``em`` (RELION's default for 3D classification)."""
        return "vdam" if self.grad else "em"

    @property
    def iterations(self) -> int:
        """Requested iterations (default 25 EM iterations, 100 VDAM mini-batches)."""
        return self.nr_iter if self.nr_iter > 0 else DEFAULT_ITER[self.algorithm]


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION class3d ``job.star`` values (``fn_img``, ``fn_ref``, ``nr_classes``,
    ``tau_fudge``, ``sym_name``, ``ini_high`` ...; names on the fields)."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION Class3D job.star values for ``options`` (settings RELION lacks as ``vitrify_*`` rows)."""
    return fields.job_star_from_options(options)

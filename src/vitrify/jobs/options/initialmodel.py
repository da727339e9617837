"""Options of the ``initialmodel`` job (:mod:`vitrify.jobs.initialmodel`); RELION ``relion.initialmodel``.

RELION-4's GUI runs ``relion_refine --grad --denovo_3dref --K <K> --sym C1 --healpix_order 1
--auto_sampling --offset_range 6 --offset_step 2 --tau2_fudge 4 --iter 200``, then
``relion_align_symmetry --sym <sym> --apply_sym --select_largest_class`` (``do_run_C1``).
"""

from __future__ import annotations

from dataclasses import dataclass

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import setting
from vitrify.jobs.options._engine_checks import SYMMETRY_GROUPS, check_engine_options, is_symmetry_name
from vitrify.jobs.jobstar_values import (read_device, read_threads, write_device,
                                         write_threads)

ALGORITHMS = ("vdam", "em")
DEFAULT_ITER = {"vdam": 200, "em": 25}
AUTO = "auto"
@dataclass(frozen=True)
class Options:
    """Options of an InitialModel job (CLI flags and RELION job.star names on the fields)."""

    input_star: str = setting("", help="Input particles.star.", flag="--i", required="unless --continue", star="fn_img")
    n_classes: int = setting(1, help="Number of classes.", flag="--K", star="nr_classes")
    particle_diameter_angst: float = setting(0.0, help="Mask diameter.", unit="Å", flag="--particle-diameter",
                                             required="unless --continue", star="particle_diameter")
    symmetry: str = setting("C1", help="Point group of the particle.", flag="--sym", star="sym_name")
    run_c1: bool = setting(True, help="Refine in C1, then find the symmetry axes and apply them (RELION's "
                                      "default).", flag="--run-c1/--no-run-c1", star="do_run_C1")
    algorithm: str = setting("vdam", help="vdam | em.", flag="--algorithm")
    nr_iter: int = setting(-1, help="Iterations (default 200 VDAM mini-batches, 25 EM).", flag="--iter",
                           star="nr_iter")
    tau2_fudge: float = setting(4.0, help="Regularisation parameter T.", flag="--tau2-fudge", star="tau_fudge")
    healpix_order: str = setting(AUTO, help="HEALPix order of the coarse orientations (1: 30°, 2: 15°, ...) or "
                                            "auto (from the resolution, as RELION's auto-sampling).",
                                 flag="--healpix-order")
    offset_range_px: float = setting(6.0, help="Offset search range.", unit="px", flag="--offset-range",
                                     star="offset_range")
    offset_step_px: float = setting(2.0, help="Offset search step.", unit="px", flag="--offset-step",
                                    star="offset_step")
    do_ctf: bool = setting(True, help="CTF correction.", flag="--ctf/--no-ctf", star="do_ctf_correction")
    ctf_intact_first_peak: bool = setting(False, help="Ignore CTFs until first peak.",
                                          flag="--ctf-intact-first-peak", star="ctf_intact_first_peak")
    flatten_solvent: bool = setting(True, help="Flatten the solvent outside the mask.",
                                    flag="--flatten-solvent/--no-flatten-solvent", star="do_solvent")
    reference: str = setting("", help="Start from this map instead of Gaussian blobs (same box and pixel size).",
                             flag="--ref")
    class_inactivity_threshold: float = setting(0.1, help="VDAM class replacement.",
                                                flag="--class-inactivity-threshold")
    grad_write_iter: int = setting(10, help="VDAM: write every N iterations.", flag="--grad-write-iter")
    ini_subset: int = setting(-1, help="VDAM: initial mini-batch size (-1: RELION's choice).", flag="--ini-subset")
    fin_subset: int = setting(-1, help="VDAM: final mini-batch size (-1: RELION's choice).", flag="--fin-subset")
    max_significant: int = setting(-1, help="Most significant coarse poses kept per particle (-1: --fine-cap; "
                                            "RELION keeps up to 100 K).",
                                   flag="--max-significant")
    fine_cap: int = setting(8, help="Particles with at most this many significant coarse poses get the fine "
                                     "pass (oversampled children); the others keep their coarse poses.",
                            flag="--fine-cap")
    oversampling: int = setting(1, help="1: coarse pass + fine pass (RELION); 0: one pass.", flag="--oversampling")
    choose_class: int = setting(0, help="Class written as initial_model.mrc (0: the largest).",
                                flag="--choose-class")
    seed: int = setting(1, help="Random seed.", flag="--seed")
    threads: int = setting(0, help="CPU threads (0: every CPU this process may use).", flag="--threads",
                           read=read_threads, write=write_threads)
    device: str = setting("auto", help="auto | cpu | cuda.", flag="--device", read=read_device, write=write_device)
    memory_budget_mb: int = setting(0, help="Memory per E-step block in MB (0: 1024 on a GPU, 64 on a CPU).",
                                    unit="MB", flag="--memory-budget")
    root: str = setting("run", help="Output file name root (<root>_itNNN_*).", flag="--root")
    continue_from: str = setting("", help="Continue from a run_itNNN_optimiser.star (--iter: the new total).",
                                 flag="--continue", star="fn_cont")

    def __post_init__(self) -> None:
        def bad(field, message, expected):
            raise InputError(message, field=field, expected=expected)

        if self.algorithm not in ALGORITHMS:
            bad("--algorithm", f"unknown algorithm {self.algorithm!r}", " | ".join(ALGORITHMS))
        if not self.continue_from and not self.input_star:
            bad("--i", "no input particles", "a particles.star file")
        if self.n_classes < 1:
            bad("--K", f"{self.n_classes} classes", "at least 1")
        if not self.continue_from and not self.particle_diameter_angst > 0:
            bad("--particle-diameter", "particle diameter must be given", "a diameter in Å > 0")
        if not is_symmetry_name(self.symmetry):
            bad("--sym", f"unknown point group {self.symmetry!r}", SYMMETRY_GROUPS)
        if self.healpix_order != AUTO and not (self.healpix_order.isdigit() and 0 <= int(self.healpix_order) <= 4):
            bad("--healpix-order", f"HEALPix order {self.healpix_order!r}", "0..4 or auto")
        check_engine_options(self)
        if not 0 <= self.choose_class <= self.n_classes:
            bad("--choose-class", f"class {self.choose_class}", f"0 (largest) or 1..{self.n_classes}")

    @property
    def iterations(self) -> int:
        """Requested iterations (RELION defaults: 200 VDAM mini-batches, 25 EM iterations)."""
        return self.nr_iter if self.nr_iter > 0 else DEFAULT_ITER[self.algorithm]

    @property
    def order(self) -> int:
        """HEALPix order, -1 for auto-sampling."""
        return -1 if self.healpix_order == AUTO else int(self.healpix_order)


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION initialmodel ``job.star`` values (``fn_img``, ``nr_classes``, ``sym_name`` ...;
    names on the fields)."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION InitialModel job.star values for ``options`` (settings RELION lacks as ``vitrify_*`` rows)."""
    return fields.job_star_from_options(options)

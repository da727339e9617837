"""Options of the ``refine3d`` job (:mod:`vitrify.jobs.refine3d`); RELION ``relion.refine3d``.

RELION-4's GUI runs ``relion_refine --auto_refine --split_random_halves --ref map.mrc --ini_high 40
--particle_diameter D --sym C1 --healpix_order 2 --offset_range 5 --offset_step 2
--auto_local_healpix_order 4 --low_resol_join_halves 40 --flatten_solvent --oversampling 1 --pad 2``:
the GUI's sampling and offset step are the fine ones (after oversampling), the command line's the
coarse ones (twice as large). vitrify's options are the GUI's.
job.star names as RELION's: ``fn_img``, ``fn_ref``, ``fn_mask``,
``ini_high``, ``sym_name``, ``particle_diameter``, ``do_solvent_fsc``, ``sampling`` ("7.5 degrees"),
``auto_local_sampling`` ("1.8 degrees"), ``offset_range``, ``offset_step``, ``nr_threads``, ``use_gpu``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import setting
from vitrify.jobs.jobstar_values import read_device, read_threads, write_device, write_threads
from vitrify.jobs.options._engine_checks import check_reference_options

#: RELION's GUI sampling choices (the fine step after oversampling): HEALPix order = index
SAMPLINGS = ("30 degrees", "15 degrees", "7.5 degrees", "3.7 degrees", "1.8 degrees", "0.9 degrees",
             "0.5 degrees", "0.2 degrees", "0.1 degrees")


def order_of_sampling(text: str, default: int) -> int:
    """HEALPix order of a RELION sampling text (``"7.5 degrees"`` -> 2); ``default`` when empty."""
    text = str(text).strip()
    if not text:
        return default
    try:
        return SAMPLINGS.index(text)
    except ValueError:
        raise InputError(f"sampling {text!r}", field="sampling",
                         expected="one of " + ", ".join(SAMPLINGS)) from None


def _read_order(name: str, default: int):
    def read(values: Mapping[str, str]) -> int:
        return order_of_sampling(values.get(name, ""), default)
    return read


def _write_order(name: str):
    def write(order: int, _owner: Any) -> dict[str, str]:
        return {name: SAMPLINGS[order]}
    return write


@dataclass(frozen=True)
class Options:
    """Options of a Refine3D job (CLI flags and RELION job.star names on the fields)."""

    input_star: str = setting("", help="Input particles.star.", flag="--i", required="unless --continue",
                              star="fn_img")
    reference: str = setting("", help="Reference map (MRC); rescaled when its box or pixel size differ.",
                             flag="--ref", required="unless --continue", star="fn_ref")
    particle_diameter_angst: float = setting(0.0, help="Mask diameter.", unit="Å", flag="--particle-diameter",
                                             required="unless --continue", star="particle_diameter")
    symmetry: str = setting("C1", help="Point group of the particle.", flag="--sym", star="sym_name")
    ini_high_angst: float = setting(40.0, help="Low-pass the reference to this resolution first.", unit="Å",
                                    flag="--ini-high", star="ini_high")
    solvent_mask: str = setting("", help="Solvent mask (MRC, values in [0, 1], the particles' box) for the maps.",
                                flag="--solvent-mask", star="fn_mask")
    solvent_fsc: bool = setting(False, help="Use the solvent mask for the gold-standard FSC too.",
                                flag="--solvent-flatten-fsc/--no-solvent-flatten-fsc", star="do_solvent_fsc")
    do_ctf: bool = setting(True, help="CTF correction.", flag="--ctf/--no-ctf", star="do_ctf_correction")
    ctf_intact_first_peak: bool = setting(False, help="Ignore CTFs until first peak.",
                                          flag="--ctf-intact-first-peak", star="ctf_intact_first_peak")
    healpix_order: int = setting(2, help="Initial HEALPix order of the coarse search (2: 15° coarse, 7.5° fine "
                                         "with oversampling; RELION's sampling '7.5 degrees').",
                                 flag="--healpix-order", read=_read_order("sampling", 2),
                                 write=_write_order("sampling"))
    local_order: int = setting(4, help="HEALPix order from which the searches are local around the previous "
                                       "poses (RELION's auto_local_sampling; 4: '1.8 degrees').",
                               flag="--local-order", read=_read_order("auto_local_sampling", 4),
                               write=_write_order("auto_local_sampling"))
    max_order: int = setting(5, help="Finest HEALPix order the sampling may reach.", flag="--max-order")
    offset_range_px: float = setting(5.0, help="Initial offset search range.", unit="px", flag="--offset-range",
                                     star="offset_range")
    offset_step_px: float = setting(1.0, help="Initial offset search step (fine; the coarse pass uses twice it).",
                                    unit="px", flag="--offset-step",
                                    star="offset_step")
    low_resol_join_halves_angst: float = setting(40.0, help="Average the half maps below this resolution.",
                                                 unit="Å", flag="--low-resol-join-halves")
    tau2_fudge: float = setting(1.0, help="Regularisation parameter T.", flag="--tau2-fudge")
    max_iter: int = setting(50, help="Most iterations before the final one.", flag="--iter")
    fine_cap: int = setting(8, help="Particles with at most this many significant coarse poses get the fine "
                                     "pass (global searches).", flag="--fine-cap")
    seed: int = setting(0, help="Random seed (half-set split; kept rlnRandomSubset wins).", flag="--seed")
    threads: int = setting(0, help="CPU threads (0: every CPU this process may use).", flag="--threads",
                           read=read_threads, write=write_threads)
    device: str = setting("auto", help="auto | cpu | cuda.", flag="--device", read=read_device, write=write_device)
    memory_budget_mb: int = setting(0, help="Memory per E-step block in MB (0: 1024 on a GPU, 64 on a CPU).",
                                    unit="MB", flag="--memory-budget")
    continue_from: str = setting("", help="Continue from a run_itNNN_optimiser.star (or the job directory: its "
                                          "last one).", flag="--continue", star="fn_cont")
    root: str = setting("run", help="Output file name root (<root>_itNNN_*).", flag="--root")

    def __post_init__(self) -> None:
        def bad(field, message, expected):
            raise InputError(message, field=field, expected=expected)

        check_reference_options(self, "an MRC map (e.g. an initial model)")
        if not 0 <= self.healpix_order <= self.max_order <= 7:
            bad("--healpix-order", f"orders {self.healpix_order} .. {self.max_order}",
                "0 <= --healpix-order <= --max-order <= 7")
        if self.local_order < 0:
            bad("--local-order", f"order {self.local_order}", "an order >= 0")
        if self.offset_range_px < 0 or self.offset_step_px <= 0:
            bad("--offset-range/--offset-step", "negative range or non-positive step", "range >= 0, step > 0")
        if self.tau2_fudge <= 0:
            bad("--tau2-fudge", f"T = {self.tau2_fudge}", "T > 0")
        if self.max_iter < 1:
            bad("--iter", f"{self.max_iter} iterations", "at least 1")


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION refine3d ``job.star`` values (names on the fields)."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION Refine3D job.star values for ``options`` (settings RELION lacks as ``vitrify_*`` rows)."""
    return fields.job_star_from_options(options)

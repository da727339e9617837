"""Options of the ``motioncorr`` job (:mod:`vitrify.jobs.motioncorr`); RELION ``relion.motioncorr.own``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import NEGATED, Group, Setting, group, setting
from vitrify.jobs.options._parallel import PARALLEL
from vitrify.jobs.jobstar_values import number_text, text

if TYPE_CHECKING:
    from vitrify.jobs.scaleout import ParallelOptions
    from vitrify.preprocess.motion import MotionOptions

GAIN_ROTATIONS = ("No rotation (0)", "90 degrees (1)", "180 degrees (2)", "270 degrees (3)")
GAIN_FLIPS = ("No flipping (0)", "Flip upside down (1)", "Flip left to right (2)")


def _gain_reader(key: str):
    def read(values) -> int:
        from vitrify.io.movies import gain_option_index

        return gain_option_index(text(values, key, "0"))
    return read


def _gain_writer(key: str, names: tuple[str, ...]):
    def write(value: int, _owner) -> dict[str, str]:
        return {key: names[value] if 0 <= value < len(names) else number_text(value)}
    return write


MOTION = Group(
    help="Alignment settings (vitrify.preprocess.motion.MotionOptions).",
    cls="vitrify.preprocess.motion:MotionOptions",
    members={
        "bfactor_px2": Setting("B-factor for alignment, in pixel² of the movie as RELION's --bfactor "
                               "(150 px² = 4 x 150 x (pixel size)² Å²).", unit="px²", flag="--bfactor",
                               star="bfactor", default=150.0),
        "patches_x": Setting("Patches along X (1 with --patch-y 1: global only).", flag="--patch-x",
                             star="patch_x", default=5),
        "patches_y": Setting("Patches along Y.", flag="--patch-y", star="patch_y", default=5),
        "group_frames": Setting("Frames summed for global alignment.", flag="--group-frames",
                                star="group_frames", default=1),
    })


@dataclass(frozen=True)
class Options:
    """Motion-correction job (RELION job.star names on the fields)."""

    input_star: str = setting(help="movies.star.", flag="--i", required=True, star="input_star_mics")
    motion: MotionOptions = group(MOTION)
    dose_per_frame: float = setting(1.0, help="Exposure per frame.", unit="e/Å²", flag="--dose-per-frame",
                                    star="dose_per_frame")
    pre_exposure: float = setting(0.0, help="Exposure before the movie.", unit="e/Å²", flag="--pre-exposure",
                                  star="pre_exposure")
    dose_weighting: bool = setting(True, help="Plain sums only (no dose weighting).", flag="--no-dose-weighting",
                                   cli=NEGATED, star="do_dose_weighting")
    save_nodw: bool = setting(True, help="Also write the sums without dose weighting (<mic>_noDW.mrc).",
                              flag="--save-nodw/--no-save-nodw", star="do_save_noDW")
    binning: float = setting(1.0, help="Binning factor of the output.", flag="--bin", star="bin_factor")
    float16: bool = setting(False, help="Write micrographs as MRC mode 12.", flag="--float16", star="do_float16")
    gain: str = setting("", help="Gain reference (MRC/TIFF).", flag="--gain", star="fn_gain_ref")
    gain_rotation: int = setting(0, help="Gain rotation (0-3, x 90 degrees).", flag="--gain-rot",
                                 read=_gain_reader("gain_rot"), write=_gain_writer("gain_rot", GAIN_ROTATIONS))
    gain_flip: int = setting(0, help="Gain flip (0 none, 1 upside down, 2 left-right).", flag="--gain-flip",
                             read=_gain_reader("gain_flip"), write=_gain_writer("gain_flip", GAIN_FLIPS))
    defect_file: str = setting("", help="Defect mask image (nonzero = bad pixel).", flag="--defects",
                               star="fn_defect")
    first_frame: int = setting(1, help="First frame to sum (1-based).", flag="--first-frame", star="first_frame_sum")
    last_frame: int = setting(-1, help="Last frame to sum (-1: last).", flag="--last-frame", star="last_frame_sum")
    device: str = setting("auto", help="auto | cpu | cuda.", flag="--device")
    parallel: ParallelOptions = group(PARALLEL)
    eer_grouping: int = setting(32, help="EER: internal frames summed per frame.", flag="--eer-grouping",
                                star="eer_grouping")
    eer_upsampling: int = setting(1, help="EER: 1 = 4K, 2 = 8K rendering.", flag="--eer-upsampling",
                                  star="eer_upsampling")

    def __post_init__(self) -> None:
        if not self.input_star:
            raise InputError("no input movies STAR file", field="input_star_mics",
                             expected="a movies.star path")
        if self.binning < 1:
            raise InputError(f"binning {self.binning} < 1", field="bin_factor", expected=">= 1")
        if self.first_frame < 1:
            raise InputError("first frame must be >= 1", field="first_frame_sum", expected=">= 1")
        from vitrify.io.movies import check_eer_options

        check_eer_options(self.eer_grouping, self.eer_upsampling)


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION MotionCorr job.star values (names on the fields)."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION MotionCorr job.star values for ``options`` (settings RELION lacks as ``vitrify_*`` rows)."""
    return fields.job_star_from_options(options, {"do_own_motioncor": "Yes"})

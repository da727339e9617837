"""Options of the ``mask_create`` job (:mod:`vitrify.jobs.mask_create`); RELION ``relion.maskcreate``."""

from __future__ import annotations

from dataclasses import dataclass

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import setting


@dataclass(frozen=True)
class Options:
    """Mask creation (RELION job.star names on the fields; relion_mask_create's options)."""

    input_map: str = setting(help="Map to make the mask from (e.g. run_class001.mrc).", flag="--i",
                             required=True, star="fn_in")
    lowpass_angst: float = setting(15.0, help="Low-pass the map to this resolution first (0: none).",
                                   unit="Å", flag="--lowpass", star="lowpass_filter")
    pixel_size_angst: float = setting(-1.0, help="Pixel size (-1: from the map header).", unit="Å",
                                      flag="--angpix", star="angpix")
    threshold: float = setting(0.02, help="Initial binarisation threshold (voxels >= it are in).",
                               flag="--ini-threshold", star="inimask_threshold")
    threshold_of_max: float = setting(0.0, help="If > 0: binarise at this fraction of the low-passed map's "
                                      "maximum instead of --ini-threshold (a threshold that follows the map's "
                                      "scale, for masks made with nobody to look; cryoSPARC's dynamic mask "
                                      "uses 0.2).", flag="--threshold-of-max")
    extend_px: float = setting(3.0, help="Extend the binary mask by this many pixels (negative: shrink).",
                               unit="px", flag="--extend-inimask", star="extend_inimask")
    soft_edge_px: float = setting(3.0, help="Width of the raised-cosine soft edge.", unit="px",
                                  flag="--width-soft-edge", star="width_mask_edge")

    def __post_init__(self) -> None:
        if not self.input_map:
            raise InputError("no input map", field="fn_in", expected="an MRC map")
        if self.soft_edge_px < 0:
            raise InputError(f"soft edge {self.soft_edge_px} px", field="width_mask_edge", expected=">= 0 px")
        if not 0 <= self.threshold_of_max < 1:
            raise InputError(f"threshold of max {self.threshold_of_max}", field="vitrify_threshold_of_max",
                             expected="a fraction 0..1 (0: use --ini-threshold)")
        if self.lowpass_angst < 0:
            raise InputError(f"low-pass {self.lowpass_angst} Å", field="lowpass_filter", expected=">= 0 Å")


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION MaskCreate job.star values."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION MaskCreate job.star values for ``options``."""
    return fields.job_star_from_options(options)

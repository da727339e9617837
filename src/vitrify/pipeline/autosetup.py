"""relion_it's arithmetic: acquisition metadata + particle diameter → processing parameters.

Each derived value carries the rule and the inputs it came from, so ``vitrify mdcatch`` can show
why a box is 280 px. Rules (RELION-4 ``relion_it.py`` conventions where it has one, see
docs/mdcatch.md, with our changes marked *):

- motion-correction binning 2 for super-resolution movies, else 1; the pixel after motion
  correction is ``pixel_size x bin``;
- dose per frame = total dose / frames; for EER, raw frames are grouped so that one group holds
  about ``group_dose`` (1 e/Å²), and the dose per frame given to motion correction is per group;
- *frames are grouped for motion estimation only when one frame holds less than half of
  ``group_dose``; power spectra sum frames to about 4 e/Å² (RELION's help text);
- *patches: about one per 800 px of the motion-corrected frame, 1 to 7 (RELION: 5 x 5 for 4k);
- box = 1.5 x diameter / pixel, rounded up to an even *FFT-friendly size (factors 2, 3, 5, 7);
- *downscaled box: the smallest FFT-friendly even size whose pixel is at most 3.5 Å, so the
  pixel of the downscaled particles lies near 2.8-3.5 Å (Nyquist 5.6-7 Å, enough for 2D
  classification); no downscaling when the pixel is already 2.8 Å or more;
- mask diameter = 1.1 x particle diameter; LoG picking from 0.8 to 1.0 x particle diameter, on
  the CPU and without a FOM threshold at extraction (relion_it's settings for LoG picking).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vitrify.io.acquisition import AcquisitionParams
from vitrify.io.errors import InputError
from vitrify.jobs.jobstar_values import yes_no
from vitrify.jobs.options.motioncorr import GAIN_FLIPS, GAIN_ROTATIONS

#: Processing needs these acquisition fields (give them on the command line if the files lack them).
REQUIRED = ("pixel_size_angst", "voltage_kv", "cs_mm", "dose_per_frame_e_per_angst2")
FFT_PRIMES = (2, 3, 5, 7)
BOX_FACTOR = 1.5
MASK_FACTOR = 1.1
LOG_MIN_FACTOR = 0.8
SMALL_PIXEL_RANGE_ANGST = (2.8, 3.5)
PS_DOSE_E_PER_ANGST2 = 4.0
PATCH_SIZE_PX = 800


@dataclass(frozen=True)
class SetupOptions:
    """What the user adds to the metadata: particle diameter and optional fixed values."""

    particle_diameter_angst: float | None = None
    group_dose_e_per_angst2: float = 1.0
    box_px: int | None = None
    small_box_px: int | None = None
    mask_diameter_angst: float | None = None
    amplitude_contrast: float = 0.1

    def __post_init__(self) -> None:
        for name in ("particle_diameter_angst", "box_px", "small_box_px", "mask_diameter_angst"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InputError(f"{name} must be positive, got {value}", field=name,
                                 expected="a number > 0")
        if self.group_dose_e_per_angst2 <= 0:
            raise InputError("group dose must be positive", field="group_dose_e_per_angst2")


@dataclass(frozen=True)
class ProcessingSetup:
    """Derived processing parameters: ``values[name] = (value, source)`` in derivation order."""

    values: dict[str, tuple[Any, str]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name][0]

    def get(self, name: str, default: Any = None) -> Any:
        """Value of ``name`` or ``default``."""
        return self.values[name][0] if name in self.values else default

    def to_json_dict(self) -> dict[str, Any]:
        """``{name: {"value": v, "source": s}}``."""
        return {k: {"value": v, "source": s} for k, (v, s) in self.values.items()}


def is_fft_friendly(n: int) -> bool:
    """True if ``n`` has no prime factor other than 2, 3, 5 and 7."""
    if n < 1:
        return False
    for prime in FFT_PRIMES:
        while n % prime == 0:
            n //= prime
    return n == 1


def next_fft_friendly_even(size: float) -> int:
    """Smallest even FFT-friendly integer ≥ ``size``."""
    n = max(2, math.ceil(size - 1e-9))
    n += n % 2
    while not is_fft_friendly(n):
        n += 2
    return n


def downscaled_box(box_px: int, pixel_angst: float) -> int:
    """Smallest even FFT-friendly box ≤ ``box_px`` whose pixel is ≤ 3.5 Å (``box_px`` if none)."""
    low, high = SMALL_PIXEL_RANGE_ANGST
    if pixel_angst >= low:
        return box_px
    small = next_fft_friendly_even(box_px * pixel_angst / high)
    return min(small, box_px)


def _check_required(params: AcquisitionParams) -> None:
    missing = [name for name in REQUIRED if getattr(params, name) is None]
    if missing:
        raise InputError(f"cannot set up processing without {', '.join(missing)}",
                         path=params.source_path,
                         expected="metadata files that give them, or the matching command-line "
                                  "options (--pixel-size, --voltage, --cs, --dose-per-frame)")


def _src(params: AcquisitionParams, *names: str) -> str:
    return "; ".join(f"{n} from {params.source(n)}" for n in names)


def derive_motioncorr(params: AcquisitionParams, options: SetupOptions) -> dict[str, tuple[Any, str]]:
    """Binning, pixel after motion correction, dose per (grouped) frame, grouping and patches."""
    out: dict[str, tuple[Any, str]] = {}
    bin_factor = 2 if params.super_resolution else 1
    out["motioncorr_bin_factor"] = (bin_factor, "2 for super-resolution, else 1; "
                                    + _src(params, "super_resolution"))
    out["pixel_size_after_motioncorr_angst"] = (
        params.pixel_size_angst * bin_factor, "pixel_size_angst x motioncorr_bin_factor")
    dose = params.dose_per_frame_e_per_angst2
    target = options.group_dose_e_per_angst2
    if params.eer:
        grouping = max(1, round(target / dose))
        out["eer_grouping"] = (grouping, f"round({target:g} e/A2 / dose per EER frame {dose:.4g})")
        dose *= grouping
        out["dose_per_frame_e_per_angst2"] = (dose, "dose per EER frame x eer_grouping")
        out["group_frames"] = (1, "EER frames are grouped by eer_grouping")
    else:
        out["dose_per_frame_e_per_angst2"] = (dose, _src(params, "dose_per_frame_e_per_angst2"))
        group = max(1, round(target / dose)) if dose < target / 2 else 1
        out["group_frames"] = (group, f"group to ~{target:g} e/A2 when a frame holds < {target / 2:g}")
    out["group_for_ps"] = (max(1, round(PS_DOSE_E_PER_ANGST2 / dose)),
                           f"round({PS_DOSE_E_PER_ANGST2:g} e/A2 / dose per frame)")
    if params.frame_size_px is not None:
        for axis, size in zip(("patch_x", "patch_y"), params.frame_size_px):
            patches = min(7, max(1, round(size / bin_factor / PATCH_SIZE_PX)))
            out[axis] = (patches, f"frame {size} px / bin / {PATCH_SIZE_PX} px, 1..7")
    else:
        out["patch_x"] = out["patch_y"] = (5, "RELION default (frame size unknown)")
    return out


def derive_particles(pixel_angst: float, options: SetupOptions) -> dict[str, tuple[Any, str]]:
    """Box, downscaled box, mask and LoG diameters from the particle diameter."""
    diameter = options.particle_diameter_angst
    out: dict[str, tuple[Any, str]] = {}
    if options.box_px is not None:
        out["box_px"] = (options.box_px, "command line --box")
    else:
        raw = BOX_FACTOR * diameter / pixel_angst
        out["box_px"] = (next_fft_friendly_even(raw),
                         f"{BOX_FACTOR:g} x {diameter:g} A / {pixel_angst:.4g} A/px = {raw:.1f} px, "
                         "rounded up to an even FFT-friendly size")
    box = out["box_px"][0]
    if options.small_box_px is not None:
        out["small_box_px"] = (options.small_box_px, "command line --small-box")
    else:
        out["small_box_px"] = (downscaled_box(box, pixel_angst),
                               "smallest FFT-friendly even box with pixel <= "
                               f"{SMALL_PIXEL_RANGE_ANGST[1]:g} A (none if pixel >= "
                               f"{SMALL_PIXEL_RANGE_ANGST[0]:g} A)")
    small = out["small_box_px"][0]
    out["do_rescale"] = (small != box, "small_box_px != box_px")
    out["small_pixel_size_angst"] = (pixel_angst * box / small, "pixel x box_px / small_box_px")
    if options.mask_diameter_angst is not None:
        out["mask_diameter_angst"] = (options.mask_diameter_angst, "command line --mask-diameter")
    else:
        out["mask_diameter_angst"] = (MASK_FACTOR * diameter, f"{MASK_FACTOR:g} x particle diameter")
    out["log_diam_min_angst"] = (LOG_MIN_FACTOR * diameter, f"{LOG_MIN_FACTOR:g} x particle diameter")
    out["log_diam_max_angst"] = (diameter, "particle diameter")
    out["autopick_use_gpu"] = (False, "LoG picking runs on the CPU (relion_it: do_log -> use_gpu No)")
    out["extract_do_fom_threshold"] = (False, "LoG picks have no FOM to threshold "
                                              "(relion_it: do_log -> do_fom_threshold No)")
    return out


def derive_processing(params: AcquisitionParams, options: SetupOptions) -> ProcessingSetup:
    """All processing parameters for ``params`` (and the particle diameter, when given)."""
    _check_required(params)
    values: dict[str, tuple[Any, str]] = {
        "pixel_size_angst": (params.pixel_size_angst, _src(params, "pixel_size_angst")),
        "voltage_kv": (params.voltage_kv, _src(params, "voltage_kv")),
        "cs_mm": (params.cs_mm, _src(params, "cs_mm")),
        "amplitude_contrast": (options.amplitude_contrast, "RELION default 0.1"),
        "phase_plate": ((True, _src(params, "phase_plate")) if params.phase_plate
                        else (False, _src(params, "phase_plate") if params.phase_plate is not None
                              else "not recorded in the metadata: no phase plate assumed")),
    }
    values.update(derive_motioncorr(params, options))
    if options.particle_diameter_angst is not None:
        values.update(derive_particles(values["pixel_size_after_motioncorr_angst"][0], options))
    return ProcessingSetup(values)


#: Our derived names → relion_it option keys (``SCHEME__JOB__OPTION``; schemes.md §10).
OPTION_KEYS: dict[str, tuple[str, ...]] = {
    "pixel_size_angst": ("prep__importmovies__angpix",),
    "voltage_kv": ("prep__importmovies__kV",),
    "cs_mm": ("prep__importmovies__Cs",),
    "amplitude_contrast": ("prep__importmovies__Q0",),
    "movies_pattern": ("prep__importmovies__fn_in_raw",),
    "mtf_file": ("prep__importmovies__fn_mtf",),
    "dose_per_frame_e_per_angst2": ("prep__motioncorr__dose_per_frame",),
    "motioncorr_bin_factor": ("prep__motioncorr__bin_factor",),
    "eer_grouping": ("prep__motioncorr__eer_grouping",),
    "group_frames": ("prep__motioncorr__group_frames",),
    "group_for_ps": ("prep__motioncorr__group_for_ps",),
    "patch_x": ("prep__motioncorr__patch_x",),
    "patch_y": ("prep__motioncorr__patch_y",),
    "gain_reference": ("prep__motioncorr__fn_gain_ref",),
    "gain_rotation": ("prep__motioncorr__gain_rot",),
    "gain_flip": ("prep__motioncorr__gain_flip",),
    "defects_file": ("prep__motioncorr__fn_defect",),
    "phase_plate": ("prep__ctffind__do_phaseshift",),
    "log_diam_min_angst": ("proc__autopick__log_diam_min",),
    "log_diam_max_angst": ("proc__autopick__log_diam_max", "proc__autopick__topaz_particle_diameter"),
    "autopick_use_gpu": ("proc__autopick__use_gpu",),
    "extract_do_fom_threshold": ("proc__extract__do_fom_threshold",),
    "box_px": ("proc__extract__extract_size",),
    "do_rescale": ("proc__extract__do_rescale",),
    "small_box_px": ("proc__extract__rescale",),
    "mask_diameter_angst": ("proc__class2d__particle_diameter", "proc__inimodel3d__particle_diameter",
                            "proc__refine3d__particle_diameter"),
}

def format_option(name: str, value: Any) -> str:
    """A value as relion_it writes it: Yes/No for booleans, RELION's gain labels, %g numbers."""
    if name == "gain_rotation":
        return GAIN_ROTATIONS[int(value) % 4]
    if name == "gain_flip":
        return GAIN_FLIPS[int(value)]
    if isinstance(value, bool):
        return yes_no(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def scheme_options(setup: ProcessingSetup) -> dict[str, str]:
    """relion_it option keys → values (text) for every derived value that has a key."""
    options: dict[str, str] = {}
    for name, (value, _) in setup.values.items():
        for key in OPTION_KEYS.get(name, ()):
            options[key] = format_option(name, value)
    return options

"""Job ``postprocess``: gold-standard resolution, B-factor and sharpening, as RELION's ``relion_postprocess``.

From two unfiltered half-maps and a solvent mask: the FSC of the unmasked and masked half-maps;
the masked FSC corrected for the mask by phase randomisation from the first shell where the
unmasked FSC falls below 0.8 (:mod:`vitrify.core.sharpen`); the resolution where the corrected
FSC falls below 0.143; a B-factor fitted to the Guinier plot between ``--autob-lowres`` (10 Å) and
that resolution, or ``--adhoc-bfac``; the averaged map divided by the MTF (``--mtf``), FSC-weighted,
sharpened and low-passed (``postprocess.mrc``, masked: ``postprocess_masked.mrc``);
``postprocess.star`` with RELION's ``general``, ``fsc`` and ``guinier`` tables and
``postprocess_fsc.png``. Every input is checked before anything is written.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.jobs._postprocess_output import write_outputs
from vitrify.jobs.mask_create import read_map
from vitrify.jobs.options.postprocess import Options, job_star_from_options, options_from_job_star

RANDOMISE_BELOW_FSC = 0.8  # RELION: randomise phases from where the unmasked FSC falls below 0.8
SEED = 20240607


def half2_name(options: Options) -> str:
    """``--i2``, else ``--i`` with ``half1`` replaced by ``half2`` in the file name (RELION's rule)."""
    if options.half2_map:
        return options.half2_map
    path = Path(options.half1_map)
    if "half1" not in path.name:
        raise InputError("cannot find the second half-map: the name has no 'half1'", path=options.half1_map,
                         field="fn_in", expected="a name with half1 (half2 beside it) or --i2")
    return str(path.with_name(path.name.replace("half1", "half2")))


def read_inputs(options: Options):
    """``(half1, half2, mask, pixel Å)``, each ``(n, n, n)``; InputError for anything unusable."""
    half1, pixel = read_map(options.half1_map, options.pixel_size_angst)
    name2 = half2_name(options)
    half2, _ = read_map(name2, pixel, field="half2")
    if half1.shape != half2.shape:
        raise InputError(f"half-maps of different sizes {tuple(half1.shape)} and {tuple(half2.shape)}",
                         path=name2, field="half2", expected=f"a map of {tuple(half1.shape)}")
    mask, _ = read_map(options.mask, pixel, field="fn_mask")
    if mask.shape != half1.shape:
        raise InputError(f"mask of size {tuple(mask.shape)}", path=options.mask, field="fn_mask",
                         expected=f"the half-maps' size {tuple(half1.shape)}")
    low, high = float(mask.min()), float(mask.max())
    if low < -1e-4 or high > 1 + 1e-4:
        raise InputError(f"mask values from {low:g} to {high:g}", path=options.mask, field="fn_mask",
                         expected="values in [0, 1]")
    return half1.double(), half2.double(), mask.double().clamp(0, 1), pixel


def _mtf_curve(path: str, n: int):
    """``(n//2+1,)`` MTF per shell of an ``n`` box (frequency ``s / n`` 1/pixel)."""
    import numpy as np
    import torch

    from vitrify.jobs._mtf import read_mtf

    table = read_mtf(path)
    freq = np.arange(n // 2 + 1) / n
    mtf = np.interp(freq, table["rlnResolutionInversePixel"].astype(float), table["rlnMtfValue"].astype(float))
    return torch.from_numpy(np.clip(mtf, 0.01, None))


def analyse(half1, half2, mask, pixel: float, options: Options) -> dict:
    """Every curve and number of the job (tensors on the CPU, float64)."""
    import torch

    from vitrify.core import sharpen
    from vitrify.core.fsc import fsc, resolution_at_threshold

    n = half1.shape[-1]
    result = {"n": n, "pixel": pixel, "unmasked": fsc(half1, half2), "masked": fsc(half1 * mask, half2 * mask)}
    shell = sharpen.randomize_from_shell(result["unmasked"], RANDOMISE_BELOW_FSC)
    generator = torch.Generator().manual_seed(SEED)
    random1 = sharpen.phase_randomize(half1, shell, generator)
    random2 = sharpen.phase_randomize(half2, shell, generator)
    result["randomized"] = fsc(random1 * mask, random2 * mask)
    result["corrected"] = sharpen.corrected_fsc(result["masked"], result["randomized"], shell)
    result["randomise_from"] = shell
    result["resolution"] = resolution_at_threshold(result["corrected"], n, pixel, 0.143)
    result["mask_fraction"] = float(mask.mean())
    result["unmasked_resolution"] = resolution_at_threshold(result["unmasked"], n, pixel, 0.143)
    result["masked_resolution"] = resolution_at_threshold(result["masked"], n, pixel, 0.143)
    return result


def sharpen_map(half1, half2, result: dict, options: Options):
    """Average, MTF-correct, FSC-weight, sharpen and low-pass; fills the Guinier curves into ``result``."""
    from vitrify.core import sharpen
    from vitrify.core.filters import lowpass_fourier, resolution_to_shell
    from vitrify.core.fourier import irfft3_centered, radius_grid_3d, rfft3_centered

    n, pixel = result["n"], result["pixel"]
    f = rfft3_centered((half1 + half2) / 2)
    result["guinier_original"] = sharpen.log_amplitude_shells(f, n)
    if options.mtf_file:
        mtf = _mtf_curve(options.mtf_file, n)
        radius = radius_grid_3d(n, dtype=f.real.dtype).round().long().clamp(max=n // 2)
        f = f / mtf[radius]
        result["guinier_mtf"] = sharpen.log_amplitude_shells(f, n)
    f = sharpen.fsc_weight(f, result["corrected"], n)
    result["guinier_weighted"] = sharpen.log_amplitude_shells(f, n)
    bfactor, intercept, corr = sharpen.fit_guinier(result["guinier_weighted"], n, pixel,
                                                   options.autob_lowres_angst, result["resolution"])
    result.update(fit_slope=bfactor / 4, fit_intercept=intercept, fit_correlation=corr)
    result["bfactor"] = options.adhoc_bfactor_angst2 if options.adhoc_bfactor_angst2 != 0 else bfactor
    s2 = (radius_grid_3d(n, dtype=f.real.dtype) / (n * pixel)) ** 2
    import torch

    f = f * torch.exp(-result["bfactor"] * s2 / 4)
    result["guinier_sharpened"] = sharpen.log_amplitude_shells(f, n)
    result["lowpass"] = options.lowpass_angst or result["resolution"]
    f = lowpass_fourier(f, n, resolution_to_shell(result["lowpass"], n, pixel), 2.0, ndim=3)
    return irfft3_centered(f, n)


def run(options: Options, job_dir: str | Path) -> Path:
    """Post-process into ``job_dir``; return the path of ``postprocess.star``."""
    job_dir = Path(job_dir)
    half1, half2, mask, pixel = read_inputs(options)
    if options.mtf_file:
        _mtf_curve(options.mtf_file, half1.shape[-1])  # a bad MTF file fails before anything is written
    result = analyse(half1, half2, mask, pixel, options)
    sharpened = sharpen_map(half1, half2, result, options)
    star = write_outputs(job_dir, options, half2_name(options), result, sharpened, mask)
    logging.getLogger(f"vitrify.job.{job_dir.resolve()}").info(
        "resolution %.2f Å (FSC 0.143, phase-randomised from %.2f Å; unmasked %.2f Å, masked %.2f Å); "
        "B-factor %.1f Å²", result["resolution"], result["n"] * pixel / result["randomise_from"],
        result["unmasked_resolution"], result["masked_resolution"], result["bfactor"])
    return star


__all__ = ["Options", "analyse", "half2_name", "job_star_from_options", "options_from_job_star", "read_inputs",
           "run", "sharpen_map"]

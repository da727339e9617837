"""Job ``mask_create``: a soft solvent mask from a map, as RELION's ``relion_mask_create``.

The map is low-passed (``--lowpass``), binarised at ``--ini-threshold`` (or, with
``--threshold-of-max F``, at ``F`` times the low-passed map's maximum), extended by
``--extend-inimask`` pixels and given a raised-cosine edge ``--width-soft-edge`` pixels wide
(:func:`vitrify.core.masks.mask_from_map`). Output ``mask.mrc`` (values in [0, 1], the pixel size in
its header), node ``Mask3D.mrc``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.jobs._preprocess_io import write_output_nodes
from vitrify.jobs.options.mask_create import Options, job_star_from_options, options_from_job_star


def read_map(path: str, pixel_size_angst: float = -1.0, field: str = "fn_in"):
    """``((n, n, n) float32 torch map, pixel size Å)``; InputError for a missing, non-cubic or non-finite map."""
    import torch

    from vitrify.io.mrc import read_mrc

    if not Path(path).is_file():
        raise InputError("file not found", path=path, field=field, expected="an MRC map")
    data, header_pixel = read_mrc(path, require_finite=True)
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise InputError(f"map of shape {data.shape}", path=path, field=field, expected="a cubic 3D map")
    pixel = pixel_size_angst if pixel_size_angst > 0 else header_pixel
    if not pixel > 0:
        raise InputError("no pixel size in the header", path=path, field="angpix", expected="--angpix")
    return torch.from_numpy(data.copy()), float(pixel)


def run(options: Options, job_dir: str | Path) -> Path:
    """Make ``job_dir/mask.mrc``; return its path."""
    from vitrify.core.filters import lowpass_filter
    from vitrify.core.masks import mask_from_map
    from vitrify.io.mrc import write_mrc

    job_dir = Path(job_dir)
    volume, pixel = read_map(options.input_map, options.pixel_size_angst)
    if options.lowpass_angst > 0:
        volume = lowpass_filter(volume, options.lowpass_angst, pixel, ndim=3)
    threshold = options.threshold_of_max * float(volume.max()) if options.threshold_of_max > 0 else options.threshold
    mask = mask_from_map(volume, threshold, options.extend_px, options.soft_edge_px)
    output = job_dir / "mask.mrc"
    write_mrc(output, mask.numpy(), pixel)
    write_output_nodes(job_dir, [(output, "Mask3D.mrc")])
    logging.getLogger(f"vitrify.job.{job_dir.resolve()}").info(
        "mask: %.1f%% of the box >= 0.5, threshold %g, extend %g px, soft edge %g px",
        100 * float((mask >= 0.5).double().mean()), threshold, options.extend_px, options.soft_edge_px)
    return output


__all__ = ["Options", "job_star_from_options", "options_from_job_star", "read_map", "run"]

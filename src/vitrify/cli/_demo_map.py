"""The demo's 3D maps against the truth: FSC of the initial model and of the refined map to the
structure's own map.

The truth map is computed from the simulated structure at the map's box and pixel size
(:func:`vitrify.sim.maps.simulate_map`); a de novo model has its own orientation, origin and
hand (and a refinement keeps its reference's), so each map is first aligned onto the truth
(:func:`vitrify.ml.mapalign.align_maps`, both hands tried). Written beside the project:
``truth_map.mrc`` and ``<name>_aligned.mrc`` (same box and pixel size), so that ChimeraX shows
them superposed.
"""

from __future__ import annotations

from pathlib import Path

from vitrify.io.errors import InputError


def truth_mask(truth, pixel_size_angst: float):
    """``(n, n, n)`` soft mask of the true map by the recipe of vitrify auto's automatic mask (low-pass
    15 Å, 0.2 of the maximum, extended 3 px, soft edge 6 px): the region a masked FSC to the truth covers."""
    from vitrify.core.filters import lowpass_filter
    from vitrify.core.masks import mask_from_map

    low = lowpass_filter(truth.float(), 15.0, pixel_size_angst, ndim=3)
    return mask_from_map(low, 0.2 * float(low.max()), 3.0, 6.0)


def compare_to_truth(out: Path, path: Path, structure: str, name: str, data_star: Path | None,
                     start=None) -> dict:
    """FSC of the map ``path`` to the truth once aligned (resolutions at 0.5 and 0.143, unmasked and in
    :func:`truth_mask`; particles in ``data_star``); writes ``out/truth_map.mrc`` and
    ``out/<name>_aligned.mrc``. ``start``: the alignment of a map in the same frame (the refinement of
    this one, or the model it started from) to refine instead of searching all rotations; the result's
    ``"alignment"`` is this map's."""
    import torch

    from vitrify.core.fsc import fsc, resolution_at_threshold
    from vitrify.io.mrc import read_mrc, write_mrc
    from vitrify.io.star import read_star
    from vitrify.ml.mapalign import align_maps
    from vitrify.sim.maps import MapOptions, simulate_map
    from vitrify.sim.structures import load_structure

    if not path.is_file():
        raise InputError("the job wrote no map", path=path)
    volume, pixel = read_mrc(path)
    box, pixel = int(volume.shape[-1]), float(pixel)
    truth = torch.as_tensor(simulate_map(load_structure(structure), MapOptions(box, pixel))).float()
    aligned = align_maps(torch.as_tensor(volume).float(), truth, start=start)
    mask = truth_mask(truth, pixel)
    curve, masked = fsc(aligned.aligned, truth), fsc(aligned.aligned * mask, truth * mask)
    truth_path, aligned_path = out / "truth_map.mrc", out / f"{name}_aligned.mrc"
    write_mrc(truth_path, truth.numpy(), pixel)
    write_mrc(aligned_path, aligned.aligned.numpy(), pixel)
    particles = len(read_star(data_star)["particles"]) if data_star is not None and data_star.is_file() else 0
    return {"map": str(path), "box_px": box, "pixel_size_angst": pixel, "particles": particles,
            "fsc_05_angst": resolution_at_threshold(curve, box, pixel, 0.5),
            "fsc_0143_angst": resolution_at_threshold(curve, box, pixel, 0.143),
            "masked_fsc_05_angst": resolution_at_threshold(masked, box, pixel, 0.5),
            "masked_fsc_0143_angst": resolution_at_threshold(masked, box, pixel, 0.143),
            "hand_flipped": bool(aligned.mirrored), "truth_map": str(truth_path), "aligned_map": str(aligned_path),
            "chimerax": f"chimerax {truth_path} {aligned_path}", "alignment": aligned}


def map_against_truth(out: Path, job_dir: Path, structure: str, start=None) -> dict:
    """FSC of ``job_dir/initial_model.mrc`` to the truth (resolutions at 0.5 and 0.143, particles used)."""
    data = sorted(job_dir.glob("run_it*_data.star"))[-1:]
    return compare_to_truth(out, job_dir / "initial_model.mrc", structure, "initial_model",
                            data[0] if data else None, start)

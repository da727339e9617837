"""The demo's 3D map against the truth: FSC of the initial model to the structure's own map.

The truth map is computed from the simulated structure at the map's box and pixel size
(:func:`vitrify.sim.maps.simulate_map`); a de novo model has its own orientation, origin and
hand, so it is first aligned onto the truth (:func:`vitrify.ml.mapalign.align_maps`, both hands
tried). Written beside the project: ``truth_map.mrc`` and ``initial_model_aligned.mrc`` (same
box and pixel size), so that ChimeraX shows them superposed.
"""

from __future__ import annotations

from pathlib import Path

from vitrify.io.errors import InputError


def map_against_truth(out: Path, job_dir: Path, structure: str) -> dict:
    """FSC of ``job_dir/initial_model.mrc`` to the truth (resolutions at 0.5 and 0.143, particles used)."""
    import torch

    from vitrify.core.fsc import fsc, resolution_at_threshold
    from vitrify.io.mrc import read_mrc, write_mrc
    from vitrify.io.star import read_star
    from vitrify.ml.mapalign import align_maps
    from vitrify.sim.maps import MapOptions, simulate_map
    from vitrify.sim.structures import load_structure

    path = job_dir / "initial_model.mrc"
    if not path.is_file():
        raise InputError("the initial model job wrote no map", path=path)
    volume, pixel = read_mrc(path)
    box = int(volume.shape[-1])
    truth = torch.as_tensor(simulate_map(load_structure(structure), MapOptions(box, float(pixel)))).float()
    aligned = align_maps(torch.as_tensor(volume).float(), truth)
    curve = fsc(aligned.aligned, truth)
    write_mrc(out / "truth_map.mrc", truth.numpy(), float(pixel))
    write_mrc(out / "initial_model_aligned.mrc", aligned.aligned.numpy(), float(pixel))
    particles = 0
    for star in sorted(job_dir.glob("run_it*_data.star"))[-1:]:
        particles = len(read_star(star)["particles"])
    return {"map": str(path), "box_px": box, "pixel_size_angst": float(pixel), "particles": particles,
            "fsc_05_angst": resolution_at_threshold(curve, box, float(pixel), 0.5),
            "fsc_0143_angst": resolution_at_threshold(curve, box, float(pixel), 0.143),
            "hand_flipped": bool(aligned.mirrored), "truth_map": str(out / "truth_map.mrc"),
            "aligned_map": str(out / "initial_model_aligned.mrc"),
            "chimerax": f"chimerax {out / 'truth_map.mrc'} {out / 'initial_model_aligned.mrc'}"}

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


def compare_to_truth(out: Path, path: Path, structure: str, name: str, data_star: Path | None) -> dict:
    """FSC of the map ``path`` to the truth once aligned (resolutions at 0.5 and 0.143, particles in
    ``data_star``); writes ``out/truth_map.mrc`` and ``out/<name>_aligned.mrc``."""
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
    box = int(volume.shape[-1])
    truth = torch.as_tensor(simulate_map(load_structure(structure), MapOptions(box, float(pixel)))).float()
    aligned = align_maps(torch.as_tensor(volume).float(), truth)
    curve = fsc(aligned.aligned, truth)
    truth_path, aligned_path = out / "truth_map.mrc", out / f"{name}_aligned.mrc"
    write_mrc(truth_path, truth.numpy(), float(pixel))
    write_mrc(aligned_path, aligned.aligned.numpy(), float(pixel))
    particles = len(read_star(data_star)["particles"]) if data_star is not None and data_star.is_file() else 0
    return {"map": str(path), "box_px": box, "pixel_size_angst": float(pixel), "particles": particles,
            "fsc_05_angst": resolution_at_threshold(curve, box, float(pixel), 0.5),
            "fsc_0143_angst": resolution_at_threshold(curve, box, float(pixel), 0.143),
            "hand_flipped": bool(aligned.mirrored), "truth_map": str(truth_path), "aligned_map": str(aligned_path),
            "chimerax": f"chimerax {truth_path} {aligned_path}"}


def map_against_truth(out: Path, job_dir: Path, structure: str) -> dict:
    """FSC of ``job_dir/initial_model.mrc`` to the truth (resolutions at 0.5 and 0.143, particles used)."""
    data = sorted(job_dir.glob("run_it*_data.star"))[-1:]
    return compare_to_truth(out, job_dir / "initial_model.mrc", structure, "initial_model",
                            data[0] if data else None)

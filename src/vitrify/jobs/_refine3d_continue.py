"""``vitrify refine3d --continue run_itNNN_optimiser.star``: go on from a written iteration.

RELION continues an auto-refinement from the optimiser file of an iteration; that iteration's
files hold everything: ``run_itNNN_data.star`` (particles with their poses, origins and
``rlnRandomSubset``), ``run_itNNN_half1/2_class001.mrc`` (the halves' maps), ``run_itNNN_half1/2_model.star``
(noise spectra, offset prior) and the optimiser's bookkeeping (sampling, window, convergence counters).
The command line may change threads, device and the iteration limit; the rest comes from the files.
"""

from __future__ import annotations

import dataclasses
import math
import re
from functools import partial
from pathlib import Path

import numpy as np
import torch

from vitrify.io.errors import InputError
from vitrify.io.star import read_star

_STEM = re.compile(r"^(?P<root>.+)_it(?P<it>\d{3,})_optimiser\.star$")


def optimiser_path(value: str) -> Path:
    """The optimiser file named by ``--continue`` (a job directory: its last ``run_itNNN_optimiser.star``)."""
    path = Path(value)
    if path.is_dir():
        found = sorted(path.glob("*_it[0-9][0-9][0-9]*_optimiser.star"), key=lambda p: int(_STEM.match(p.name)["it"]))
        if not found:
            raise InputError("no run_itNNN_optimiser.star in the directory", path=path, field="--continue",
                             expected="a Refine3D job directory with a written iteration")
        return found[-1]
    if not path.exists():
        raise InputError("file not found", path=path, field="--continue", expected="a run_itNNN_optimiser.star")
    if not _STEM.match(path.name):
        raise InputError("not an iteration's optimiser file", path=path, field="--continue",
                         expected="run_itNNN_optimiser.star")
    return path


def _iteration_files(path: Path) -> dict[str, Path]:
    stem = str(path)[: -len("_optimiser.star")]
    files = {"data": Path(f"{stem}_data.star"), "sampling": Path(f"{stem}_sampling.star")}
    for h in (1, 2):
        files[f"half{h}"] = Path(f"{stem}_half{h}_class001.mrc")
        files[f"half{h}_model"] = Path(f"{stem}_half{h}_model.star")
    for name, p in files.items():
        if not p.exists():
            raise InputError(f"the iteration's {name} file is missing", path=p, field="--continue",
                             expected="every file of the iteration (data, sampling, half maps and models)")
    return files


def _state(general: dict):
    from vitrify.ml.refine3d import RefineState

    def value(name, default=math.inf):
        v = float(general.get(name, default))
        return math.inf if v == -999.0 else v

    best = float(general.get("rlnBestResolutionThusFar", 0.0))
    return RefineState(
        iteration=int(general["rlnCurrentIteration"]), healpix_order=int(general["vtfHealpixOrder"]),
        offset_range_px=float(general["vtfOffsetRangePx"]), offset_step_px=float(general["vtfOffsetStepPx"]),
        radius=int(general["vtfWindowRadius"]), resolution_angst=value("rlnCurrentResolution"),
        best_resolution_angst=1.0 / best if best > 0 else math.inf,
        iters_wo_gain=int(general["rlnNumberOfIterWithoutResolutionGain"]),
        iters_wo_large_changes=int(general["rlnNumberOfIterWithoutChangingAssignments"]),
        change_deg=value("rlnChangesOptimalOrientations"), change_offset_px=value("rlnChangesOptimalOffsets"),
        smallest_change_deg=value("rlnSmallestChangesOrientations"),
        smallest_change_offset_px=value("rlnSmallestChangesOffsets"),
        converged=bool(int(general.get("rlnHasConverged", 0))))


def _options(options, general: dict, sampling: dict, files: dict[str, Path]):
    mask = str(general.get("rlnSolventMaskName", "None"))
    return dataclasses.replace(
        options, input_star=str(files["data"]), reference=str(files["half1"]), continue_from="",
        particle_diameter_angst=float(general["rlnParticleDiameter"]), symmetry=str(sampling["rlnSymmetryGroup"]),
        solvent_mask="" if mask in ("None", "") else mask,
        solvent_fsc=bool(int(general.get("rlnDoSolventFscCorrection", 0))),
        local_order=int(general.get("rlnAutoLocalSearchesHealpixOrder", options.local_order)),
        low_resol_join_halves_angst=float(general.get("rlnJoinHalvesUntilThisResolution",
                                                      options.low_resol_join_halves_angst)),
        seed=int(general.get("rlnRandomSeed", options.seed)))


def _noise(model_star: dict, groups: int, n: int, fallback: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Noise spectra ``(G, n//2+1)`` and the offset prior's sigma (Å) of a half's model.star."""
    sigma2 = fallback.clone()
    for g in range(groups):
        table = model_star.get(f"model_optics_group_{g + 1}")
        if table is None:
            continue
        idx = torch.tensor(np.array(table["rlnSpectralIndex"], dtype=np.int64))
        sigma2[g, idx] = torch.tensor(np.array(table["rlnSigma2Noise"], dtype=np.float64), dtype=sigma2.dtype)
    return sigma2, float(model_star["model_general"]["rlnSigmaOffsetsAngst"])


def resume(options, device: torch.device, log):
    """A :class:`vitrify.jobs.refine3d.Setup` at the iteration of ``options.continue_from``."""
    from vitrify.io.mrc import read_mrc
    from vitrify.jobs._class2d_data import check_memory, load_particles, validate_input
    from vitrify.jobs._ranks import attach_half_ranks, half_shards, join_ranks
    from vitrify.jobs._refine3d_input import input_angles, random_subsets
    from vitrify.jobs._refine3d_setup import (Setup, apply_input_angles, engine_settings, local_estep_function,
                                              masks, refine_settings)
    from vitrify.ml.refine3d import GoldStandard, make_halves
    from vitrify.ml.window import make_window

    path = optimiser_path(options.continue_from)
    files = _iteration_files(path)
    general = read_star(path)["optimiser_general"]
    if int(general.get("vtfFinalDone", 0)):
        raise InputError("this refinement has finished (its final iteration is written)", path=path,
                         field="--continue", expected="an optimiser file of an iteration before the final one")
    state = _state(general)
    options = _options(options, general, read_star(files["sampling"])["sampling_general"], files)
    inp = validate_input(options.input_star, 1, options.do_ctf)
    diameter_px = options.particle_diameter_angst / inp.pixel_size_angst
    subsets = random_subsets(inp)
    if subsets is None:
        raise InputError("no rlnRandomSubset column", path=files["data"], field="rlnRandomSubset",
                         expected="the half-set of every particle")
    solvent, fsc_mask = masks(options, inp, diameter_px)
    ranks, device = join_ranks(device, inp.n_particles, [int((subsets == h).sum()) for h in (1, 2)])
    rows, local_subsets, index = half_shards(subsets, ranks)  # this rank's rows of each half (all alone)
    check_memory(inp, device, len(rows))
    window = make_window(inp.box_px)
    load = partial(load_particles, inp, window, diameter_px, options.do_ctf, options.ctf_intact_first_peak, device)
    particles = load(rows)
    volumes = tuple(torch.as_tensor(read_mrc(files[f"half{h}"])[0]).float().to(device) for h in (1, 2))
    models = [read_star(files[f"half{h}_model"]) for h in (1, 2)]
    offsets = tuple(float(m["model_general"]["rlnSigmaOffsetsAngst"]) / inp.pixel_size_angst for m in models)
    engine = engine_settings(options, diameter_px, device)
    halves, local = make_halves(particles, local_subsets, volumes, window, engine, state, inp.pixel_size_angst,
                                offsets)
    attach_half_ranks(halves, index, ranks, inp.group_index, load)
    for ref, m in zip(halves, models):
        ref.model.sigma2 = _noise(m, particles.n_groups, inp.box_px, ref.model.sigma2)[0]
    apply_input_angles(halves, [torch.as_tensor(rows)[i.cpu()] for i in local], input_angles(inp))
    log.info("continuing from %s (iteration %d, order %d, resolution %.2f Å)", path.name, state.iteration,
             state.healpix_order, state.resolution_angst)
    gold = GoldStandard(refine_settings(options, inp, diameter_px), halves, state, solvent.to(device),
                        None if fsc_mask is None else fsc_mask.to(device), local_estep_function())
    return Setup(options, inp, diameter_px, subsets, index, gold, ranks)

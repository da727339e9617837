"""Refine3D output in RELION-4 form.

Per iteration ``NNN`` (root ``run``): ``run_itNNN_half1_class001.mrc`` / ``half2`` (the halves' maps,
pixel size in the header), ``run_itNNN_half1_model.star`` / ``half2`` (each half's spectra, with the
gold-standard FSC), ``run_itNNN_data.star`` (every input column plus angles, origins in Å,
rlnMaxValueProbDistribution, rlnLogLikeliContribution, rlnRandomSubset), ``run_itNNN_optimiser.star``
(RELION's auto-refine bookkeeping, read back by ``--continue``) and ``run_itNNN_sampling.star``.
At the end: ``run_class001.mrc`` (both halves joined, to Nyquist), ``run_half1_class001_unfil.mrc`` /
``half2`` (unfiltered half maps for PostProcess), ``run_model.star``, ``run_data.star``,
``run_optimiser.star``, ``run_sampling.star`` and the PNGs ``run_fsc.png`` (gold-standard FSC) and
``run_slices.png`` (central sections).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vitrify.io.atomic import atomic_path
from vitrify.io.mrc import write_mrc
from vitrify.jobs._initialmodel_output import data_table_3d, model_blocks_3d
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.refine3d import RefineState

NOT_COMPUTED = -999.0


def iteration_paths(job_dir: Path, root: str, it: int) -> dict[str, Path]:
    """Paths of one iteration's files."""
    stem = f"{job_dir / root}_it{it:03d}"
    out = {name: Path(f"{stem}_{name}.star") for name in ("data", "optimiser", "sampling")}
    for h in (1, 2):
        out[f"half{h}"] = Path(f"{stem}_half{h}_class001.mrc")
        out[f"half{h}_model"] = Path(f"{stem}_half{h}_model.star")
    return out


def final_paths(job_dir: Path, root: str) -> dict[str, Path]:
    """Paths of the final files (RELION's names without an iteration number)."""
    stem = str(job_dir / root)
    out = {name: Path(f"{stem}_{name}.star") for name in ("model", "data", "optimiser", "sampling")}
    out["class001"] = Path(f"{stem}_class001.mrc")
    for h in (1, 2):
        out[f"half{h}"] = Path(f"{stem}_half{h}_class001_unfil.mrc")
    out["fsc_png"] = Path(f"{stem}_fsc.png")
    out["slices_png"] = Path(f"{stem}_slices.png")
    return out


def write_map(path: Path, volume: torch.Tensor, pixel_size_angst: float) -> None:
    """One ``(n, n, n)`` map (float32, pixel size in the header; written atomically)."""
    write_mrc(path, volume.detach().cpu().float().numpy(), pixel_size_angst)


def model_star(model: MlModel, state: RefineState, map_path: Path, rel, group_names: list[str],
               group_counts: list[int], accuracy_deg: float) -> dict:
    """``model.star`` blocks of one half (or of the joined map): InitialModel's blocks plus the
    gold-standard FSC (``rlnGoldStandardFsc``), ``rlnEstimatedResolution`` and ``rlnCurrentResolution``."""
    blocks = model_blocks_3d(model, {"class001": map_path}, rel, group_names, group_counts, accuracy_deg)
    n = model.box_px
    resolution = state.resolution_angst if math.isfinite(state.resolution_angst) else NOT_COMPUTED
    blocks["model_general"]["rlnCurrentResolution"] = resolution
    blocks["model_general"]["rlnCurrentImageSize"] = min(n, 2 * (state.radius + 1))
    blocks["model_classes"]["rlnEstimatedResolution"] = resolution
    curve = state.fsc.double().numpy() if state.fsc is not None else np.zeros(n // 2 + 1)
    table = blocks["model_class_1"]
    table["rlnGoldStandardFsc"] = curve[: len(table)]
    f = np.clip(curve[: len(table)], 0.001, 0.999)
    table["rlnSsnrMap"] = f / (1 - f)
    return blocks


def merged_particles(halves, index: list[torch.Tensor], n_particles: int) -> tuple[ParticleSet, torch.Tensor]:
    """The halves' assignments back in input order: a :class:`ParticleSet` (no images) and the
    Euler angles ``(N, 3)``."""
    dev = torch.device("cpu")
    out = ParticleSet(ft=torch.zeros(n_particles, 1, dtype=torch.complex64), ctf=torch.zeros(n_particles, 1),
                      group=torch.zeros(n_particles, dtype=torch.long), n_groups=halves[0].particles.n_groups,
                      offset_px=torch.zeros(n_particles, 2))
    angles = torch.zeros(n_particles, 3, dtype=torch.float64)
    for ref, idx in zip(halves, index):
        p, i = ref.particles, idx.to(dev)
        for name in ("group", "offset_px", "class_index", "psi_deg", "pmax", "n_significant", "log_likelihood"):
            getattr(out, name)[i] = getattr(p, name).to(dev)
        angles[i] = ref.angles_deg.to(dev)
    return out, angles


def data_star_table(data: pd.DataFrame, merged: ParticleSet, angles: torch.Tensor, subsets: torch.Tensor,
                    pixel_size_angst: float, image_names: pd.Series | None) -> pd.DataFrame:
    """data.star rows: the input's plus angles, origins (Å), pmax, log-likelihood and rlnRandomSubset."""
    out = data_table_3d(data, merged, angles, pixel_size_angst, image_names)
    out["rlnRandomSubset"] = subsets.cpu().numpy().astype(np.int64)
    return out


def optimiser_block(state: RefineState, options, paths: dict[str, Path], rel, seed: int) -> dict:
    """``optimiser_general``: RELION's auto-refine fields (what ``--continue`` reads back)."""
    def finite(v: float) -> float:
        return float(v) if math.isfinite(v) else NOT_COMPUTED

    return {
        "rlnOutputRootName": rel(paths["root"]), "rlnModelStarFile": rel(paths["half1_model"]),
        "rlnModelStarFile2": rel(paths["half2_model"]), "rlnExperimentalDataStarFile": rel(paths["data"]),
        "rlnOrientSamplingStarFile": rel(paths["sampling"]), "rlnCurrentIteration": state.iteration,
        "rlnNumberOfIterations": options.max_iter, "rlnDoSplitRandomHalves": 1, "rlnJoinHalvesUntilThisResolution":
            options.low_resol_join_halves_angst, "rlnAdaptiveOversampleOrder": 1,
        "rlnAdaptiveOversampleFraction": 0.999, "rlnRandomSeed": seed,
        "rlnParticleDiameter": options.particle_diameter_angst, "rlnWidthMaskEdge": 5, "rlnDoZeroMask": 1,
        "rlnDoSolventFlattening": 1, "rlnSolventMaskName": options.solvent_mask or "None",
        "rlnDoSolventFscCorrection": int(options.solvent_fsc), "rlnIncrementImageSize": 10,
        "rlnDoAutoRefine": 1, "rlnAutoLocalSearchesHealpixOrder": options.local_order,
        "rlnNumberOfIterWithoutResolutionGain": state.iters_wo_gain,
        "rlnBestResolutionThusFar": 1.0 / state.best_resolution_angst if math.isfinite(state.best_resolution_angst)
        else 0.0,
        "rlnNumberOfIterWithoutChangingAssignments": state.iters_wo_large_changes,
        "rlnChangesOptimalOrientations": finite(state.change_deg),
        "rlnChangesOptimalOffsets": finite(state.change_offset_px),
        "rlnSmallestChangesOrientations": finite(state.smallest_change_deg),
        "rlnSmallestChangesOffsets": finite(state.smallest_change_offset_px),
        "rlnHasConverged": int(state.converged), "rlnCurrentImageSize": 2 * (state.radius + 1),
        "rlnCurrentResolution": finite(state.resolution_angst), "rlnDoCorrectCtf": int(options.do_ctf),
        "rlnDoIgnoreCtfUntilFirstPeak": int(options.ctf_intact_first_peak), "rlnRefsAreCtfCorrected": 1,
        "rlnTau2FudgeArg": options.tau2_fudge, "rlnDoMapEstimation": 1,
        "vtfHealpixOrder": state.healpix_order, "vtfOffsetRangePx": state.offset_range_px,
        "vtfOffsetStepPx": state.offset_step_px, "vtfWindowRadius": state.radius, "vtfFinalDone": int(state.final),
    }


def write_fsc_png(path: Path, curve: torch.Tensor, box_px: int, pixel_size_angst: float, resolution: float,
                  title: str) -> None:
    """PNG of the gold-standard FSC against resolution, with the 0.143 line and the resolution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = curve.double().cpu().numpy()
    s = np.arange(len(c)) / (box_px * pixel_size_angst)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(s[1:], c[1:], color="tab:blue", label="gold-standard FSC")
    ax.axhline(0.143, color="grey", linestyle="--", linewidth=0.8)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=0.8)
    if math.isfinite(resolution) and resolution > 0:
        ax.axvline(1 / resolution, color="tab:red", linewidth=0.8, label=f"0.143: {resolution:.2f} Å")
    ax.set_xlabel("resolution (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)

"""The refine half of the demo's report (``vitrify.cli._demo_refine``, ``_demo_pipeline_report``) against
ground truth, on a tiny project: half maps of the simulated adenylate-kinase map plus noise of a known
kind, the real mask-create and postprocess jobs on them, then the report's numbers and words.

Independent noise in the halves: the post-processed resolution is one the truth supports and the report
says so. Noise shared by the halves (what non-independent half-sets give): the halves agree beyond what
the map's FSC to the truth supports, post-processing reports that, and the report must call it overstated.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from vitrify.cli._demo_pipeline_report import _refined_text
from vitrify.cli._demo_refine import refined_summary, supported_by_truth
from vitrify.core.fsc import fsc, resolution_at_threshold
from vitrify.io.mrc import write_mrc
from vitrify.io.star import read_star, write_star
from vitrify.jobs import mask_create, postprocess
from vitrify.jobs.base import run_job
from vitrify.ml.mapalign import Alignment

BOX, PIXEL, N_PARTICLES = 32, 3.0, 57
JOBS = {"refine3d": "Refine3D/job010/", "mask_create": "MaskCreate/job011/", "postprocess": "PostProcess/job012/"}


@pytest.fixture(scope="module")
def truth() -> torch.Tensor:
    from vitrify.sim.maps import MapOptions, simulate_map
    from vitrify.sim.structures import load_structure

    return torch.as_tensor(simulate_map(load_structure("adk"), MapOptions(BOX, PIXEL))).float()


def _project(root, truth: torch.Tensor, shared: float, own: float, seed: int):
    """Refine3D, MaskCreate and PostProcess jobs of halves ``truth + shared noise + own noise``."""
    g = torch.Generator().manual_seed(seed)
    sigma = float(truth.std())
    common = shared * sigma * torch.randn(truth.shape, generator=g)
    halves = [truth + common + own * sigma * torch.randn(truth.shape, generator=g) for _ in range(2)]
    refine = root / "project" / JOBS["refine3d"]
    refine.mkdir(parents=True)
    for h, volume in enumerate(halves, 1):
        write_mrc(refine / f"run_half{h}_class001_unfil.mrc", volume.numpy(), PIXEL)
    write_mrc(refine / "run_class001.mrc", ((halves[0] + halves[1]) / 2).numpy(), PIXEL)
    gold = resolution_at_threshold(fsc(halves[0].double(), halves[1].double()), BOX, PIXEL, 0.143)
    write_star(refine / "run_model.star", {"model_general": pd.DataFrame({"rlnCurrentResolution": [gold]})})
    write_star(refine / "run_data.star", {"particles": pd.DataFrame({"rlnAngleRot": [0.0] * N_PARTICLES})})
    (refine / "run.log").write_text("2026-12-07 01:19:18,007 INFO stopped at the iteration limit (3)\n")
    project = root / "project"
    run_job(mask_create.run, mask_create.Options(str(refine / "run_class001.mrc"), threshold_of_max=0.2,
                                                 soft_edge_px=6.0), project / JOBS["mask_create"])
    run_job(postprocess.run, postprocess.Options(str(refine / "run_half1_class001_unfil.mrc"),
                                                 mask=str(project / JOBS["mask_create"] / "mask.mrc")),
            project / JOBS["postprocess"])
    return project, (halves[0] + halves[1]) / 2, gold


def _summary(root, project) -> dict:
    """The report's numbers; the maps are in the truth's frame, so the alignment starts from the identity
    (the global search is tested with the initial model in test_cli_demo)."""
    identity = Alignment(torch.zeros(0), torch.eye(3), torch.zeros(3), False, 0.0)
    return refined_summary(root, project, JOBS, "adk", start=identity)


def _text(refined: dict) -> str:
    out = io.StringIO()
    Console(file=out, width=400).print(_refined_text(refined), soft_wrap=True)
    return out.getvalue()


def test_report_gives_the_truths_fsc_the_reported_resolutions_and_files(tmp_path, truth):
    project, average, gold = _project(tmp_path, truth, shared=0.0, own=3.0, seed=3)
    refined = _summary(tmp_path, project)
    # the FSC to the truth, recomputed here (the map is already in the truth's frame)
    curve = fsc(average.double(), truth.double())
    for key, threshold in (("fsc_05_angst", 0.5), ("fsc_0143_angst", 0.143)):
        shell = BOX * PIXEL / resolution_at_threshold(curve, BOX, PIXEL, threshold)
        assert BOX * PIXEL / refined[key] == pytest.approx(shell, abs=1.0), (key, refined[key])
    assert refined["hand_flipped"] is False and refined["particles"] == N_PARTICLES
    general = read_star(project / JOBS["postprocess"] / "postprocess.star")["general"]
    post = float(general["rlnFinalResolution"].iloc[0] if hasattr(general, "iloc") else general["rlnFinalResolution"])
    assert refined["postprocess_angst"] == pytest.approx(post)
    assert refined["gold_standard_angst"] == pytest.approx(gold)
    # independent halves: both reported figures agree with the truth, and the report says so
    assert refined["gold_standard_honest"] is True and refined["postprocess_honest"] is True, refined
    text = _text(refined)
    assert f"used {N_PARTICLES} particles" in text and "stopped at the iteration limit (3)" in text
    assert f"{post:.1f} Å after post-processing" in text and "overstated" not in text
    assert text.count("the truth supports it") == 2
    files = refined["chimerax"].split()[1:]
    assert refined["chimerax"].startswith("chimerax ") and len(files) == 3
    assert all(Path(name).is_file() for name in files)


def test_report_calls_halves_that_agree_beyond_the_truth_overstated(tmp_path, truth):
    project, _, _ = _project(tmp_path, truth, shared=5.0, own=1.0, seed=4)
    refined = _summary(tmp_path, project)
    # the halves share their noise: post-processing reports what they agree on, the truth supports less
    assert refined["postprocess_angst"] < 0.8 * refined["masked_fsc_05_angst"], refined
    assert refined["postprocess_honest"] is False
    assert "finer than the truth supports (overstated)" in _text(refined)


def test_supported_by_truth_allows_one_shell_or_ten_percent():
    assert supported_by_truth(None, 20.0, 70, 3.2) is None
    assert supported_by_truth(19.0, 20.0, 70, 3.2) is True         # 0.6 shell finer
    assert supported_by_truth(17.5, 20.0, 70, 3.2) is False        # 1.6 shells and 12.5 % finer
    assert supported_by_truth(25.0, 20.0, 70, 3.2) is True         # coarser is always honest


def test_pose_errors_against_the_truth_up_to_one_rotation_and_the_hand():
    from vitrify.cli._demo_truth import pose_errors
    from vitrify.core.euler import euler_to_matrix, matrix_to_euler

    rng = np.random.default_rng(5)
    n = 60
    true_angles = rng.uniform([-180, 0, -180], [180, 180, 180], (n, 3))
    truth = pd.DataFrame({"rlnMicrographName": ["Movies/mov_00001.tiff"] * n, "rlnCoordinateX": rng.uniform(0, 900, n),
                          "rlnCoordinateY": rng.uniform(0, 900, n), "rlnAngleRot": true_angles[:, 0],
                          "rlnAngleTilt": true_angles[:, 1], "rlnAnglePsi": true_angles[:, 2]})
    true_r = euler_to_matrix(*(torch.as_tensor(true_angles[:, i]) for i in range(3)))
    frame = euler_to_matrix(torch.tensor(40.0), torch.tensor(70.0), torch.tensor(-20.0)).double()  # the map's own frame
    jitter = euler_to_matrix(*(torch.as_tensor(rng.normal(0, 2, n)) for _ in range(3)))
    refined_r = true_r @ frame @ jitter
    wrong = rng.permutation(n)[:15]                                    # a quarter assigned at random
    refined_r[wrong] = euler_to_matrix(*(torch.as_tensor(rng.uniform(-180, 180, 15)) for _ in range(3)))
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    for flipped, rotations in ((False, refined_r), (True, mirror @ refined_r @ mirror)):
        rot, tilt, psi = matrix_to_euler(rotations)
        data = truth.assign(rlnMicrographName="MotionCorr/job002/Movies/mov_00001.mrc",
                            rlnCoordinateX=truth["rlnCoordinateX"] + 3.0, rlnAngleRot=rot.numpy(),
                            rlnAngleTilt=tilt.numpy(), rlnAnglePsi=psi.numpy())
        found = pose_errors(data, truth, tolerance_px=10.0)
        assert found["matched"] == n and found["hand_flipped"] is flipped
        assert n - 15 - 3 <= found["within_10_deg"] <= n - 15 + 3 and found["median_deg"] < 6.0, found
    assert pose_errors(truth.assign(rlnMicrographName="Movies/mov_00002.tiff"), truth, 10.0)["matched"] == 0

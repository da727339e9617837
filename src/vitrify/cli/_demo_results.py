"""Collect what the demo's schemes produced and compare it with the truth: one summary dict.

The job directories come from the schemes' own record (``vitrify schemer --status``: node →
``JobType/jobNNN/``); the numbers from :mod:`vitrify.cli._demo_truth`. The summary holds only
JSON types, so ``vitrify demo`` can write it as ``demo_report.json``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vitrify.cli import _demo_truth as truth_cmp
from vitrify.io.errors import InputError
from vitrify.io.star import read_star
from vitrify.jobs.status import JobStatus

_ITERATION = re.compile(r"run_it(\d+)_data\.star$")


def scheme_jobs(project: Path, scheme: str) -> dict[str, str]:
    """``{node: "JobType/jobNNN/"}`` for the job nodes of ``scheme`` whose job succeeded."""
    from vitrify.pipeline.schemes import control

    status = control.scheme_status(project, scheme)
    return {job["node"]: job["job"] for job in status["jobs"]
            if job["has_started"] and job["status"] == JobStatus.SUCCEEDED}


def scheme_states(project: Path) -> dict[str, dict]:
    """``{scheme: {"state": ..., "current_node": ...}}`` for prep and proc; proc also gives the
    particles its class ranker kept (``current_nr_parts``) and how many 3D needs (``min_nr_parts_3d``)."""
    from vitrify.pipeline.schemes import control

    states = {}
    for name in ("prep", "proc"):
        status = control.scheme_status(project, name)
        states[name] = {key: status[key] for key in ("state", "current_node")}
        states[name].update({key: status["variables"][key] for key in ("current_nr_parts", "min_nr_parts_3d")
                             if key in status["variables"]})
    return states


def failed_jobs(project: Path) -> dict[str, str]:
    """``{"JobType/jobNNN/": last line of its run.err}`` for the schemes' failed jobs."""
    from vitrify.pipeline.schemes import control

    failed = {}
    for scheme in ("prep", "proc"):
        for job in control.scheme_status(project, scheme)["jobs"]:
            if job["has_started"] and job["status"] == JobStatus.FAILED:
                err = project / job["job"] / "run.err"
                lines = [x for x in err.read_text(errors="replace").splitlines() if x.strip()] \
                    if err.is_file() else []
                failed[job["job"]] = lines[-1] if lines else "(no message in run.err)"
    return failed


def last_iteration_data(job_dir: Path) -> Path:
    """The ``run_itNNN_data.star`` of the highest iteration in a Class2D job directory."""
    found = sorted((int(m.group(1)), p) for p in job_dir.glob("run_it*_data.star")
                   if (m := _ITERATION.search(p.name)))
    if not found:
        raise InputError("no run_itNNN_data.star: the 2D classification did not finish", path=job_dir)
    return found[-1][1]


def _pixel_scale(corrected_star: Path) -> float:
    """Movie pixels per micrograph pixel (the motion-correction binning)."""
    optics = read_star(corrected_star)["optics"]
    return float(optics["rlnMicrographPixelSize"].iloc[0] / optics["rlnMicrographOriginalPixelSize"].iloc[0])


def _motion(project: Path, corrected: Path, truth: dict) -> dict:
    table = truth_cmp.motion_errors(project, corrected, truth)
    return {"movies": len(table), "median_rms_px": float(table["rms_px"].median()),
            "max_rms_px": float(table["rms_px"].max()), "median_drift_px": float(table["drift_px"].median())}


def _ctf(ctf_star: Path, truth: dict) -> dict:
    table = truth_cmp.ctf_errors(ctf_star, truth)
    error = table["defocus_error_nm"].abs()
    return {"micrographs": len(table), "median_abs_defocus_error_nm": float(error.median()),
            "max_abs_defocus_error_nm": float(error.max()),
            "median_abs_astig_error_nm": float(table["astig_error_nm"].abs().median()),
            "defocus_range_nm": [float(table["defocus_true_nm"].min()), float(table["defocus_true_nm"].max())],
            "median_max_resolution_angst": float(table["max_resolution_angst"].median())}


def _class2d(job_dir: Path, truth: dict, tolerance_px: float, scale: float) -> dict:
    data_star = last_iteration_data(job_dir)
    table = truth_cmp.class_purity(data_star, truth, tolerance_px, scale)
    stem = data_star.name.replace("_data.star", "")
    return {"data_star": str(data_star), "gallery_png": str(data_star.with_name(f"{stem}_classes.png")),
            "classes_mrcs": str(data_star.with_name(f"{stem}_classes.mrcs")),
            "table": [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
                      for row in table.astype(object).to_dict("records")]}


def collect_results(project: Path, truth_star: Path, diameter_angst: float) -> dict:
    """Numbers for the report: motion, CTF, selection, picking, extraction and 2D classes vs truth.

    Parts whose job did not run are left out (the report says so).
    """
    truth = read_star(truth_star)
    jobs = {**scheme_jobs(project, "prep"), **scheme_jobs(project, "proc")}
    summary: dict = {"jobs": jobs, "failed": failed_jobs(project), "schemes": scheme_states(project),
                     "movies": len(truth["micrographs"]),
                     "true_particles": len(truth["particles"])}
    if "motioncorr" not in jobs:
        return summary
    corrected = project / jobs["motioncorr"] / "corrected_micrographs.star"
    scale = _pixel_scale(corrected)
    pixel_angst = float(read_star(corrected)["optics"]["rlnMicrographOriginalPixelSize"].iloc[0])
    tolerance = diameter_angst / 4 / pixel_angst  # half the particle radius, in movie pixels
    summary["match_tolerance_px"], summary["pixel_scale"] = tolerance, scale
    summary["motion"] = _motion(project, corrected, truth)
    if "ctffind" in jobs:
        summary["ctf"] = _ctf(project / jobs["ctffind"] / "micrographs_ctf.star", truth)
    if "select_mics" in jobs:
        selected = read_star(project / jobs["select_mics"] / "micrographs.star")["micrographs"]
        stems = set(selected["rlnMicrographName"].map(truth_cmp.movie_stem))
        summary["selected_micrographs"] = len(selected)
        summary["true_on_selected"] = int(truth["particles"]["rlnMicrographName"]
                                          .map(truth_cmp.movie_stem).isin(stems).sum())
    if "autopick" in jobs:
        summary["picking"] = truth_cmp.picking_scores(project, project / jobs["autopick"] / "autopick.star",
                                                      truth, tolerance, scale)
    if "extract" in jobs:
        particles = read_star(project / jobs["extract"] / "particles.star")["particles"]
        summary["extracted"] = len(particles)
        summary["extracted_real"] = int(truth_cmp.mark_true_particles(particles, truth["particles"],
                                                                      tolerance, scale).sum())
    if "class2d" in jobs:
        summary["class2d"] = _class2d(project / jobs["class2d"], truth, tolerance, scale)
    return summary

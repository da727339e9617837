"""The end of the demo's pipeline: the refined map against the truth, and the time each stage took.

- :func:`refined_summary`: the FSC of Refine3D's ``run_class001.mrc`` to the true map (aligned as the
  initial model is, :mod:`vitrify.cli._demo_map`; unmasked and in the true map's mask), the
  resolution vitrify reported (the gold-standard FSC of ``run_model.star`` and PostProcess's
  ``rlnFinalResolution``, which uses the solvent mask) and whether the truth supports each
  (:func:`supported_by_truth`: a half-map FSC of 0.143 stands for an FSC of 0.5 to the truth), the
  particles used (``run_data.star``) and the files to open in ChimeraX;
- :func:`stage_times`: from the schemes' own logs (``Schemes/*/schemer.log``, one time-stamped line
  when a job node starts and one when its job ends), how many times each node's job ran and for how
  long in all.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

from vitrify.cli._demo_map import compare_to_truth
from vitrify.cli._demo_truth import pose_errors
from vitrify.io.errors import InputError
from vitrify.io.star import read_star

_STARTED = re.compile(r"^(\S+ \S+) job (\S+): (?:running|continuing) (\S+)$")
_ENDED = re.compile(r"^(\S+ \S+) job (\S+): (\S+) (succeeded|failed|aborted)$")
#: scheme job nodes in the order of the pipeline, with the stage each belongs to
STAGE_OF = {"importmovies": "import", "motioncorr": "motion correction", "ctffind": "CTF",
            "select_mics": "micrograph selection", "autopick": "picking", "extract": "extraction",
            "class2d": "2D classification", "select_parts": "class ranker", "inimodel3d": "initial model",
            "refine3d": "3D refinement", "mask_create": "mask", "postprocess": "post-processing"}


def _value(path: Path, block: str, label: str) -> float | None:
    try:
        table = read_star(path)[block]
        return float(table[label] if not hasattr(table, "iloc") else table[label].iloc[0])
    except (InputError, OSError, KeyError, ValueError, TypeError, IndexError):
        return None


def refined_summary(out: Path, project: Path, jobs: dict[str, str], structure: str, start=None,
                    truth: tuple[Path, float, float] | None = None) -> dict:
    """The refined map against the truth, the resolution reported, particles used, files to open
    (``start``: an alignment onto the truth to refine instead of a global search, as
    :func:`vitrify.cli._demo_map.compare_to_truth`; ``truth``: ``(truth.star, match tolerance in movie
    pixels, movie pixels per micrograph pixel)`` to compare the refined poses with the true ones,
    :func:`vitrify.cli._demo_truth.pose_errors`)."""
    refine = project / jobs["refine3d"]
    result = compare_to_truth(out, refine / "run_class001.mrc", structure, "refined_map", refine / "run_data.star",
                              start)
    result["gold_standard_angst"] = _value(refine / "run_model.star", "model_general", "rlnCurrentResolution")
    if truth is not None and (refine / "run_data.star").is_file():
        truth_star, tolerance_px, scale = truth
        result["poses"] = pose_errors(read_star(refine / "run_data.star")["particles"],
                                      read_star(truth_star)["particles"], tolerance_px, scale)
    result["ended"] = _how_it_ended(refine / "run.log")
    files = [result["truth_map"], result["aligned_map"]]
    if "postprocess" in jobs:
        post = project / jobs["postprocess"]
        result["postprocess_angst"] = _value(post / "postprocess.star", "general", "rlnFinalResolution")
        result["bfactor_angst2"] = _value(post / "postprocess.star", "general", "rlnBfactorUsedForSharpening")
        result["postprocess_map"] = str(post / "postprocess.mrc")
        files.append(result["postprocess_map"])
    result["chimerax"] = "chimerax " + " ".join(files)
    box, pixel = result["box_px"], result["pixel_size_angst"]
    result["gold_standard_honest"] = supported_by_truth(result["gold_standard_angst"], result["fsc_05_angst"],
                                                        box, pixel)
    result["postprocess_honest"] = supported_by_truth(result.get("postprocess_angst"),
                                                      result["masked_fsc_05_angst"], box, pixel)
    return result


def supported_by_truth(reported_angst: float | None, truth_05_angst: float, box_px: int,
                       pixel_size_angst: float) -> bool | None:
    """Whether a reported (half-map FSC 0.143) resolution is one the truth supports: not finer than where
    the map's FSC to the true map falls to 0.5 (the equivalent criterion) by more than one Fourier shell
    and 10 % (issue 18's tolerance). None when nothing was reported.

    >>> supported_by_truth(10.9, 18.8, 70, 3.214), supported_by_truth(18.0, 18.8, 70, 3.214)
    (False, True)
    """
    if reported_angst is None or not reported_angst > 0:
        return None
    shells = box_px * pixel_size_angst / reported_angst - box_px * pixel_size_angst / truth_05_angst
    return bool(shells <= 1.0 or reported_angst >= 0.9 * truth_05_angst)


def _how_it_ended(run_log: Path) -> str:
    """``converged at iteration 12: ...`` or ``stopped at the iteration limit (10)`` from the job's log."""
    try:
        lines = run_log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    ends = [line.split(" INFO ", 1)[-1] for line in lines if "converged at iteration" in line
            or "stopped at the iteration limit" in line]
    return ends[-1].strip() if ends else ""


def _stamp(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timestamp()


def stage_times(project: Path) -> list[dict]:
    """``[{"node", "stage", "runs", "seconds"}]`` in pipeline order, from the schemes' logs."""
    started: dict[str, float] = {}
    totals: dict[str, list[float]] = {}
    for log in sorted((project / "Schemes").glob("*/schemer.log")):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if (match := _STARTED.match(line)) is not None:
                started[match.group(2)] = _stamp(match.group(1))
            elif (match := _ENDED.match(line)) is not None and match.group(2) in started:
                totals.setdefault(match.group(2), []).append(_stamp(match.group(1)) - started.pop(match.group(2)))
    order = list(STAGE_OF) + sorted(set(totals) - set(STAGE_OF))
    return [{"node": node, "stage": STAGE_OF.get(node, node), "runs": len(totals[node]),
             "seconds": sum(totals[node])} for node in order if node in totals]

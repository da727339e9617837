"""The 2D class gallery: the newest Class2D iteration, with class ranker scores and selection.

Class2D (RELION files): ``run_itNNN_model.star`` table ``model_classes`` (rlnReferenceImage
``k@Class2D/jobNNN/run_itNNN_classes.mrcs``, rlnClassDistribution, rlnEstimatedResolution).
Class ranker (``relion.select.class2dauto``, RELION's ``relion_class_ranker`` outputs): scores of
every class in ``rank_model.star`` (rlnClassScore), the selected classes in
``class_averages.star`` (rlnReferenceImage, with rlnClassScore or rlnPredictedClassScore); the
score threshold is the job's ``rank_threshold`` option.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from vitrify.io.errors import InputError
from vitrify.web._files import pipeline_state, read_star_cached, star_table

_ITERATION_MODEL = re.compile(r"run_it(\d+)_model\.star$")
_SCORE_LABELS = ("rlnClassScore", "rlnPredictedClassScore")


def newest_class2d_model(root: Path, job: str | None = None) -> Path | None:
    """The highest-iteration ``run_itNNN_model.star`` of ``job`` (default: the newest Class2D
    job that has one)."""
    try:
        procs = list(pipeline_state(root).processes.values())
    except InputError:
        return None
    names = [p.name for p in reversed(procs) if p.type_label.startswith("relion.class2d")]
    for name in ([job] if job else names):
        models = [(int(m.group(1)), p) for p in (root / name).glob("run_it*_model.star")
                  if (m := _ITERATION_MODEL.search(p.name))]
        for _, path in sorted(models, reverse=True):
            classes = path.with_name(path.name.replace("_model.star", "_classes.mrcs"))
            if classes.is_file():
                return path
    return None


def split_reference(reference: str) -> tuple[int, str] | None:
    """``"000003@Class2D/job007/run_it040_classes.mrcs"`` → ``(3, "Class2D/job007/run_it040_classes.mrcs")``.

    >>> split_reference("000003@Class2D/job007/run_it040_classes.mrcs")
    (3, 'Class2D/job007/run_it040_classes.mrcs')
    """
    number, sep, stack = str(reference).partition("@")
    if not sep or not number.strip().isdigit():
        return None
    return int(number), stack.strip()


def _ranker_job(root: Path) -> str | None:
    """The newest class ranker job: a Select job with rank_model.star or class_averages.star."""
    try:
        procs = list(pipeline_state(root).processes.values())
    except InputError:
        return None
    for proc in reversed(procs):
        if proc.type_label.startswith("relion.select") and any(
                (root / proc.name / f).is_file() for f in ("rank_model.star", "class_averages.star")):
            return proc.name
    return None


def _scores(table: pd.DataFrame | None) -> dict[tuple[int, str], float | None]:
    if table is None or "rlnReferenceImage" not in table.columns:
        return {}
    label = next((lab for lab in _SCORE_LABELS if lab in table.columns), None)
    found = {}
    for _, row in table.iterrows():
        key = split_reference(row["rlnReferenceImage"])
        if key is not None:
            found[key] = _number(row, label) if label else None
    return found


def _threshold(root: Path, job: str) -> float | None:
    table = star_table(root / job / "job.star", "joboptions_values")
    if table is None:
        return None
    options = dict(zip(table.iloc[:, 0].astype(str), table.iloc[:, 1].astype(str)))
    try:
        return float(options.get("rank_threshold", ""))
    except ValueError:
        return None


def ranking(root: Path) -> dict | None:
    """The newest class ranker's scores, selection and threshold; None when there is no ranker job."""
    job = _ranker_job(root)
    if job is None:
        return None
    scores = _scores(star_table(root / job / "rank_model.star", "model_classes"))
    selected_table = star_table(root / job / "class_averages.star")
    selected = _scores(selected_table)
    for key, score in selected.items():
        scores.setdefault(key, score)
    return {"job": job, "scores": scores, "selected": set(selected),
            "has_selection": selected_table is not None, "threshold": _threshold(root, job)}


def _number(row: pd.Series, label: str) -> float | None:
    try:
        value = float(row[label])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def class_gallery(root: Path, job: str | None = None) -> dict:
    """Classes of the newest Class2D iteration: image reference, distribution, resolution, ranker
    score (None without a ranker) and whether the ranker selected it; sorted by score then size."""
    model = newest_class2d_model(root, job)
    if model is None:
        return {"job": None, "classes": [], "ranker": None}
    table = star_table(model, "model_classes")
    general = (read_star_cached(model) or {}).get("model_general", {})
    rank = ranking(root)
    classes = []
    for _, row in (table if table is not None else pd.DataFrame()).iterrows():
        key = split_reference(row.get("rlnReferenceImage", ""))
        if key is None:
            continue
        score = rank["scores"].get(key) if rank else None
        classes.append({"number": key[0], "stack": key[1], "distribution": _number(row, "rlnClassDistribution"),
                        "resolution_angst": _number(row, "rlnEstimatedResolution"),
                        "score": score, "selected": bool(rank and key in rank["selected"])})
    classes.sort(key=lambda c: (-(c["score"] if c["score"] is not None else -1e9), -(c["distribution"] or 0.0)))
    ranker = None if rank is None else {
        "job": rank["job"], "threshold": rank["threshold"], "n_selected": len(rank["selected"]),
        "has_selection": rank["has_selection"],
        "stacks": sorted({stack for _, stack in rank["scores"]}),  # the class averages it ranked
    }
    job_dir = str(model.parent.relative_to(root)) + "/"
    return {"job": job_dir, "model": str(model.relative_to(root)), "classes": classes, "ranker": ranker,
            "resolution_angst": _general_number(general, "rlnCurrentResolution")}


def _general_number(block: object, label: str) -> float | None:
    try:
        return float(block[label]) if isinstance(block, dict) and label in block else None
    except (TypeError, ValueError):
        return None

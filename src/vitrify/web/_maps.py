"""3D maps of a project (initial model, refinement, post-processing) and their FSC curves.

RELION's files, the newest iteration's while a job runs:

- ``relion.initialmodel``: ``initial_model.mrc``, else the newest ``run_itNNN_class001.mrc``; no FSC;
  resolution rlnCurrentResolution of the newest ``run_itNNN_model.star``.
- ``relion.refine3d``: ``run_class001.mrc``, else the newest ``run_itNNN_half1_class001.mrc``; FSC
  from ``run_model.star`` (else the newest ``run_itNNN_half1_model.star``), table ``model_class_1``:
  rlnResolution (1/Å) and rlnGoldStandardFsc; resolution rlnCurrentResolution of ``model_general``.
- ``relion.postprocess``: ``postprocess.mrc``; FSC from ``postprocess.star``, table ``fsc``:
  rlnResolution and rlnFourierShellCorrelationCorrected; resolution rlnFinalResolution of ``general``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.web._files import pipeline_state, star_table, star_values

_ITERATION = re.compile(r"run_it(\d+)_")
#: job type prefix → (final map, iteration map glob, final FSC file, iteration FSC glob, FSC block,
#: FSC column, resolution block, resolution label)
_KINDS = {
    "relion.initialmodel": ("initial_model.mrc", "run_it*_class001.mrc", None, None, None, None,
                            "model_general", "rlnCurrentResolution"),
    "relion.refine3d": ("run_class001.mrc", "run_it*_half1_class001.mrc", "run_model.star",
                        "run_it*_half1_model.star", "model_class_1", "rlnGoldStandardFsc",
                        "model_general", "rlnCurrentResolution"),
    "relion.postprocess": ("postprocess.mrc", None, "postprocess.star", None, "fsc",
                           "rlnFourierShellCorrelationCorrected", "general", "rlnFinalResolution"),
}
MAX_MAPS = 6


def _newest(job_dir: Path, final: str | None, pattern: str | None) -> Path | None:
    if final and (job_dir / final).is_file():
        return job_dir / final
    if not pattern:
        return None
    found = [(int(m.group(1)), p) for p in job_dir.glob(pattern) if (m := _ITERATION.match(p.name))]
    return max(found)[1] if found else None


def fsc_curve(path: Path, block: str, column: str) -> dict | None:
    """``{"resolution_inv_angst": [...], "fsc": [...]}`` from a FSC table (None when absent)."""
    table = star_table(path, block)
    if table is None or "rlnResolution" not in table.columns or column not in table.columns:
        return None
    x = [float(v) for v in table["rlnResolution"]]
    y = [float(v) for v in table[column]]
    keep = [i for i in range(len(x)) if math.isfinite(x[i]) and math.isfinite(y[i])]
    return {"resolution_inv_angst": [x[i] for i in keep], "fsc": [y[i] for i in keep], "label": column}


def _resolution(path: Path | None, block: str, label: str) -> float | None:
    if path is None:
        return None
    try:
        value = float(star_values(path, block).get(label))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def job_map(root: Path, name: str, type_label: str) -> dict | None:
    """The map (and FSC curve, resolution) a 3D job has written so far; None when it has none."""
    kind = next((v for k, v in _KINDS.items() if type_label.startswith(k)), None)
    if kind is None:
        return None
    final_map, map_glob, final_fsc, fsc_glob, block, column, res_block, res_label = kind
    job_dir = root / name
    volume = _newest(job_dir, final_map, map_glob)
    if volume is None:
        return None
    fsc_file = _newest(job_dir, final_fsc, fsc_glob) if block else None
    model = fsc_file or _newest(job_dir, None, "run_it*_model.star")
    return {"job": name, "type": type_label, "map": str(volume.relative_to(root)),
            "fsc": fsc_curve(fsc_file, block, column) if fsc_file else None,
            "resolution_angst": _resolution(model, res_block, res_label)}


def project_maps(root: Path) -> list[dict]:
    """The newest :data:`MAX_MAPS` 3D jobs' maps and FSC curves, newest job first."""
    try:
        procs = list(pipeline_state(root).processes.values())
    except InputError:
        return []
    found = []
    for proc in reversed(procs):
        entry = job_map(root, proc.name, proc.type_label)
        if entry is not None:
            found.append(entry)
        if len(found) >= MAX_MAPS:
            break
    return found

"""Per-micrograph quality over acquisition time: drift, defocus, astigmatism, CTF fit, picks.

Read from the newest job of each type that has its output (RELION files): MotionCorr's
``corrected_micrographs.star`` (rlnAccumMotionTotal/Early/Late, Å), CtfFind's
``micrographs_ctf.star`` (rlnDefocusU/V, rlnCtfAstigmatism, rlnCtfMaxResolution, Å), AutoPick's
``autopick.star`` (one coordinate file per micrograph) and the micrograph Select's
``micrographs.star`` (which passed). The acquisition time of a micrograph comes from its movie's
EPU XML (``acquisitionDateTime``), else its SerialEM mdoc (``DateTime``), else the movie file's
time stamp. Thresholds are those of the schemes' ``relion.select`` job templates that select on
a value (``select_label`` between ``select_minval`` and ``select_maxval``, variables substituted).
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from vitrify.io.errors import InputError
from vitrify.web._files import count_loop_rows, file_key, memo_on_files, mtime_s, pipeline_state, star_table

#: metric key → (STAR label or None when derived, title, unit)
METRICS: dict[str, tuple[str | None, str, str]] = {
    "drift_angst": ("rlnAccumMotionTotal", "Total drift", "Å"),
    "defocus_angst": (None, "Defocus (mean of U, V)", "Å"),
    "astigmatism_angst": ("rlnCtfAstigmatism", "Astigmatism", "Å"),
    "ctf_max_resolution_angst": ("rlnCtfMaxResolution", "CTF max resolution", "Å"),
    "picks": (None, "Particles picked", "count"),
}
#: job type label prefix → the output STAR file the figures read
_SOURCES = {"relion.import": "movies.star", "relion.motioncorr": "corrected_micrographs.star",
            "relion.ctffind": "micrographs_ctf.star", "relion.autopick": "autopick.star"}
_NO_LIMIT = 9999.0  # RELION's "no threshold" (select_minval -9999, select_maxval 9999)
_EPU_TIME = re.compile(r"<(?:\w+:)?acquisitionDateTime>([^<]+)<")
_MDOC_TIME = re.compile(r"^\s*DateTime\s*=\s*(.+?)\s*$", re.MULTILINE)
_time_cache: dict[str, tuple[object, float | None]] = {}


def newest_output(root: Path, type_prefix: str, file: str) -> Path | None:
    """``<job>/<file>`` of the newest job of the type that has the file (a failed job's too)."""
    try:
        procs = list(pipeline_state(root).processes.values())
    except InputError:
        return None
    for proc in reversed(procs):
        if proc.type_label.startswith(type_prefix) and (root / proc.name / file).is_file():
            return root / proc.name / file
    return None


def _iso_time(text: str) -> float | None:
    text = text.strip().replace("Z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # .NET writes 7 fractional digits
    try:
        stamp = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()


def _mdoc_time(text: str) -> float | None:
    try:
        stamp = datetime.datetime.strptime(" ".join(text.split()), "%d-%b-%y %H:%M:%S")
    except ValueError:
        return None
    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()


def _first_match(path: Path, pattern: re.Pattern, parse) -> float | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = pattern.search(text)
    return parse(match.group(1)) if match else None


def acquisition_time_s(root: Path, movie: str) -> float | None:
    """When a movie was recorded (seconds since the epoch): EPU XML, mdoc, then file time."""
    path = root / movie
    key = (file_key(path.with_suffix(".xml")), file_key(Path(f"{path}.mdoc")), file_key(path))
    cached = _time_cache.get(str(path))
    if cached is not None and cached[0] == key:
        return cached[1]
    found = (_first_match(path.with_suffix(".xml"), _EPU_TIME, _iso_time)
             or _first_match(Path(f"{path}.mdoc"), _MDOC_TIME, _mdoc_time) or mtime_s(path))
    _time_cache[str(path)] = (key, found)
    return found


def _movie_stems(root: Path) -> dict[str, str]:
    """Movie path without its extension → movie path, from the newest import's movies.star."""
    path = newest_output(root, "relion.import", _SOURCES["relion.import"])
    table = None if path is None else star_table(path, "movies")
    if table is None or "rlnMicrographMovieName" not in table.columns:
        return {}
    return {str(PurePosixPath(m).with_suffix("")): str(m) for m in table["rlnMicrographMovieName"]}


def _movie_of(micrograph: str, stems: dict[str, str]) -> str | None:
    """``MotionCorr/job002/Movies/a.mrc`` → the movie ``Movies/a.tiff`` it was made from."""
    parts = PurePosixPath(micrograph).with_suffix("").parts
    return stems.get("/".join(parts[2:])) if len(parts) > 2 else None


def _micrograph_table(root: Path) -> pd.DataFrame | None:
    """The CTF table where there is one, with motion-only rows for micrographs not fitted yet."""
    tables = [star_table(p, "micrographs") for p in
              (newest_output(root, "relion.ctffind", _SOURCES["relion.ctffind"]),
               newest_output(root, "relion.motioncorr", _SOURCES["relion.motioncorr"])) if p is not None]
    tables = [t for t in tables if t is not None and "rlnMicrographName" in t.columns]
    if not tables:
        return None
    merged = tables[0]
    for table in tables[1:]:
        extra = table[~table["rlnMicrographName"].isin(merged["rlnMicrographName"])]
        merged = pd.concat([merged, extra], ignore_index=True)
    return merged


def pick_files(root: Path) -> dict[str, str]:
    """Micrograph name → its coordinate file, from the newest autopick job."""
    path = newest_output(root, "relion.autopick", _SOURCES["relion.autopick"])
    table = None if path is None else star_table(path, "coordinate_files")
    if table is None or "rlnMicrographCoordinates" not in table.columns:
        return {}
    return dict(zip(table["rlnMicrographName"].astype(str), table["rlnMicrographCoordinates"].astype(str)))


def picks_of(root: Path, coordinate_file: str) -> np.ndarray:
    """``(n, 2)`` pick coordinates (x, y in micrograph pixels) of a coordinate STAR file."""
    table = star_table(root / coordinate_file)
    if table is None or not {"rlnCoordinateX", "rlnCoordinateY"} <= set(table.columns):
        return np.zeros((0, 2))
    return table[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(dtype=float)


def _selected(root: Path) -> set[str] | None:
    """Micrographs kept by the newest micrograph selection (None when there is none)."""
    try:
        procs = list(pipeline_state(root).processes.values())
    except InputError:
        return None
    for proc in reversed(procs):
        path = root / proc.name / "micrographs.star"
        if proc.type_label.startswith("relion.select") and path.is_file():
            table = star_table(path, "micrographs")
            return None if table is None else set(table["rlnMicrographName"].astype(str))
    return None


def _value(row: pd.Series, label: str) -> float | None:
    value = row.get(label)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _row(root: Path, row: pd.Series, stems: dict[str, str], picks: dict[str, str],
         selected: set[str] | None) -> dict:
    name = str(row["rlnMicrographName"])
    movie = _movie_of(name, stems)
    u, v = _value(row, "rlnDefocusU"), _value(row, "rlnDefocusV")
    record = {"name": name, "movie": movie,
              "time_s": acquisition_time_s(root, movie) if movie else mtime_s(root / name),
              "defocus_angst": None if u is None or v is None else (u + v) / 2,
              "picks": count_loop_rows(root / picks[name]) if name in picks else None,
              "selected": None if selected is None else name in selected}
    for key, (label, _, _) in METRICS.items():
        if label is not None:
            record[key] = _value(row, label)
    return record


def micrograph_rows(root: Path) -> list[dict]:
    """One record per micrograph, in acquisition order (see the module docstring)."""
    table = _micrograph_table(root)
    if table is None:
        return []
    stems, picks, selected = _movie_stems(root), pick_files(root), _selected(root)
    rows = [_row(root, row, stems, picks, selected) for _, row in table.iterrows()]
    rows.sort(key=lambda r: (r["time_s"] is None, r["time_s"] or 0.0, r["name"]))
    return rows


def _limit(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and abs(value) < _NO_LIMIT else None


def scheme_thresholds(root: Path) -> list[dict]:
    """Value selections of the schemes' select jobs: label, min, max (None: no limit), where."""
    files = sorted((root / "Schemes").glob("*/scheme.star")) + sorted((root / "Schemes").glob("*/*/job.star"))
    return memo_on_files("thresholds", files, lambda: _read_thresholds(root))


def _read_thresholds(root: Path) -> list[dict]:
    from vitrify.pipeline.schemes.star import read_scheme
    from vitrify.pipeline.schemes.templates import read_template, substituted_options, template_path

    found = []
    for path in sorted((root / "Schemes").glob("*/scheme.star")):
        try:
            scheme = read_scheme(path, validate=False)
            for job in sorted(scheme.jobs):
                template = read_template(template_path(root, scheme, job))
                if not template.type_label.startswith("relion.select"):
                    continue
                options = substituted_options(template, scheme)
                if options.get("do_select_values", "No").strip().lower() not in ("yes", "true", "1"):
                    continue
                found.append({"scheme": scheme.short_name, "job": job, "label": options.get("select_label", ""),
                              "min": _limit(options.get("select_minval")),
                              "max": _limit(options.get("select_maxval"))})
        except (InputError, OSError, ValueError):
            continue
    return found


#: (step shown, job type prefix, output file, loop block) of :func:`progress_counts`
_PROGRESS = (("movies", "relion.import", "movies.star", "movies"),
             ("motion-corrected", "relion.motioncorr", "corrected_micrographs.star", "micrographs"),
             ("CTF-fitted", "relion.ctffind", "micrographs_ctf.star", "micrographs"),
             ("selected", "relion.select", "micrographs.star", "micrographs"),
             ("picked", "relion.autopick", "autopick.star", "coordinate_files"),
             ("particles extracted", "relion.extract", "particles.star", "particles"))


def progress_counts(root: Path) -> list[dict]:
    """How far the session is: rows of the newest output of each preprocessing step (whether
    processing keeps up with the microscope: movies vs micrographs done at each step)."""
    found = []
    for step, prefix, file, block in _PROGRESS:
        path = newest_output(root, prefix, file)
        count = None if path is None else count_loop_rows(path, block)
        if count is not None:
            found.append({"step": step, "job": _job_of(path, root), "count": count})
    return found


def micrograph_figures(root: Path) -> dict:
    """Rows, metric descriptions (with the thresholds that apply to each) and the jobs read."""
    thresholds = scheme_thresholds(root)
    metrics = []
    for key, (label, title, unit) in METRICS.items():
        limits = [t for t in thresholds if label and t["label"] == label]
        metrics.append({"key": key, "label": label, "title": title, "unit": unit, "thresholds": limits})
    sources = {prefix: _job_of(newest_output(root, prefix, file), root) for prefix, file in _SOURCES.items()}
    return {"micrographs": micrograph_rows(root), "metrics": metrics, "sources": sources,
            "progress": progress_counts(root)}


def _job_of(path: Path | None, root: Path) -> str | None:
    return None if path is None else str(path.parent.relative_to(root)) + "/"


__all__ = ["METRICS", "micrograph_figures", "micrograph_rows", "pick_files", "picks_of",
           "scheme_thresholds"]

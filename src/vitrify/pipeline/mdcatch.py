"""MDCatch: find a session's first metadata file, its movies and gain, and set up the project.

The steps of ``vitrify mdcatch SESSION --project DIR``: :func:`find_metadata_files` (EPU layout
``Images-Disc*/GridSquare_*/Data/FoilHole_*_Data_*.xml`` first, then ``*.mdoc`` and EPU-style
``*.xml`` beside movies), :func:`read_first_complete` (in watch mode a partial file is skipped
with a warning and retried), :func:`locate_movies`, :func:`locate_gain`, then
:func:`setup_project` writes ``acquisition.json``, ``relion_it_options.py`` and the
options into ``Schemes/prep|proc`` (vitrify's templates are installed where the project has none).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vitrify.io.acquisition import (
    AcquisitionParams,
    apply_overrides,
    merge_params,
    read_acquisition,
    with_value,
)
from vitrify.io.atomic import atomic_write
from vitrify.io.errors import InputError
from vitrify.io.facility import FacilityConfig, apply_facility
from vitrify.pipeline._scheme_setup import (
    apply_scheme_options,
    install_missing_schemes,
    relion_it_text,
)
from vitrify.pipeline._scheme_setup import missing_schemes as missing_schemes  # public here, for the CLI
from vitrify.pipeline._scheme_setup import processing_commands as processing_commands
from vitrify.pipeline.autosetup import (
    ProcessingSetup,
    SetupOptions,
    derive_processing,
    scheme_options,
)

EPU_PATTERN = "Images-Disc*/GridSquare_*/Data/FoilHole_*_Data_*.xml"
MOVIE_SUFFIXES = (".tiff", ".tif", ".mrc", ".mrcs", ".eer")
#: Where the session directory is linked inside the project (movie paths stay relative).
SESSION_LINK = "Movies"


def _is_epu_movie_xml(path: Path) -> bool:
    return not path.name.endswith("_Fractions.xml")


def _movie_beside(meta: Path) -> bool:
    """True for ``movie.tif.mdoc`` or ``movie.xml`` with a movie of that name in the folder."""
    stem = meta.name[: -len(".mdoc")] if meta.suffix == ".mdoc" else meta.stem
    if meta.suffix == ".mdoc" and Path(stem).suffix.lower() in MOVIE_SUFFIXES:
        return True
    return any(p.is_file() for p in meta.parent.glob(f"{stem}*")
               if p.suffix.lower() in MOVIE_SUFFIXES)


def find_metadata_files(session_dir: str | Path) -> list[Path]:
    """Candidate metadata files of a session, oldest first within each kind.

    EPU per-movie XMLs in EPU's folder layout come first; then SerialEM mdocs and EPU-style XMLs
    that sit beside movies (what ``vitrify simulate movies`` writes).
    """
    session = Path(session_dir)
    if not session.is_dir():
        raise InputError("session directory not found", path=session, expected="a directory")
    def by_age(paths: Iterator[Path]) -> list[Path]:
        return sorted(paths, key=lambda p: (p.stat().st_mtime, str(p)))
    epu = by_age(p for p in session.glob(EPU_PATTERN) if _is_epu_movie_xml(p))
    if epu:
        return epu
    mdocs = by_age(session.rglob("*.mdoc"))
    xmls = by_age(p for p in session.rglob("*.xml")
                  if _is_epu_movie_xml(p) and _movie_beside(p))
    return mdocs + xmls


def read_first_complete(session_dir: str | Path, *, watch: bool = False, poll_s: float = 5.0,
                        timeout_s: float | None = None,
                        warn: Callable[[str], None] = print) -> AcquisitionParams:
    """Read the first metadata file that parses; in watch mode wait for one to appear.

    Without ``watch`` a corrupt first file is an :class:`InputError`; with ``watch`` it is
    skipped with a warning (EPU may still be writing it) and the search goes on.
    """
    start = time.monotonic()
    warned: set[Path] = set()
    while True:
        for path in find_metadata_files(session_dir):
            try:
                return read_acquisition(path)
            except InputError as err:
                if not watch:
                    raise
                if path not in warned:
                    warn(f"skipping {path.name}: {err}")
                    warned.add(path)
        if not watch:
            raise InputError("no metadata file found", path=session_dir,
                             expected=f"{EPU_PATTERN}, or *.mdoc / *.xml beside movies")
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise InputError(f"no complete metadata file appeared within {timeout_s:g} s",
                             path=session_dir)
        time.sleep(poll_s)


@dataclass(frozen=True)
class MovieSet:
    """Movies of a session: one example file and the glob pattern (relative to the session)."""

    example: Path
    pattern: str
    count: int


def _generalise_epu_dirs(relative: Path) -> str:
    parts = []
    for part in relative.parts:
        if part.startswith("Images-Disc"):
            part = "Images-Disc*"
        elif part.startswith("GridSquare_"):
            part = "GridSquare_*"
        parts.append(part)
    return "/".join(parts)


def _movie_for(meta: Path, params: AcquisitionParams, session: Path) -> Path | None:
    """The movie that belongs to a metadata file: beside it by name, else by SerialEM's name."""
    stem = meta.name[: -len(".mdoc")] if meta.suffix == ".mdoc" else meta.stem
    beside = sorted(p for p in meta.parent.glob(f"{stem}*")
                    if p.suffix.lower() in MOVIE_SUFFIXES and p.is_file())
    if beside:
        return beside[0]
    if params.movie_name:
        found = sorted(session.rglob(params.movie_name))
        if found:
            return found[0]
    return None


def _letters(name: str) -> str:
    """The leading part of a file name before its first digit (``mov_`` of ``mov_00001.tif``)."""
    stem = name.split(".", 1)[0]
    prefix = re.match(r"[^0-9]*", stem).group(0)
    return "" if prefix == stem else prefix


def _movie_by_pattern(meta: Path, session: Path, patterns: tuple[str, ...]) -> tuple[Path, str] | None:
    """The largest family of files matching the first facility movie pattern that matches any.

    Files are grouped by folder and leading letters (``stack_`` of ``stack_0001.mrc``), so an
    ``atlas_0001.mrc`` beside the movies does not become one; the name pattern returned is the
    facility's, narrowed to those letters when it starts with ``*``.
    """
    for pattern in patterns:
        found = sorted(meta.parent.glob(pattern)) or sorted(session.rglob(pattern))
        families: dict[tuple[Path, str], list[Path]] = {}
        for path in (p for p in found if p.is_file()):
            families.setdefault((path.parent, _letters(path.name)), []).append(path)
        if families:
            (_, letters), members = max(families.items(), key=lambda item: len(item[1]))
            return members[0], (letters + pattern if pattern.startswith("*") else pattern)
    return None


def locate_movies(params: AcquisitionParams, session_dir: str | Path,
                  patterns: tuple[str, ...] = ()) -> MovieSet:
    """Find the movie of the metadata file and the pattern that matches all of the session's.

    The movie is looked for beside the metadata file (same name stem), then by the name the
    metadata gives (SerialEM ``SubFramePath``), then by the facility's ``movie_patterns``.
    """
    session = Path(session_dir).resolve()
    meta = Path(params.source_path).resolve()
    movie = _movie_for(meta, params, session)
    stem = meta.name[: -len(".mdoc")] if meta.suffix == ".mdoc" else meta.stem
    if movie is not None:
        beside = movie.name.startswith(stem) and len(movie.name) > len(stem)
        tail = movie.name[len(stem):] if beside else movie.suffix
        # the name's leading letters stay, so that a gain.mrc beside mov_00001.mrc is no movie
        prefix = "FoilHole_*_Data_" if meta.name.startswith("FoilHole_") else _letters(movie.name)
        name = prefix + "*" + tail
    elif (by_pattern := _movie_by_pattern(meta, session, patterns)) is not None:
        movie, name = by_pattern
    else:
        raise InputError("no movie found for the metadata file", path=meta,
                         expected=f"a movie ({', '.join(MOVIE_SUFFIXES)}) beside it, one matching "
                                  "the facility's movie_patterns, or --movies")
    folder = _generalise_epu_dirs(movie.parent.relative_to(session))
    pattern = name if folder in ("", ".") else f"{folder}/{name}"
    return MovieSet(movie, pattern, len(list(session.glob(pattern))))


def locate_gain(params: AcquisitionParams, session_dir: str | Path,
                facility: FacilityConfig) -> Path | None:
    """The gain reference: the one the metadata names, else the facility/default patterns."""
    session = Path(session_dir).resolve()
    if params.gain_reference:
        named = sorted(session.rglob(Path(params.gain_reference.replace("\\", "/")).name))
        if named:
            return named[0]
    patterns = facility.camera(params.detector_model).gain_patterns or tuple(
        facility.defaults["gain_patterns"])
    for pattern in patterns:
        found = sorted(session.glob(pattern)) or sorted(session.glob(f"**/{pattern}"))
        if found:
            return found[0]
    return None


def link_session(project_dir: Path, session_dir: Path) -> Path:
    """``PROJECT/Movies`` → the session directory (kept if it already points there)."""
    link = project_dir / SESSION_LINK
    target = session_dir.resolve()
    if link.is_symlink() or link.exists():
        if link.resolve() != target:
            raise InputError(f"{SESSION_LINK} already exists and points elsewhere ({link.resolve()})",
                             path=link, expected=f"a link to {target}, or a new project directory")
        return link
    project_dir.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link, target_is_directory=True)
    return link


def setup_project(project_dir: str | Path, params: AcquisitionParams, setup: ProcessingSetup,
                  extra: dict[str, object], settings: dict[str, str] | None = None) -> dict[str, object]:
    """Write ``acquisition.json`` and ``relion_it_options.py`` (atomically); apply scheme options.

    The options go into ``Schemes/prep|proc`` when the project has them (see
    :mod:`vitrify.pipeline._scheme_setup`); ``scheme_options_applied`` says where each went.
    ``settings`` are the user's own relion_it keys (``--set``); they win over derived values.
    """
    project_dir = Path(project_dir)
    options = {**scheme_options(setup), **(settings or {})}
    applied = apply_scheme_options(project_dir, options)
    record = {"acquisition": params.to_json_dict(), "processing": setup.to_json_dict(),
              "scheme_options": options,
              "scheme_options_applied": [a.to_json_dict() for a in applied], **extra}
    atomic_write(project_dir / "acquisition.json", json.dumps(record, indent=2, default=str) + "\n")
    atomic_write(project_dir / "relion_it_options.py", relion_it_text(options))
    return record


@dataclass(frozen=True)
class SessionRequest:
    """Everything ``vitrify mdcatch SESSION --project DIR`` was asked to do."""

    session_dir: Path
    project_dir: Path
    overrides: dict[str, object]
    options: SetupOptions
    facility: FacilityConfig
    gain: Path | None = None
    movies_pattern: str | None = None
    watch: bool = False
    poll_s: float = 5.0
    timeout_s: float | None = None
    settings: dict[str, str] = field(default_factory=dict)
    init_schemes: bool = True


def _fill_from_movie(params: AcquisitionParams, movie: Path) -> AcquisitionParams:
    """Frame count, frame size and EER flag from the movie header where the metadata lacks them.

    For EER movies the file's raw frame count wins over the metadata's (EPU gives fractions),
    and the dose per frame is re-derived from it.
    """
    if movie.suffix.lower() == ".eer":
        header = read_acquisition(movie)
        if params.eer is None:
            params = with_value(params, "eer", True, (movie.name, "file extension .eer"))
        if header.n_frames and header.n_frames != params.n_frames:
            params = apply_overrides(params, {"n_frames": header.n_frames}, movie.name)
    if params.n_frames is None or params.frame_size_px is None:
        params = merge_params(params, read_acquisition(movie))
    return params


def _locate_movies_waiting(params: AcquisitionParams, request: SessionRequest,
                           warn: Callable[[str], None]) -> MovieSet:
    """:func:`locate_movies`; with ``watch``, wait for the movie to appear too."""
    start = time.monotonic()
    while True:
        try:
            return locate_movies(params, request.session_dir,
                                 tuple(request.facility.defaults["movie_patterns"]))
        except InputError as err:
            timed_out = (request.timeout_s is not None
                         and time.monotonic() - start > request.timeout_s)
            if not request.watch or timed_out:
                raise
            warn(f"waiting for the movie: {err}")
            time.sleep(request.poll_s)


def _file_values(request: SessionRequest, params: AcquisitionParams,
                 movies: MovieSet) -> dict[str, tuple[object, str]]:
    """Movie pattern, gain, defects and MTF as the project will see them (paths via Movies/)."""
    session = request.session_dir.resolve()

    def in_project(path: Path) -> str:
        path = path.resolve()
        return (f"{SESSION_LINK}/{path.relative_to(session)}" if path.is_relative_to(session)
                else str(path))

    values: dict[str, tuple[object, str]] = {}
    if request.movies_pattern:
        values["movies_pattern"] = (request.movies_pattern, "command line --movies")
    else:
        values["movies_pattern"] = (f"{SESSION_LINK}/{movies.pattern}",
                                    f"beside {Path(params.source_path).name}: {movies.count} movies")
    gain = request.gain or locate_gain(params, session, request.facility)
    source = "command line --gain" if request.gain else (
        f"named in {params.source('gain_reference')}" if params.gain_reference
        else f"first match of the gain patterns ({request.facility.label})")
    values["gain_reference"] = (in_project(gain), source) if gain else ("", "no gain reference found")
    camera = request.facility.camera(params.detector_model)
    where = (f'{request.facility.label}: cameras."{params.detector_model}"'
             if params.detector_model in request.facility.cameras
             else f"{request.facility.label}: no camera entry for {params.detector_model}; default")
    values["gain_rotation"] = (camera.gain_rotation, f"{where}.gain_rotation")
    values["gain_flip"] = (camera.gain_flip, f"{where}.gain_flip")
    if params.defects_file:
        found = sorted(session.rglob(Path(params.defects_file).name))
        values["defects_file"] = ((in_project(found[0]), params.source("defects_file")) if found
                                  else ("", f"{params.defects_file} not found in the session"))
    contrast = request.facility.defaults["amplitude_contrast"]
    values["amplitude_contrast"] = (float(contrast), f"{request.facility.label}: defaults.amplitude_contrast")
    mtf = request.facility.mtf_file(params.detector_model, params.voltage_kv)
    values["mtf_file"] = (mtf or "", f"{request.facility.label}: cameras.mtf"
                          if mtf else "no MTF for this detector in the facility configuration")
    return values


def prepare_session(request: SessionRequest,
                    warn: Callable[[str], None] = print) -> tuple[AcquisitionParams, ProcessingSetup]:
    """Read, complete and derive everything for a session; write it into the project."""
    params = read_first_complete(request.session_dir, watch=request.watch, poll_s=request.poll_s,
                                 timeout_s=request.timeout_s, warn=warn)
    params = apply_overrides(params, request.overrides)
    params = apply_facility(params, request.facility)
    if request.movies_pattern:
        found = sorted(request.session_dir.glob(request.movies_pattern))
        if not found:
            raise InputError("no movie matches --movies", path=request.session_dir,
                             field=request.movies_pattern, expected="a glob relative to the session")
        movies = MovieSet(found[0], request.movies_pattern, len(found))
    else:
        movies = _locate_movies_waiting(params, request, warn)
    params = _fill_from_movie(params, movies.example)
    setup = derive_processing(params, request.options)
    setup = ProcessingSetup({**setup.values, **_file_values(request, params, movies)})
    link_session(request.project_dir, request.session_dir)
    installed = install_missing_schemes(request.project_dir) if request.init_schemes else []
    setup_project(request.project_dir, params, setup,
                  {"session_dir": str(request.session_dir.resolve()),
                   "microscope_name": request.facility.microscope_name(params.microscope_id),
                   "metadata_file": params.source_path, "movies_found": movies.count,
                   "settings": request.settings, "schemes_installed": installed}, request.settings)
    return params, setup

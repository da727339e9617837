"""Which pictures may be drawn, and drawing them: a name from a request is only used when the
project itself lists it (a micrograph of the figures, a Class2D job's class stack, a map of a 3D
job), so no request reads a file the dashboard does not show."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.web import _images, _maps, _micrographs
from vitrify.web._files import file_key, pipeline_state, relative_name, star_table

_DEFAULT_RADIUS_PX = 20.0
_CACHE_SIZE = 48
_cache: OrderedDict[tuple, bytes] = OrderedDict()
_lock = threading.Lock()


def _cached(key_parts: tuple, paths: list[Path], draw: Callable[[], bytes]) -> bytes:
    """``draw()``, reused while the files it is drawn from are unchanged (a small LRU of PNGs)."""
    key = (*key_parts, *(file_key(p) for p in paths))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    picture = draw()
    with _lock:
        _cache[key] = picture
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return picture


def _pick_radius_px(root: Path, coordinate_file: str, pixel_size_angst: float) -> float:
    """Half the picker's largest diameter (LoG ``log_diam_max`` or ``topaz_particle_diameter``), px."""
    job = "/".join(coordinate_file.split("/")[:2])
    table = star_table(root / job / "job.star", "joboptions_values")
    if table is None or pixel_size_angst <= 0:
        return _DEFAULT_RADIUS_PX
    options = dict(zip(table.iloc[:, 0].astype(str), table.iloc[:, 1].astype(str)))
    for key in ("log_diam_max", "topaz_particle_diameter"):
        try:
            diameter = float(options.get(key, ""))
        except ValueError:
            continue
        if diameter > 0:
            return diameter / 2 / pixel_size_angst
    return _DEFAULT_RADIUS_PX


def micrograph(root: Path, name: str) -> bytes | None:
    """PNG of a micrograph listed by the figures, with its picks circled; None if not listed."""
    from vitrify.io.mrc import read_mrc_header

    listed = {row["name"] for row in _micrographs.micrograph_rows(root)}
    if relative_name(name) != name or name not in listed:
        return None
    path = root / name
    coordinate_file = _micrographs.pick_files(root).get(name)
    picks = _micrographs.picks_of(root, coordinate_file) if coordinate_file else []
    try:
        pixel = float(read_mrc_header(path)["pixel_size_angst"])
        radius = _pick_radius_px(root, coordinate_file, pixel) if coordinate_file else _DEFAULT_RADIUS_PX
        sources = [path] + ([root / coordinate_file] if coordinate_file else [])
        return _cached(("micrograph", name, radius), sources, lambda: _images.micrograph_png(path, picks, radius))
    except (InputError, OSError, ValueError):
        return None


def class_average(root: Path, stack: str, number: int) -> bytes | None:
    """PNG of class ``number`` (1-based) of ``Class2D/jobNNN/..._classes.mrcs``; None otherwise."""
    if relative_name(stack) != stack or not stack.endswith("_classes.mrcs") or number < 1:
        return None
    try:
        jobs = {p.name for p in pipeline_state(root).processes.values() if p.type_label.startswith("relion.class2d")}
    except InputError:
        return None
    if "/".join(stack.split("/")[:2]) + "/" not in jobs:
        return None
    try:
        return _cached(("class", stack, number), [root / stack],
                       lambda: _images.stack_image_png(root / stack, number - 1))
    except (InputError, OSError, ValueError, IndexError):
        return None


def map_sections(root: Path, path: str) -> bytes | None:
    """PNG of the central sections of a map :func:`_maps.project_maps` lists; None otherwise."""
    if path not in {entry["map"] for entry in _maps.project_maps(root)}:
        return None
    try:
        return _cached(("map", path), [root / path], lambda: _images.map_slices_png(root / path))
    except (InputError, OSError, ValueError):
        return None

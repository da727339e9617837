"""The typed result of every acquisition-metadata reader: :class:`AcquisitionParams`.

Every value carries its source ``(file name, field)``; a field that no file gives stays
``None`` and is listed by name in :attr:`AcquisitionParams.missing`. Nothing is invented:
the only derived values are unit conversions and ``dose per frame = total dose / frames``
(or the reverse), each recorded with the fields it came from.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vitrify.io._ranges import ACQUISITION_RANGES
from vitrify.io.errors import InputError

Fields = Mapping[str, tuple[object, str]]


@dataclass(frozen=True)
class AcquisitionParams:
    """What the microscope software recorded about one acquisition (units in the names).

    ``pixel_size_angst`` is the pixel of the frames as saved (for super-resolution movies
    half the physical pixel); ``physical_pixel_size_angst`` that of the detector at this
    magnification. ``applied_defocus_um`` follows the microscope's sign (negative =
    underfocus). Beam tilt/shift and image shift are kept in the software's own units
    (``_raw``). ``sources`` maps each field that has a value to ``(file, field)``.
    """

    pixel_size_angst: float | None = None
    physical_pixel_size_angst: float | None = None
    voltage_kv: float | None = None
    cs_mm: float | None = None
    total_dose_e_per_angst2: float | None = None
    total_dose_e_per_px: float | None = None
    dose_per_frame_e_per_angst2: float | None = None
    n_frames: int | None = None
    exposure_time_s: float | None = None
    detector: str | None = None
    detector_model: str | None = None
    counting: bool | None = None
    super_resolution: bool | None = None
    eer: bool | None = None
    binning: float | None = None
    applied_defocus_um: float | None = None
    phase_plate: bool | None = None
    gain_reference: str | None = None
    defects_file: str | None = None
    magnification: int | None = None
    beam_tilt_xy_raw: tuple[float, float] | None = None
    beam_shift_xy_raw: tuple[float, float] | None = None
    image_shift_xy_raw: tuple[float, float] | None = None
    energy_filter_slit_width_ev: float | None = None
    software: str | None = None
    software_version: str | None = None
    acquisition_time: str | None = None
    microscope_id: str | None = None
    movie_name: str | None = None
    frame_size_px: tuple[int, int] | None = None
    tilt_angles_deg: tuple[float, ...] | None = None
    source_path: str | None = None
    sources: Mapping[str, tuple[str, str]] = field(default_factory=dict, compare=False)

    @property
    def missing(self) -> list[str]:
        """Names of the fields that no file gave (tilt angles count only for tilt series)."""
        return [name for name in PARAM_FIELDS
                if getattr(self, name) is None and name not in _ONLY_WHEN_PRESENT]

    def source(self, name: str) -> str:
        """``"file: field"`` for display, or ``"missing"``."""
        where = self.sources.get(name)
        return "missing" if where is None else f"{where[0]}: {where[1]}"

    def to_json_dict(self) -> dict[str, Any]:
        """One JSON-ready object: the fields (units in the names), ``sources`` and ``missing``."""
        out: dict[str, Any] = {}
        for name in PARAM_FIELDS:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        out["source_path"] = self.source_path
        out["sources"] = {k: {"file": v[0], "field": v[1]} for k, v in self.sources.items()}
        out["missing"] = self.missing
        return out

    def to_json(self) -> str:
        """:meth:`to_json_dict` as indented JSON text."""
        return json.dumps(self.to_json_dict(), indent=2)


#: The metadata fields (everything but the bookkeeping ``source_path`` and ``sources``).
PARAM_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(AcquisitionParams) if f.name not in ("source_path", "sources"))

#: Fields listed as missing only where they make sense; absent otherwise without comment.
_ONLY_WHEN_PRESENT = frozenset({"tilt_angles_deg", "total_dose_e_per_px", "energy_filter_slit_width_ev",
                                "image_shift_xy_raw", "movie_name", "eer"})


def params_from_fields(values: Fields, path: str | Path) -> AcquisitionParams:
    """Build :class:`AcquisitionParams` from ``{name: (value, field)}`` read from ``path``.

    Completes ``dose_per_frame`` from the total dose and the frame count (or the reverse)
    and ``physical_pixel_size`` from the pixel size and super-resolution, recording how.
    """
    unknown = set(values) - set(PARAM_FIELDS)
    if unknown:
        raise ValueError(f"unknown acquisition fields: {sorted(unknown)}")
    for key, (value, where) in values.items():
        check_plausible(key, value, path, where)
    name = Path(path).name
    kwargs = {k: v for k, (v, _) in values.items() if v is not None}
    sources = {k: (name, f) for k, (v, f) in values.items() if v is not None}
    params = AcquisitionParams(**kwargs, source_path=str(path), sources=sources)
    return complete_derived(params)


def check_plausible(name: str, value: object, path: str | Path | None, where: str) -> None:
    """InputError naming ``path`` and the field ``where`` when a physical value is implausible
    (a 3000 kV voltage, a negative pixel size, a NaN dose...); other fields pass unchecked."""
    rule = ACQUISITION_RANGES.get(name)
    if rule is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    problem = rule.problem(float(value))
    if problem is not None:
        raise InputError(f"{name} {problem}", path=path, field=where, expected=rule.expected())


def _derive_dose_per_frame(p: AcquisitionParams) -> tuple[object, str] | None:
    if p.total_dose_e_per_angst2 is not None and p.n_frames:
        return (p.total_dose_e_per_angst2 / p.n_frames,
                "total_dose_e_per_angst2 / n_frames")
    return None


def _derive_total_dose(p: AcquisitionParams) -> tuple[object, str] | None:
    if p.total_dose_e_per_px is not None and p.pixel_size_angst:
        return (p.total_dose_e_per_px / p.pixel_size_angst ** 2,
                "total_dose_e_per_px / pixel_size_angst^2")
    if p.dose_per_frame_e_per_angst2 is not None and p.n_frames:
        return (p.dose_per_frame_e_per_angst2 * p.n_frames,
                "dose_per_frame_e_per_angst2 * n_frames")
    return None


def _derive_physical_pixel(p: AcquisitionParams) -> tuple[object, str] | None:
    if p.pixel_size_angst is None:
        return None
    if p.binning:
        return p.pixel_size_angst / p.binning, "pixel_size_angst / binning"
    if p.super_resolution is not None:
        factor = 2.0 if p.super_resolution else 1.0
        return p.pixel_size_angst * factor, "pixel_size_angst x super-resolution factor"
    return None


#: Field → rule that derives it from other fields (applied only where the field is missing).
_DERIVATIONS: dict[str, Callable[[AcquisitionParams], tuple[object, str] | None]] = {
    "total_dose_e_per_angst2": _derive_total_dose,
    "dose_per_frame_e_per_angst2": _derive_dose_per_frame,
    "physical_pixel_size_angst": _derive_physical_pixel,
}


def complete_derived(params: AcquisitionParams) -> AcquisitionParams:
    """Fill missing fields that follow from others (see ``_DERIVATIONS``), with their source."""
    for name, rule in _DERIVATIONS.items():
        if getattr(params, name) is None and (found := rule(params)) is not None:
            sources = dict(params.sources)
            sources[name] = ("derived", found[1])
            params = replace(params, **{name: found[0]}, sources=sources)
    return params


def merge_params(primary: AcquisitionParams, secondary: AcquisitionParams) -> AcquisitionParams:
    """Fields of ``primary``, with the ones it lacks taken from ``secondary`` (and their sources)."""
    updates: dict[str, Any] = {}
    sources = dict(primary.sources)
    for name in PARAM_FIELDS:
        if getattr(primary, name) is None and getattr(secondary, name) is not None:
            updates[name] = getattr(secondary, name)
            sources[name] = secondary.sources.get(name, (Path(secondary.source_path or "").name, name))
    return complete_derived(replace(primary, **updates, sources=sources))


def apply_overrides(params: AcquisitionParams, overrides: Mapping[str, object],
                    source_file: str = "command line") -> AcquisitionParams:
    """Set fields from the user (``{name: value}``; ``None`` values ignored), re-deriving the rest.

    Values derived from the old ones (dose per frame from total dose, ...) are recomputed.
    """
    chosen = {k: v for k, v in overrides.items() if v is not None}
    if not chosen:
        return params
    for name, value in chosen.items():
        field_name = name if source_file == "command line" else f"{name} (file header)"
        params = with_value(params, name, value, (source_file, field_name))
    derived = [k for k, (f, _) in params.sources.items() if f == "derived"]
    sources = {k: v for k, v in params.sources.items() if k not in derived}
    params = replace(params, **{k: None for k in derived}, sources=sources)
    return complete_derived(params)


def with_value(params: AcquisitionParams, name: str, value: object,
               source: tuple[str, str]) -> AcquisitionParams:
    """A copy with ``name`` set to ``value`` from ``source`` (for overrides and config)."""
    if name not in PARAM_FIELDS:
        raise InputError(f"unknown acquisition field {name!r}", field=name,
                         expected=", ".join(PARAM_FIELDS))
    check_plausible(name, value, None if source[0] == "command line" else source[0], source[1])
    sources = dict(params.sources)
    sources[name] = source
    return replace(params, **{name: value}, sources=sources)


def finite_or_none(value: float | None) -> float | None:
    """``value`` if it is a finite number, else ``None`` (files sometimes hold NaN)."""
    return value if value is not None and math.isfinite(value) else None


def asdict_plain(params: AcquisitionParams) -> dict[str, Any]:
    """The metadata fields as a plain dict (no sources), e.g. to compare two readings."""
    return {k: v for k, v in dataclasses.asdict(params).items() if k in PARAM_FIELDS}

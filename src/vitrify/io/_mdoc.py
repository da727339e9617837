"""SerialEM ``.mdoc`` files: single-movie frame sets and tilt series.

An mdoc is ``key = value`` lines. Lines before the first section are global (``Voltage``,
``PixelSpacing``, ``ImageFile``...); sections start with ``[FrameSet = n]``, ``[ZValue = n]``
or ``[MontSection = n]``; title lines are ``T = ...`` or ``[T = ...]``. The first title usually
reads ``SerialEM: Acquired on <microscope> [D-number] <date> <time>``; the microscope name and
number are optional (MDCatch gives up without the number; we do not need it).

Facts used: ``PixelSpacing`` is in Å (of the image as saved); ``Binning = 0.5`` means
super-resolution; ``ExposureDose`` is e/Å² for the whole movie (0 when the dose was not
calibrated); ``TargetDefocus`` in µm (negative = underfocus); ``Voltage`` in kV.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from vitrify.io._acq_params import AcquisitionParams, params_from_fields
from vitrify.io._headers import SERIALEM_KEYS
from vitrify.io.errors import InputError

Fields = dict[str, tuple[object, str]]

_SECTION = re.compile(r"^\[\s*(\w+)\s*=\s*(.*?)\s*\]$")
_KEY_VALUE = re.compile(r"^([A-Za-z][\w.\[\]-]*)\s*=\s*(.*)$")
_DATE = re.compile(r"\d{1,2}-[A-Za-z]{3}-\d{2,4}")
_D_NUMBER = re.compile(r"\bD(\d{3,5})\b")
#: Control characters (NUL padding of a crashed write, binary garbage); tabs are whitespace.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class MdocSection:
    """One ``[Kind = index]`` section: its keys with values and line numbers."""

    kind: str
    index: str
    line: int
    values: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass
class Mdoc:
    """A parsed mdoc: global keys, title lines and sections in file order."""

    path: Path
    header: dict[str, tuple[str, int]] = field(default_factory=dict)
    titles: list[str] = field(default_factory=list)
    sections: list[MdocSection] = field(default_factory=list)


def parse_mdoc(path: str | Path) -> Mdoc:
    """Parse an mdoc; a line that is neither ``key = value``, a section nor blank is an error, and
    so is a file whose first section comes without any header (global keys or a title) before it.

    Raises
    ------
    InputError
        Naming the file and the line number of the first unreadable line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read: {err}", path=path) from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:  # SerialEM on Windows writes notes in the system code page
        text = raw.decode("latin-1")
    mdoc = Mdoc(path)
    target = mdoc.header
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        section = _SECTION.match(line)
        if section and section.group(1) == "T":
            mdoc.titles.append(section.group(2))
        elif section:
            if not mdoc.sections and not mdoc.header and not mdoc.titles:
                raise InputError(f"no header before the first section {line[:40]!r}", path=path,
                                 field=f"line {number}",
                                 expected="SerialEM's global 'key = value' lines (PixelSpacing, Voltage, "
                                          "ImageFile...) or a title line before the first section")
            mdoc.sections.append(MdocSection(section.group(1), section.group(2), number))
            target = mdoc.sections[-1].values
        elif (pair := _KEY_VALUE.match(line)) and not _CONTROL.search(line):
            key, value = pair.group(1), pair.group(2).strip()
            if key == "T":
                mdoc.titles.append(value)
            else:
                target[key] = (value, number)
        else:
            raise InputError(f"unreadable line {line[:60]!r}", path=path, field=f"line {number}",
                             expected="'key = value', '[Section = n]' or a blank line")
    if not mdoc.sections and not mdoc.header:
        raise InputError("no keys in the file", path=path, expected="a SerialEM mdoc")
    return mdoc


def _convert(key: str, value: str, line: int, path: Path) -> object:
    """Convert one mdoc value to our units; a malformed number is an error naming the line."""
    converter = SERIALEM_KEYS[key][1]
    try:
        return converter(value)
    except ValueError as err:
        raise InputError(f"{key} = {value!r} is not valid", path=path, field=f"line {line}",
                         expected="a number" if converter is not str else "text") from err


def _key_fields(values: dict[str, tuple[str, int]], path: Path, where: str) -> Fields:
    """Fields of the SerialEM keys we know, from one section or the header."""
    fields: Fields = {}
    for key, (value, line) in values.items():
        if key in SERIALEM_KEYS and value:
            name = SERIALEM_KEYS[key][0]
            fields[name] = (_convert(key, value, line, path), f"{where}{key} (line {line})")
    return fields


def _title_fields(titles: list[str]) -> Fields:
    """Microscope name/number from ``SerialEM: Acquired on <scope> [D####] <date>``."""
    for title in titles:
        head, _, rest = title.partition(" on ")
        if "SerialEM" not in head or not rest:
            continue
        date = _DATE.search(rest)
        scope = (rest[:date.start()] if date else rest).strip()
        number = _D_NUMBER.search(scope)
        fields: Fields = {"software": ("SerialEM", "title line")}
        if number:
            fields["microscope_id"] = (f"D{number.group(1)}", "title line (D-number)")
        elif scope:
            fields["microscope_id"] = (scope, "title line (microscope name)")
        return fields
    return {}


def _iso_time(value: str) -> str:
    """SerialEM's ``11-Aug-19  14:13:22`` as ISO 8601; other forms are kept as written."""
    try:
        stamp = _dt.datetime.strptime(" ".join(value.split()), "%d-%b-%y %H:%M:%S")
    except ValueError:
        return value
    return stamp.isoformat()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _frame_fields(fields: Fields, first: MdocSection | None) -> None:
    """Super-resolution, physical pixel, counting, dose and image shift from the known keys."""
    binning = fields.get("binning", (None, ""))[0]
    if binning is not None:
        fields["super_resolution"] = (binning < 1.0, f"{fields['binning'][1]} (0.5 = super-res)")
        if "pixel_size_angst" in fields:
            fields["physical_pixel_size_angst"] = (
                fields["pixel_size_angst"][0] / binning, "PixelSpacing / Binning")
    values = first.values if first else {}
    if "CountsPerElectron" in values or fields.get("super_resolution", (False, ""))[0]:
        fields["counting"] = (True, "CountsPerElectron present / super-resolution")
    dose = fields.get("total_dose_e_per_angst2", (None, ""))[0]
    if dose is not None and dose <= 0:
        del fields["total_dose_e_per_angst2"]  # SerialEM writes 0 when not calibrated
    if "FrameDosesAndNumber" in values:
        parts = values["FrameDosesAndNumber"][0].split()
        if len(parts) == 2 and _is_number(parts[0]) and float(parts[0]) > 0:
            fields["dose_per_frame_e_per_angst2"] = (
                float(parts[0]), f"FrameDosesAndNumber (line {values['FrameDosesAndNumber'][1]})")
    if "CameraIndex" in values:
        fields["detector"] = (f"camera {values['CameraIndex'][0]}",
                              f"CameraIndex (line {values['CameraIndex'][1]})")
    if "ImageShift" in values:
        parts = values["ImageShift"][0].split()
        if len(parts) == 2 and all(_is_number(p) for p in parts):
            fields["image_shift_xy_raw"] = ((float(parts[0]), float(parts[1])), "ImageShift")
    if "acquisition_time" in fields:
        value, where = fields["acquisition_time"]
        fields["acquisition_time"] = (_iso_time(str(value)), where)


def read_mdoc(path: str | Path) -> AcquisitionParams:
    """Read a SerialEM frame-set or tilt-series mdoc into :class:`AcquisitionParams`.

    Keys of the first section override the global ones; a tilt series (``ZValue`` sections)
    also gives ``tilt_angles_deg`` in file order.
    """
    path = Path(path)
    mdoc = parse_mdoc(path)
    fields = _title_fields(mdoc.titles)
    fields.update(_key_fields(mdoc.header, path, "header "))
    first = mdoc.sections[0] if mdoc.sections else None
    if first is not None:
        fields.update(_key_fields(first.values, path, f"[{first.kind} = {first.index}] "))
    fields.setdefault("software", ("SerialEM", "mdoc format"))
    if "Version" in mdoc.header:
        fields["software_version"] = (mdoc.header["Version"][0], "header Version")
    for where, values in (("header ", mdoc.header), ("section ", first.values if first else {})):
        parts = values.get("ImageSize", ("", 0))[0].split()
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            fields["frame_size_px"] = ((int(parts[0]), int(parts[1])), f"{where}ImageSize")
    _frame_fields(fields, first)
    tilts = [s for s in mdoc.sections if s.kind == "ZValue" and "TiltAngle" in s.values]
    if len(tilts) > 1:
        angles = tuple(float(_tilt(s, path)) for s in tilts)
        fields["tilt_angles_deg"] = (angles, f"TiltAngle of {len(tilts)} ZValue sections")
    return params_from_fields(fields, path)


def _tilt(section: MdocSection, path: Path) -> float:
    value, line = section.values["TiltAngle"]
    try:
        return float(value)
    except ValueError as err:
        raise InputError(f"TiltAngle = {value!r} is not a number", path=path,
                         field=f"line {line}", expected="a number") from err

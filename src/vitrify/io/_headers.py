"""Acquisition metadata kept in movie headers: MRC (incl. FEI1/FEI2 extended header) and TIFF.

Each reader returns ``{field_name: (value, header_field)}`` in AcquisitionParams units, so the
caller can record where every value came from. Only headers are read, never pixel data.

Facts used (from the formats' documentation):

- MRC: ``nz`` frames of ``nx x ny``; the voxel size (``cella / mx``) is in Å. Thermo Fisher's
  FEI1/FEI2 extended header (``exttyp``) has one record per frame with ``HT`` (V),
  ``Dose`` (e/m²), ``Pixel size X`` (m), ``Integration time`` (s), ``Binning Width``,
  ``Applied defocus`` (m), ``Magnification``, ``Camera name``, ``Phase Plate``, ``Timestamp``.
- TIFF: one page per frame. SerialEM writes ``key = value`` lines (or its own tags) into the
  ImageDescription tag; Thermo Fisher EER files use compression 65000/65001/65002 and keep
  their acquisition metadata as XML in private tag 65001 (``<metadata><item name=... unit=...>``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import mrcfile
import numpy as np
import tifffile

from vitrify.io._mrc_modes import check_header
from vitrify.io.errors import InputError

Fields = dict[str, tuple[object, str]]

#: Compression codes of Thermo Fisher EER files (7-bit, 8-bit and the v3 encodings).
EER_COMPRESSIONS = frozenset({65000, 65001, 65002})
EER_METADATA_TAG = 65001


def read_movie_shape(path: str | Path) -> tuple[int, int, int]:
    """Return ``(n_frames, ny, nx)`` of a TIFF/EER or MRC movie from its header only."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".mrc", ".mrcs"):
            check_header(path)
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                h = mrc.header
                return int(h.nz), int(h.ny), int(h.nx)
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            return len(tif.pages), int(page.shape[-2]), int(page.shape[-1])
    except (OSError, ValueError, tifffile.TiffFileError) as err:
        raise InputError(f"cannot read the movie header: {err}", path=path,
                         expected="a TIFF, EER or MRC movie") from err


def read_mrc_header_fields(path: str | Path) -> Fields:
    """Acquisition fields of an MRC movie or micrograph header (and its FEI extended header)."""
    path = Path(path)
    try:
        check_header(path)  # MAP signature, mode, sizes against the file length
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            h = mrc.header
            fields: Fields = {"n_frames": (int(h.nz), "nz"),
                              "frame_size_px": ((int(h.nx), int(h.ny)), "nx, ny")}
            voxel = float(mrc.voxel_size.x)
            if voxel > 0 and voxel != 1.0:
                fields["pixel_size_angst"] = (voxel, "cella.x / mx")
            exttyp = bytes(h.exttyp).decode("ascii", "replace")
            if exttyp in ("FEI1", "FEI2"):
                fields.update(_fei_fields(mrc.indexed_extended_header, exttyp))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the MRC header: {err}", path=path,
                         expected="an MRC file") from err
    return fields


#: FEI extended header field → (AcquisitionParams field, unit factor or converter).
_FEI_FIELDS = {
    "HT": ("voltage_kv", lambda v: float(v) / 1000.0),
    "Dose": ("total_dose_e_per_angst2", lambda v: float(v) * 1e-20),
    "Pixel size X": ("pixel_size_angst", lambda v: float(v) * 1e10),
    "Integration time": ("exposure_time_s", float),
    "Binning Width": ("binning", float),
    "Applied defocus": ("applied_defocus_um", lambda v: float(v) * 1e6),
    "Magnification": ("magnification", lambda v: int(round(float(v)))),
    "Camera name": ("detector", lambda v: _decode(v)),
    "Detector commercial name": ("detector_model", lambda v: _decode(v)),
    "Direct detector electron counting": ("counting", bool),
    "Phase Plate": ("phase_plate", bool),
    "D-Number": ("microscope_id", lambda v: _decode(v)),
    "Application": ("software", lambda v: _decode(v)),
    "Application version": ("software_version", lambda v: _decode(v)),
}


def _decode(value: object) -> str:
    """Text of a fixed-size string field of the extended header."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).split(b"\0", 1)[0].decode("ascii", "replace").strip()
    return str(value).strip()


def _fei_fields(ext: np.ndarray, exttyp: str) -> Fields:
    """Map the first record of an FEI1/FEI2 indexed extended header to our fields."""
    fields: Fields = {}
    if ext is None or len(ext) == 0:
        return fields
    record = ext[0]
    names = record.dtype.names or ()
    for fei_name, (ours, convert) in _FEI_FIELDS.items():
        if fei_name in names:
            value = convert(record[fei_name])
            if isinstance(value, bool) or value not in (0, 0.0, ""):
                fields[ours] = (value, f"{exttyp} extended header: {fei_name}")
    if "Is dose fraction" in names and bool(record["Is dose fraction"]) and len(ext) > 1:
        # each record is one dose fraction: its Dose is that fraction's, the movie's is the sum
        total = float(np.sum(ext["Dose"])) * 1e-20
        if total > 0:
            fields["total_dose_e_per_angst2"] = (
                total, f"{exttyp} extended header: sum of Dose over {len(ext)} fractions")
    return fields


def read_tiff_header_fields(path: str | Path) -> Fields:
    """Acquisition fields of a TIFF or EER movie: SerialEM ImageDescription and EER tag 65001."""
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            fields: Fields = {"n_frames": (len(tif.pages), "number of TIFF pages"),
                              "frame_size_px": ((int(page.shape[-1]), int(page.shape[-2])),
                                                "ImageWidth, ImageLength")}
            if int(page.compression) in EER_COMPRESSIONS:
                fields["eer"] = (True, f"Compression = {int(page.compression)}")
            tag = page.tags.get(EER_METADATA_TAG)
            if tag is not None:
                fields.update(_eer_metadata_fields(tag.value))
            description = page.tags.get("ImageDescription")
            if description is not None and isinstance(description.value, str):
                fields.update(_serialem_description_fields(description.value))
    except (OSError, ValueError, tifffile.TiffFileError) as err:
        raise InputError(f"cannot read the TIFF header: {err}", path=path,
                         expected="a TIFF or EER movie") from err
    return fields


#: EER metadata item name → (field, converter from (value, unit)).
_EER_ITEMS = {
    "exposureTime": ("exposure_time_s", lambda v, u: float(v)),
    "numberOfFrames": ("n_frames", lambda v, u: int(v)),
    "totalDose": ("total_dose_e_per_angst2", lambda v, u: float(v) * 1e-20 if u == "e/m^2"
                  else float(v)),
    "meanDoseRate": ("dose_rate_e_per_px_per_s", lambda v, u: float(v)),
    "sensorPixelSize.width": ("physical_pixel_size_angst", lambda v, u: float(v) * 1e10),
    "sensorImageWidth": ("sensor_width_px", lambda v, u: int(v)),
    "acquisitionTime": ("acquisition_time", lambda v, u: str(v)),
}


def _eer_metadata_fields(raw: bytes | str) -> Fields:
    """Fields of the EER metadata XML kept in TIFF tag 65001."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        root = ET.fromstring(text.strip("\x00").strip())
    except ET.ParseError:
        return {}
    fields: Fields = {}
    for item in root.iter("item"):
        name = item.get("name", "")
        if name in _EER_ITEMS and item.text:
            ours, convert = _EER_ITEMS[name]
            fields[ours] = (convert(item.text.strip(), item.get("unit", "")),
                            f"EER metadata tag 65001: {name}")
    fields.pop("dose_rate_e_per_px_per_s", None)
    fields.pop("sensor_width_px", None)
    return fields


#: SerialEM ImageDescription / mdoc key → (field, converter).
SERIALEM_KEYS = {
    "PixelSpacing": ("pixel_size_angst", float),
    "Voltage": ("voltage_kv", float),
    "ExposureDose": ("total_dose_e_per_angst2", float),
    "ExposureTime": ("exposure_time_s", float),
    "NumSubFrames": ("n_frames", int),
    "Binning": ("binning", float),
    "Magnification": ("magnification", lambda v: int(round(float(v)))),
    "TargetDefocus": ("applied_defocus_um", float),
    "GainReference": ("gain_reference", str),
    "DefectFile": ("defects_file", str),
    "SubFramePath": ("movie_name", lambda v: v.replace("\\", "/").rsplit("/", 1)[-1]),
    "DateTime": ("acquisition_time", str),
    "SphericalAberration": ("cs_mm", float),
}


def _serialem_description_fields(text: str) -> Fields:
    """``key = value`` lines that SerialEM writes into a TIFF ImageDescription."""
    fields: Fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if sep and key in SERIALEM_KEYS and value:
            ours, convert = SERIALEM_KEYS[key]
            try:
                fields[ours] = (convert(value), f"ImageDescription: {key}")
            except ValueError:
                continue
    return fields

"""Acquisition metadata (what EPU or SerialEM wrote) → one typed :class:`AcquisitionParams`.

Readers, chosen by the file's name and content (:func:`read_acquisition`):

- EPU per-movie XML (``FoilHole_*_Data_*.xml``, root ``MicroscopeImage``), EPU 1.x to 3.x;
  a ``*_Fractions.xml`` side-car beside it is merged in;
- the EPU dose-fractions side-car alone (``*_Fractions.xml``, root ``Acquisition``);
- the EPU session file (``EpuSession.dm`` / ``.xml``, root ``EpuSessionXml``);
- SerialEM ``.mdoc`` (frame sets and tilt series; the microscope number is optional);
- movie headers: MRC (with FEI1/FEI2 extended header) and TIFF/EER.

Every value carries its source ``(file, field)``; a field no file gives stays ``None`` and is
listed by name in :attr:`AcquisitionParams.missing`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vitrify.io._acq_params import (
    PARAM_FIELDS,
    AcquisitionParams,
    apply_overrides,
    asdict_plain,
    complete_derived,
    merge_params,
    params_from_fields,
    with_value,
)
from vitrify.io._epu import (
    read_epu_fractions_xml,
    read_epu_movie_xml,
    read_epu_session,
    xml_root_name,
)
from vitrify.io._headers import read_movie_shape, read_mrc_header_fields, read_tiff_header_fields
from vitrify.io._mdoc import read_mdoc
from vitrify.io.errors import InputError

__all__ = ["AcquisitionParams", "PARAM_FIELDS", "read_acquisition", "params_from_fields",
           "merge_params", "with_value", "apply_overrides", "complete_derived", "asdict_plain", "read_movie_shape",
           "read_epu_movie_xml", "read_epu_fractions_xml", "read_epu_session", "read_mdoc"]


def _read_mrc(path: Path) -> AcquisitionParams:
    return params_from_fields(read_mrc_header_fields(path), path)


def _read_tiff(path: Path) -> AcquisitionParams:
    return params_from_fields(read_tiff_header_fields(path), path)


#: XML root element (local name) → reader.
XML_READERS: dict[str, Callable[[Path], AcquisitionParams]] = {
    "MicroscopeImage": read_epu_movie_xml,
    "Acquisition": read_epu_fractions_xml,
    "EpuSessionXml": read_epu_session,
}

#: File suffix → reader for files that are not XML.
SUFFIX_READERS: dict[str, Callable[[Path], AcquisitionParams]] = {
    ".mdoc": read_mdoc,
    ".mrc": _read_mrc,
    ".mrcs": _read_mrc,
    ".tif": _read_tiff,
    ".tiff": _read_tiff,
    ".eer": _read_tiff,
}


def read_acquisition(path: str | Path) -> AcquisitionParams:
    """Read acquisition metadata from an EPU XML/.dm, a SerialEM mdoc or a movie header.

    Raises
    ------
    InputError
        If the file is missing, of an unknown kind, truncated or corrupt; the message names
        the file (and the line for mdoc and XML).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path=path, expected="an acquisition metadata file")
    suffix = path.suffix.lower()
    if suffix in SUFFIX_READERS:
        return SUFFIX_READERS[suffix](path)
    if suffix in (".xml", ".dm"):
        root = xml_root_name(path)
        if root in XML_READERS:
            return XML_READERS[root](path)
        raise InputError(f"unknown XML root element <{root}>", path=path,
                         expected="<" + ">, <".join(XML_READERS) + ">")
    raise InputError(f"unknown metadata file type {suffix!r}", path=path,
                     expected="EPU .xml/.dm, SerialEM .mdoc, or a .mrc/.tiff/.eer movie")

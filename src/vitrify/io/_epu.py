"""EPU (Thermo Fisher) metadata: per-movie XML, the ``_Fractions.xml`` side-car, the session file.

Parsed with the standard library's ``xml.etree.ElementTree`` and matched on *local* element
names: EPU's namespace prefixes (``a:``, ``b:``, ``c:``...) differ between files and versions,
and ElementTree's ``ParseError`` gives the line and column where a truncated file ends.

Facts used (EPU 1.x-3.x, checked on the real files in the test fixtures):

- ``SpatialScale/pixelSize/x/numericValue`` is in metres, refers to the physical pixel and
  already includes binning; the pixel of the saved frames is that divided by the
  ``SuperResolutionFactor`` of ``CameraSpecificInput``.
- ``CustomData``: ``Dose`` in e/m² (x 1e-20 → e/Å²) for the whole exposure, ``AppliedDefocus``
  in m (negative = underfocus), ``PhasePlateUsed``; ``gun/AccelerationVoltage`` in V.
- Frames: ``FractionationSettings`` is ``EquidistantFractionation`` (``NumberOffractions``)
  or ``VaridistantFractionation`` (one ``DoseFractions`` entry per fraction, with raw
  ``StartFrameNumber``/``EndFrameNumber``).
- ``_Fractions.xml``: one ``Fraction`` per saved frame with ``ExposureTime`` (s, of that
  fraction), ``MeanPixelValue``, ``PixelValueToCameraCounts`` and ``CountsToElectrons``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from vitrify.io._acq_params import AcquisitionParams, merge_params, params_from_fields
from vitrify.io.errors import InputError

Fields = dict[str, tuple[object, str]]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def parse_xml(path: Path) -> ET.Element:
    """Parse an XML file; a truncated or corrupt file raises :class:`InputError` with the line."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as err:
        line, column = err.position
        reason = str(err).split(":", 1)[0]
        raise InputError(f"truncated or corrupt XML ({reason})",
                         path=path, field=f"line {line}, column {column}",
                         expected="a complete XML file (EPU may still be writing it)") from err
    except OSError as err:
        raise InputError(f"cannot read: {err}", path=path) from err


def xml_root_name(path: Path) -> str:
    """Local name of the root element, read from the start of the file only."""
    try:
        for _, elem in ET.iterparse(path, events=("start",)):
            return _local(elem.tag)
    except ET.ParseError as err:
        line, column = err.position
        raise InputError("not a readable XML file", path=path,
                         field=f"line {line}, column {column}", expected="XML") from err
    raise InputError("empty XML file", path=path, expected="XML")


def child(elem: ET.Element | None, path: str) -> ET.Element | None:
    """Descend ``a/b/c`` by local names (first match at each level); ``None`` if absent."""
    for name in path.split("/"):
        if elem is None:
            return None
        elem = next((c for c in elem if _local(c.tag) == name), None)
    return elem


def text(elem: ET.Element | None, path: str) -> str | None:
    """Stripped text at ``path`` under ``elem``, ``None`` if absent, empty or ``i:nil``."""
    found = child(elem, path)
    if found is None or found.text is None or not found.text.strip():
        return None
    return found.text.strip()


def key_values(elem: ET.Element | None) -> dict[str, ET.Element]:
    """EPU's serialised dictionaries: ``{Key: Value element}`` of ``KeyValueOf...`` children."""
    out: dict[str, ET.Element] = {}
    if elem is None:
        return out
    for pair in elem.iter():
        if not _local(pair.tag).startswith("KeyValue"):
            continue
        key = next((c for c in pair if _local(c.tag).lower() == "key"), None)
        value = next((c for c in pair if _local(c.tag).lower() == "value"), None)
        if key is not None and value is not None and key.text:
            out[key.text.strip()] = value
    return out


def _bool(value: str | None) -> bool | None:
    return None if value is None else value.strip().lower() in ("true", "on", "1")


def _float(value: str | None, path: Path, name: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError as err:
        raise InputError(f"not a number: {value!r}", path=path, field=name,
                         expected="a number") from err


def count_fractions(fractionation: ET.Element | None) -> tuple[int | None, int | None, str]:
    """``(n_frames, raw_frames_or_None, field)`` from EPU's ``FractionationSettings`` value."""
    if fractionation is None:
        return None, None, ""
    number = text(fractionation, "NumberOffractions")
    if number is not None:
        return int(number), None, "FractionationSettings/NumberOffractions"
    doses = child(fractionation, "DoseFractions")
    if doses is not None:
        ends = [text(d, "EndFrameNumber") for d in doses]
        raw = max((int(e) for e in ends if e), default=None)
        return len(doses), raw, "FractionationSettings/DoseFractions (count)"
    return None, None, ""


#: Gatan sensor sizes (width, height in physical pixels) → model.
GATAN_SENSORS = {(3838, 3710): "Gatan K2", (5760, 4092): "Gatan K3"}
#: Raw frame rate (frames per second) above which a Falcon is a Falcon 4 (Falcon 3: ~40 fps).
FALCON4_MIN_FPS = 100.0


def detector_model(name: str | None, readout: tuple[int, int] | None,
                   raw_frames: int | None, exposure_time_s: float | None) -> tuple[str, str] | None:
    """Detector model from the camera name and what it implies, with the reasoning as source."""
    if name is None:
        return None
    if "CCD" in name.upper() and readout is not None:
        model = GATAN_SENSORS.get(readout) or GATAN_SENSORS.get(readout[::-1])
        if model:
            return model, f"camera/Name {name} + ReadoutArea {readout[0]} x {readout[1]}"
    if "FALCON" in name.upper() and raw_frames and exposure_time_s:
        fps = raw_frames / exposure_time_s
        model = "Falcon 4" if fps > FALCON4_MIN_FPS else "Falcon 3"
        return model, f"camera/Name {name} + {raw_frames} raw frames in {exposure_time_s} s"
    return None


def _pair(elem: ET.Element | None, path: Path, name: str) -> tuple[float, float] | None:
    if elem is None:
        return None
    x, y = text(elem, "_x"), text(elem, "_y")
    if x is None or y is None:
        return None
    return (_float(x, path, f"{name}/_x"), _float(y, path, f"{name}/_y"))


def _camera_fields(camera: ET.Element | None, path: Path) -> Fields:
    """Fields of ``microscopeData/acquisition/camera`` (the detector model where it follows)."""
    inputs = key_values(child(camera, "CameraSpecificInput"))
    sr_text = inputs["SuperResolutionFactor"].text if "SuperResolutionFactor" in inputs else None
    n_frames, raw_frames, frames_field = count_fractions(inputs.get("FractionationSettings"))
    fields: Fields = {
        "detector": (text(camera, "Name"), "camera/Name"),
        "exposure_time_s": (_float(text(camera, "ExposureTime"), path, "ExposureTime"),
                            "camera/ExposureTime"),
        "binning": (_float(text(camera, "Binning/x"), path, "Binning"), "camera/Binning/x"),
        "n_frames": (n_frames, f"CameraSpecificInput/{frames_field}"),
    }
    if "ElectronCountingEnabled" in inputs:
        fields["counting"] = (_bool(inputs["ElectronCountingEnabled"].text),
                              "CameraSpecificInput/ElectronCountingEnabled")
    if sr_text is not None:
        fields["super_resolution"] = (int(sr_text) > 1, "CameraSpecificInput/SuperResolutionFactor")
    if any("eer" in key.lower() for key in inputs):
        fields["eer"] = (True, "CameraSpecificInput (EER keys)")
    width, height = text(camera, "ReadoutArea/width"), text(camera, "ReadoutArea/height")
    readout = (int(width), int(height)) if width and height else None
    if readout:
        factor = int(sr_text) if sr_text else 1
        fields["frame_size_px"] = ((readout[0] * factor, readout[1] * factor),
                                   "camera/ReadoutArea x SuperResolutionFactor")
    model = detector_model(fields["detector"][0], readout, raw_frames, fields["exposure_time_s"][0])
    if model:
        fields["detector_model"] = model
    return fields


def _custom_fields(custom: dict[str, ET.Element], path: Path) -> Fields:
    """Fields of the per-movie ``CustomData`` dictionary."""
    def number(key: str) -> float | None:
        return _float(custom[key].text, path, f"CustomData/{key}") if key in custom else None

    dose, defocus, cs = number("Dose"), number("AppliedDefocus"), number("SphericalAberration")
    fields: Fields = {
        "total_dose_e_per_angst2": (None if dose is None else dose * 1e-20, "CustomData/Dose"),
        "applied_defocus_um": (None if defocus is None else defocus * 1e6,
                               "CustomData/AppliedDefocus"),
        "cs_mm": (None if cs is None else cs * 1e3, "CustomData/SphericalAberration"),
    }
    if "PhasePlateUsed" in custom:
        fields["phase_plate"] = (_bool(custom["PhasePlateUsed"].text), "CustomData/PhasePlateUsed")
    commercial = [k for k in custom if k.endswith("CommercialName") and custom[k].text]
    if commercial:
        fields["detector_model"] = (custom[commercial[0]].text.strip(), f"CustomData/{commercial[0]}")
    return fields


def _scope_fields(root: ET.Element, path: Path) -> Fields:
    """Pixel size, voltage, optics and software fields of a ``MicroscopeImage``."""
    scope = child(root, "microscopeData")
    optics = child(scope, "optics")
    pixel_m = _float(text(root, "SpatialScale/pixelSize/x/numericValue"), path, "pixelSize")
    volts = _float(text(scope, "gun/AccelerationVoltage"), path, "AccelerationVoltage")
    mag = text(optics, "TemMagnification/NominalMagnification")
    fields: Fields = {
        "physical_pixel_size_angst": (None if pixel_m is None else pixel_m * 1e10,
                                      "SpatialScale/pixelSize/x/numericValue"),
        "voltage_kv": (None if volts is None else volts / 1000.0, "gun/AccelerationVoltage"),
        "magnification": (None if mag is None else int(float(mag)),
                          "optics/TemMagnification/NominalMagnification"),
        "beam_tilt_xy_raw": (_pair(child(optics, "BeamTilt"), path, "BeamTilt"), "optics/BeamTilt"),
        "beam_shift_xy_raw": (_pair(child(optics, "BeamShift"), path, "BeamShift"),
                              "optics/BeamShift"),
        "image_shift_xy_raw": (_pair(child(optics, "ImageShift"), path, "ImageShift"),
                               "optics/ImageShift"),
        "software": (text(scope, "core/ApplicationSoftware"), "core/ApplicationSoftware"),
        "software_version": (text(scope, "core/ApplicationSoftwareVersion"),
                             "core/ApplicationSoftwareVersion"),
        "acquisition_time": (text(scope, "acquisition/acquisitionDateTime"),
                             "acquisition/acquisitionDateTime"),
        "microscope_id": (text(scope, "instrument/InstrumentID"), "instrument/InstrumentID"),
    }
    if _bool(text(optics, "EFTEMOn")) and _bool(text(optics, "EnergyFilter/EnergySelectionSlitInserted")):
        fields["energy_filter_slit_width_ev"] = (
            _float(text(optics, "EnergyFilter/EnergySelectionSlitWidth"), path, "SlitWidth"),
            "optics/EnergyFilter/EnergySelectionSlitWidth")
    return fields


def read_epu_movie_xml(path: str | Path, *, with_fractions: bool = True) -> AcquisitionParams:
    """Read an EPU per-movie XML (root ``MicroscopeImage``); merge a ``_Fractions.xml`` beside it."""
    path = Path(path)
    root = parse_xml(path)
    if _local(root.tag) != "MicroscopeImage":
        raise InputError(f"root element is <{_local(root.tag)}>", path=path,
                         expected="an EPU per-movie XML with root <MicroscopeImage>")
    camera = child(root, "microscopeData/acquisition/camera")
    fields = _camera_fields(camera, path)
    custom = key_values(child(root, "CustomData"))
    fields.update(_custom_fields(custom, path))
    fields.update(_scope_fields(root, path))
    if fields["detector"][0] is None and "BinaryResult.Detector" in custom:
        fields["detector"] = (custom["BinaryResult.Detector"].text, "CustomData/BinaryResult.Detector")
    _add_pixel_size(fields)
    params = params_from_fields(fields, path)
    side_car = path.with_name(path.stem + "_Fractions.xml")
    if with_fractions and side_car.is_file():
        params = merge_params(params, read_epu_fractions_xml(side_car))
    return params


def _add_pixel_size(fields: Fields) -> None:
    """Saved-frame pixel = EPU's pixel / SuperResolutionFactor; physical = EPU's pixel / binning.

    EPU's ``SpatialScale`` pixel is the physical detector pixel times the binning.
    """
    epu_pixel = fields.pop("physical_pixel_size_angst")[0]
    if epu_pixel is None:
        return
    factor = 2.0 if fields.get("super_resolution", (False, ""))[0] else 1.0
    fields["pixel_size_angst"] = (epu_pixel / factor,
                                  "SpatialScale/pixelSize/x/numericValue / SuperResolutionFactor")
    binning = fields.get("binning", (None, ""))[0]
    if binning:
        fields["physical_pixel_size_angst"] = (epu_pixel / binning,
                                               "SpatialScale/pixelSize/x/numericValue / Binning")


def read_epu_fractions_xml(path: str | Path) -> AcquisitionParams:
    """Read an EPU dose-fractions side-car (``*_Fractions.xml``, root ``Acquisition``)."""
    path = Path(path)
    root = parse_xml(path)
    info = child(root, "Info")
    fractions = [f for f in (child(root, "Fractions") or []) if _local(f.tag) == "Fraction"]
    if info is None or not fractions:
        raise InputError("no <Info> or no <Fraction> entries", path=path,
                         expected="an EPU _Fractions.xml with Info and Fractions")
    times = [_float(text(f, "ExposureTime"), path, "Fraction/ExposureTime") for f in fractions]
    electrons = [(_float(text(f, "MeanPixelValue"), path, "MeanPixelValue") or 0.0)
                 * (_float(text(f, "PixelValueToCameraCounts"), path, "PixelValueToCameraCounts") or 1.0)
                 * (_float(text(f, "CountsToElectrons"), path, "CountsToElectrons") or 0.0)
                 for f in fractions]
    detector = text(info, "Detector")
    recorded = text(info, "RecordedNumberOfFractions")
    width, height = text(info, "RegionOfInterest/Width"), text(info, "RegionOfInterest/Height")
    fields: Fields = {
        "n_frames": (int(recorded) if recorded else len(fractions),
                     "Info/RecordedNumberOfFractions"),
        "exposure_time_s": (sum(times) if all(t is not None for t in times) else None,
                            "sum of Fraction/ExposureTime"),
        "detector": (detector, "Info/Detector"),
        "detector_model": (None if detector is None else detector.replace("-", " "), "Info/Detector"),
        "binning": (_float(text(info, "Binning"), path, "Binning"), "Info/Binning"),
        "counting": (_bool(text(info, "ElectronCounting")), "Info/ElectronCounting"),
        "acquisition_time": (text(info, "DateTimeWithTimeZone"), "Info/DateTimeWithTimeZone"),
        "frame_size_px": ((int(width), int(height)) if width and height else None,
                          "Info/RegionOfInterest"),
        "total_dose_e_per_px": (sum(electrons) if any(electrons) else None,
                                "sum of MeanPixelValue x PixelValueToCameraCounts x CountsToElectrons"),
    }
    return params_from_fields(fields, path)


def _session_acquisition_preset(root: ET.Element) -> ET.Element | None:
    """The ``Acquisition`` preset (``b:Acquisition``/``b:Optics``) of the first sample."""
    for sample in root.iter():
        if _local(sample.tag) != "SampleXml" or child(sample, "MicroscopeSettings") is None:
            continue
        for pair in child(sample, "MicroscopeSettings").iter():
            if _local(pair.tag).startswith("KeyValuePairOfExperimentSettingsId") and \
                    text(pair, "key") == "Acquisition":
                return child(pair, "value")
    return None


def _session_version(version: ET.Element | None) -> str | None:
    """``Major.Minor.Build.Revision`` of the session's ``Version`` element."""
    if version is None:
        return None
    parts = {_local(c.tag): (c.text or "0").strip() for c in version}
    order = ("_Major", "_Minor", "_Build", "_Revision")
    return ".".join(parts[p] for p in order if p in parts) or None


def read_epu_session(path: str | Path) -> AcquisitionParams:
    """Read an EPU session file (``EpuSession.dm``/``.xml``): the data-acquisition preset."""
    path = Path(path)
    root = parse_xml(path)
    preset = _session_acquisition_preset(root)
    if preset is None:
        raise InputError("no Acquisition preset in the session", path=path,
                         expected="an EpuSession file with MicroscopeSettings/Acquisition")
    camera = child(preset, "Acquisition/camera")
    fields = _camera_fields(camera, path)
    optics = child(preset, "Optics")
    defocus = _float(text(optics, "Defocus"), path, "Optics/Defocus")
    mag = text(optics, "TemMagnification/NominalMagnification")
    version = child(root, "Version")
    fields.update({
        "applied_defocus_um": (None if defocus is None else defocus * 1e6,
                               "Acquisition preset Optics/Defocus"),
        "magnification": (None if mag is None else int(float(mag)),
                          "Acquisition preset Optics/TemMagnification/NominalMagnification"),
        "phase_plate": (_bool(text(root, "PhasePlateEnabled")), "PhasePlateEnabled"),
        "acquisition_time": (text(root, "StartDateTime"), "StartDateTime"),
        "software": ("EPU", "root element EpuSessionXml"),
        "software_version": (_session_version(version), "Version"),
    })
    fields = {k: (v, f"Acquisition preset {f}" if f.startswith(("camera", "Camera")) else f)
              for k, (v, f) in fields.items()}
    return params_from_fields(fields, path)

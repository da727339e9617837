"""Acquisition metadata for simulated movies: EPU-style XML and SerialEM-style mdoc per movie.

What a microscope would have written beside each movie, so that ``vitrify mdcatch`` can set up
processing of simulated data exactly as it does for real sessions (and so that the metadata
readers can be tested by round trip). The XML follows EPU's per-movie ``MicroscopeImage``
layout (SI units: metres, volts, e/m²); the mdoc follows SerialEM's frame-set layout
(Å, kV, e/Å² for the whole movie, µm for defocus, negative = underfocus).

Neither format stores the spherical aberration. We add it under a documented extra key
(``SphericalAberration``, metres in the XML's CustomData and mm in the mdoc) that the readers
recognise, and that EPU and SerialEM never write.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from xml.sax.saxutils import escape

from vitrify import __version__
from vitrify.io.acquisition import read_movie_shape
from vitrify.io.atomic import atomic_write
from vitrify.io.errors import InputError

_NS = ('xmlns="http://schemas.datacontract.org/2004/07/Fei.SharedObjects" '
       'xmlns:i="http://www.w3.org/2001/XMLSchema-instance"')
_ARR = 'xmlns:a="http://schemas.microsoft.com/2003/10/Serialization/Arrays"'
_XS = 'xmlns:b="http://www.w3.org/2001/XMLSchema"'
_OMP = 'xmlns:b="http://schemas.datacontract.org/2004/07/Fei.Applications.Common.Omp.Interface"'
_DRAW = 'xmlns:a="http://schemas.datacontract.org/2004/07/System.Drawing"'
_TYPES = 'xmlns:a="http://schemas.datacontract.org/2004/07/Fei.Types"'

#: Name of the simulated instrument, written where a microscope writes its own.
SIMULATED_INSTRUMENT = "vitrify-simulator"


def write_session_metadata(out_dir: str | Path, movie_paths: list[str | Path], *,
                           pixel_size_angst: float, voltage_kv: float, cs_mm: float,
                           dose_per_frame_e_per_angst2: float, exposure_time_s: float,
                           defocus_angst: float) -> list[Path]:
    """Write ``<movie stem>.xml`` (EPU style) and ``<movie name>.mdoc`` (SerialEM) per movie.

    Parameters
    ----------
    out_dir
        Directory that receives the metadata files (usually the movies' own directory).
    movie_paths
        Movies (TIFF or MRC, frames x ny x nx); their frame count and size are read from
        their headers.
    pixel_size_angst, voltage_kv, cs_mm
        Pixel size of the frames as saved, acceleration voltage, spherical aberration.
    dose_per_frame_e_per_angst2, exposure_time_s
        Electron dose per frame and total exposure time of one movie.
    defocus_angst
        Applied defocus, positive = underfocus (RELION's convention).

    Returns
    -------
    list[Path]
        The files written, ``[xml, mdoc]`` for each movie in order.
    """
    if pixel_size_angst <= 0 or voltage_kv <= 0 or exposure_time_s <= 0:
        raise InputError("pixel size, voltage and exposure time must be positive",
                         field="write_session_metadata", expected="values > 0")
    out_dir = Path(out_dir)
    written: list[Path] = []
    start = _dt.datetime(2026, 1, 1, 9, 0, 0, tzinfo=_dt.timezone.utc)
    for index, movie in enumerate(movie_paths):
        movie = Path(movie)
        n_frames, ny, nx = read_movie_shape(movie)
        values = {
            "pixel_size_angst": pixel_size_angst, "voltage_kv": voltage_kv, "cs_mm": cs_mm,
            "total_dose": dose_per_frame_e_per_angst2 * n_frames, "n_frames": n_frames,
            "dose_per_frame": dose_per_frame_e_per_angst2, "nx": nx, "ny": ny,
            "exposure_time_s": exposure_time_s, "defocus_angst": defocus_angst,
            "time": start + _dt.timedelta(seconds=30 * index), "movie": movie,
        }
        xml_path = out_dir / f"{movie.stem}.xml"
        mdoc_path = out_dir / f"{movie.name}.mdoc"
        atomic_write(xml_path, format_epu_xml(values))
        atomic_write(mdoc_path, format_mdoc(values))
        written += [xml_path, mdoc_path]
    return written


def _kv(key: str, xsd_type: str, value: object) -> str:
    return (f"<a:KeyValueOfstringanyType><a:Key>{key}</a:Key><a:Value i:type=\"b:{xsd_type}\" "
            f"{_XS}>{value}</a:Value></a:KeyValueOfstringanyType>")


def _xy(tag: str, x: float = 0.0, y: float = 0.0) -> str:
    return f"<{tag} {_TYPES}><a:_x>{x!r}</a:_x><a:_y>{y!r}</a:_y></{tag}>"


def format_epu_xml(values: dict) -> str:
    """EPU per-movie ``MicroscopeImage`` XML text for one movie (SI units, as EPU writes)."""
    pixel_m = values["pixel_size_angst"] * 1e-10
    custom = "".join([
        _kv("Dose", "double", repr(values["total_dose"] * 1e20)),
        _kv("PhasePlateUsed", "boolean", "false"),
        _kv("BinaryResult.Detector", "string", "BM-Falcon"),
        _kv("AppliedDefocus", "double", repr(-values["defocus_angst"] * 1e-10)),
        _kv("SphericalAberration", "double", repr(values["cs_mm"] * 1e-3)),
    ])
    camera_input = "".join([
        _kv("ElectronCountingEnabled", "boolean", "true"),
        _kv("SuperResolutionFactor", "int", "1"),
        "<a:KeyValueOfstringanyType><a:Key>FractionationSettings</a:Key>"
        f"<a:Value i:type=\"b:EquidistantFractionation\" {_OMP}>"
        f"<b:NumberOffractions>{values['n_frames']}</b:NumberOffractions></a:Value>"
        "</a:KeyValueOfstringanyType>",
    ])
    pixel = (f"<pixelSize><x><numericValue>{pixel_m!r}</numericValue></x>"
             f"<y><numericValue>{pixel_m!r}</numericValue></y></pixelSize>")
    camera = (f"<camera><Binning {_DRAW}><a:x>1</a:x><a:y>1</a:y></Binning>"
              f"<CameraLocation>BottomMounted</CameraLocation>"
              f"<CameraSpecificInput {_ARR}>{camera_input}</CameraSpecificInput>"
              f"<ExposureTime>{values['exposure_time_s']!r}</ExposureTime>"
              f"<Name>BM-Falcon</Name><ReadoutArea {_DRAW}><a:height>{values['ny']}</a:height>"
              f"<a:width>{values['nx']}</a:width><a:x>0</a:x><a:y>0</a:y></ReadoutArea></camera>")
    optics = (f"<optics>{_xy('BeamShift')}{_xy('BeamTilt')}"
              f"<Defocus>{-values['defocus_angst'] * 1e-10!r}</Defocus>{_xy('ImageShift')}"
              "</optics>")
    return (f"<MicroscopeImage {_NS}><name>{escape(values['movie'].name)}</name>"
            f"<CustomData {_ARR}>{custom}</CustomData>"
            f"<SpatialScale>{pixel}</SpatialScale><microscopeData>"
            f"<acquisition><acquisitionDateTime>{values['time'].isoformat()}"
            f"</acquisitionDateTime>{camera}</acquisition>"
            f"<core><ApplicationSoftware>EPU</ApplicationSoftware>"
            f"<ApplicationSoftwareVersion>vitrify-{__version__}</ApplicationSoftwareVersion></core>"
            f"<gun><AccelerationVoltage>{values['voltage_kv'] * 1000.0!r}</AccelerationVoltage></gun>"
            f"<instrument><InstrumentID>{SIMULATED_INSTRUMENT}</InstrumentID>"
            f"<InstrumentModel>{SIMULATED_INSTRUMENT}</InstrumentModel></instrument>"
            f"{optics}</microscopeData></MicroscopeImage>\n")


def format_mdoc(values: dict) -> str:
    """SerialEM single-movie (FrameSet) mdoc text for one movie."""
    stamp = values["time"].strftime("%d-%b-%y  %H:%M:%S")
    defocus_um = -values["defocus_angst"] * 1e-4
    lines = [
        f"T = SerialEM: Acquired on {SIMULATED_INSTRUMENT}    {stamp}",
        f"Voltage = {values['voltage_kv']:g}",
        "",
        "[FrameSet = 0]",
        "TiltAngle = 0",
        f"ExposureDose = {values['total_dose']!r}",
        f"PixelSpacing = {values['pixel_size_angst']!r}",
        f"Defocus = {defocus_um!r}",
        f"TargetDefocus = {defocus_um!r}",
        f"ExposureTime = {values['exposure_time_s']!r}",
        "Binning = 1",
        "CountsPerElectron = 1",
        f"SubFramePath = {values['movie'].name}",
        f"NumSubFrames = {values['n_frames']}",
        f"FrameDosesAndNumber = {values['dose_per_frame']!r} {values['n_frames']}",
        f"DateTime = {stamp}",
        f"ImageSize = {values['nx']} {values['ny']}",
        f"SphericalAberration = {values['cs_mm']!r}",
        "",
    ]
    return "\n".join(lines)

"""Acquisition metadata readers against real EPU/SerialEM files and simulated round trips.

Expected values are copied from the raw fixture text (quoted in comments) and converted with
the formats' documented units (fixtures README): EPU pixel in m, dose in e/m², voltage in V;
mdoc PixelSpacing in Å, ExposureDose e/Å² per movie, Binning 0.5 = super-resolution.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_shared, shared_fixtures
from vitrify.io.acquisition import asdict_plain, read_acquisition
from vitrify.io.errors import InputError

FIXTURES = shared_fixtures("acquisition")

FALCON = "FoilHole_18890345_Data_18881924_18881926_20200320_090200.xml"
K2 = "FoilHole_22011316_Data_19957701_19957703_20200323_100235.xml"
FRACTIONS = "FoilHole_5330585_Data_5338216_5338218_20200206_170645_Fractions.xml"


@needs_shared("acquisition")
def test_epu_falcon3_movie_xml():
    p = read_acquisition(FIXTURES / FALCON)
    # <numericValue>1.0684707979491392E-10</numericValue>, SuperResolutionFactor 1
    assert p.pixel_size_angst == pytest.approx(1.0684707979491392)
    assert p.voltage_kv == 300.0  # <AccelerationVoltage>300000</AccelerationVoltage>
    assert p.total_dose_e_per_angst2 == pytest.approx(40.054052480334315)  # Dose 4.0054...E+21
    assert p.n_frames == 40  # 40 DoseFractionDefinition entries (1-68, ..., 2653-2734)
    assert p.dose_per_frame_e_per_angst2 == pytest.approx(40.054052480334315 / 40)
    assert p.exposure_time_s == 70.36
    assert p.detector == "BM-Falcon"
    assert p.detector_model == "Falcon 3"  # 2734 raw frames / 70.36 s = 38.9 fps
    assert p.counting is True and p.super_resolution is False and p.binning == 1
    assert p.applied_defocus_um == pytest.approx(-3.25)  # AppliedDefocus -3.25E-06 m
    assert p.phase_plate is False
    assert p.magnification == 75000
    assert p.beam_tilt_xy_raw == pytest.approx((-0.0020500000100582838, 0.014999999664723873))
    assert p.software == "EPU" and p.software_version == "2.6.1.69"
    assert p.microscope_id == "3299"
    assert p.acquisition_time.startswith("2020-03-20T09:02:01")
    assert p.frame_size_px == (4096, 4096)
    assert p.cs_mm is None and "cs_mm" in p.missing  # EPU does not write Cs
    assert p.sources["pixel_size_angst"][0] == FALCON


@needs_shared("acquisition")
def test_epu_k2_energy_filter_movie_xml():
    p = read_acquisition(FIXTURES / K2)
    assert p.pixel_size_angst == pytest.approx(1.18367010637499)
    assert p.total_dose_e_per_angst2 == pytest.approx(25.179406498997747)
    assert p.n_frames == 40  # <b:NumberOffractions>40</b:NumberOffractions>
    assert p.exposure_time_s == 10.0
    assert p.detector == "EF-CCD" and p.detector_model == "Gatan K2"  # 3838 x 3710 sensor
    assert p.applied_defocus_um == pytest.approx(-2.2)
    assert p.magnification == 105000
    assert p.energy_filter_slit_width_ev == 20.0
    assert p.frame_size_px == (3838, 3710)


@needs_shared("acquisition")
def test_epu_fractions_side_car():
    p = read_acquisition(FIXTURES / FRACTIONS)
    assert p.n_frames == 22  # <RecordedNumberOfFractions>22</RecordedNumberOfFractions>
    assert p.exposure_time_s == pytest.approx(22 * 1.47045708)  # 22 fractions of 1.47045708 s
    assert p.detector == "Falcon-3" and p.detector_model == "Falcon 3"
    assert p.counting is True and p.binning == 1
    assert p.frame_size_px == (4096, 4096)
    # 21 fractions with MeanPixelValue ~109, the last 93.22; CountsToElectrons 0.00968656689
    assert p.total_dose_e_per_px == pytest.approx(23.07, abs=0.01)
    assert p.pixel_size_angst is None and "pixel_size_angst" in p.missing


@needs_shared("acquisition")
def test_fractions_side_car_merges_into_movie_xml(tmp_path):
    shutil.copy(FIXTURES / FALCON, tmp_path / "FoilHole_1_Data_2_3_4.xml")
    shutil.copy(FIXTURES / FRACTIONS, tmp_path / "FoilHole_1_Data_2_3_4_Fractions.xml")
    p = read_acquisition(tmp_path / "FoilHole_1_Data_2_3_4.xml")
    assert p.n_frames == 40  # the movie XML wins; the side-car only fills gaps
    assert p.total_dose_e_per_px == pytest.approx(23.07, abs=0.01)
    assert p.sources["total_dose_e_per_px"][0] == "FoilHole_1_Data_2_3_4_Fractions.xml"


@needs_shared("acquisition")
def test_epu_session_file():
    p = read_acquisition(FIXTURES / "EpuSession-K2.xml")
    assert p.detector == "EF-CCD" and p.detector_model == "Gatan K2"
    assert p.n_frames == 40 and p.exposure_time_s == 10.0
    assert p.counting is True and p.super_resolution is False
    assert p.applied_defocus_um == pytest.approx(-2.5)  # Optics/Defocus -2.4999999999999998E-06
    assert p.phase_plate is False  # <PhasePlateEnabled>false</PhasePlateEnabled>
    assert p.software_version == "2.1.0.0"
    assert {"pixel_size_angst", "voltage_kv", "total_dose_e_per_angst2"} <= set(p.missing)


@needs_shared("acquisition")
def test_serialem_frames_mdoc_without_d_number_in_brackets():
    p = read_acquisition(FIXTURES / "frames.mdoc")
    assert p.pixel_size_angst == pytest.approx(0.50226)  # PixelSpacing = 0.50226
    assert p.binning == 0.5 and p.super_resolution is True
    assert p.physical_pixel_size_angst == pytest.approx(1.00452)
    assert p.voltage_kv == 300.0
    assert p.total_dose_e_per_angst2 == 30.0 and p.n_frames == 40
    assert p.dose_per_frame_e_per_angst2 == pytest.approx(0.75)
    assert p.exposure_time_s == 1.0
    assert p.applied_defocus_um == pytest.approx(-2.3)  # TargetDefocus, not the lens Defocus
    assert p.magnification == 31000
    assert p.gain_reference == "SuperRef_00000_Aug11_14.13.17.dm4"
    assert p.defects_file == "defects_00000_Aug11_14.13.17.txt"
    assert p.movie_name == "00000_Aug11_14.13.17.tif"  # from X:\Data\Gregory\...
    assert p.microscope_id == "D304"
    assert p.acquisition_time == "2019-08-11T14:13:22"
    assert p.sources["n_frames"][1].startswith("[FrameSet = 0] NumSubFrames")


@needs_shared("acquisition")
def test_serialem_tilt_series_mdoc():
    p = read_acquisition(FIXTURES / "tilt_series.mdoc")
    assert len(p.tilt_angles_deg) == 41
    assert p.tilt_angles_deg[:3] == pytest.approx((0.000999877, 3.00113, -2.99863))
    assert max(p.tilt_angles_deg) == pytest.approx(60.0006)
    assert p.pixel_size_angst == 5.4 and p.binning == 4
    assert p.magnification == 105000 and p.n_frames == 8 and p.exposure_time_s == 0.8
    assert p.microscope_id == "EMBL Krios"  # no D-number on the title line
    assert p.total_dose_e_per_angst2 is None  # ExposureDose = 0: not calibrated
    assert "voltage_kv" in p.missing  # this mdoc has no Voltage line


@needs_shared("acquisition")
def test_truncated_xml_names_file_and_line(tmp_path):
    raw = (FIXTURES / K2).read_bytes()
    bad = tmp_path / "FoilHole_1_Data_2.xml"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"FoilHole_1_Data_2\.xml: line \d+.*truncated"):
        read_acquisition(bad)


@needs_shared("acquisition")
def test_mdoc_garbage_line_names_file_and_line(tmp_path):
    lines = (FIXTURES / "frames.mdoc").read_text().splitlines()
    lines.insert(5, "\x00\x01garbage without an equals sign")
    bad = tmp_path / "bad.mdoc"
    bad.write_text("\n".join(lines))
    with pytest.raises(InputError, match=r"bad\.mdoc: line 6: unreadable line"):
        read_acquisition(bad)


@needs_shared("acquisition")
def test_mdoc_malformed_number_names_line(tmp_path):
    text = (FIXTURES / "frames.mdoc").read_text().replace("NumSubFrames = 40", "NumSubFrames = 4x0")
    bad = tmp_path / "bad.mdoc"
    bad.write_text(text)
    with pytest.raises(InputError, match=r"bad\.mdoc: line 25: NumSubFrames"):
        read_acquisition(bad)


def test_unknown_files_are_input_errors(tmp_path):
    (tmp_path / "x.xml").write_text("<Other/>")
    with pytest.raises(InputError, match="unknown XML root"):
        read_acquisition(tmp_path / "x.xml")
    with pytest.raises(InputError, match="no such file"):
        read_acquisition(tmp_path / "none.mdoc")


@pytest.mark.parametrize("suffix", [".tiff", ".mrc"])
def test_simulated_session_metadata_round_trip(tmp_path, suffix):
    import mrcfile
    import tifffile

    from vitrify.sim.session import write_session_metadata

    frames = np.zeros((7, 20, 36), np.float32 if suffix == ".mrc" else np.uint8)
    movie = tmp_path / f"movie_0001{suffix}"
    if suffix == ".mrc":
        mrcfile.new(movie, frames).close()
    else:
        tifffile.imwrite(movie, frames)
    written = write_session_metadata(
        tmp_path, [movie], pixel_size_angst=0.83, voltage_kv=300.0, cs_mm=2.7,
        dose_per_frame_e_per_angst2=1.25, exposure_time_s=3.5, defocus_angst=18000.0)
    assert [w.name for w in written] == ["movie_0001.xml", f"movie_0001{suffix}.mdoc"]
    readings = [read_acquisition(w) for w in written]
    for p in readings:
        assert p.pixel_size_angst == pytest.approx(0.83)
        assert p.voltage_kv == 300.0 and p.cs_mm == pytest.approx(2.7)
        assert p.n_frames == 7
        assert p.dose_per_frame_e_per_angst2 == pytest.approx(1.25)
        assert p.total_dose_e_per_angst2 == pytest.approx(7 * 1.25)
        assert p.exposure_time_s == 3.5
        assert p.applied_defocus_um == pytest.approx(-1.8)  # 18000 Å underfocus
        assert p.frame_size_px == (36, 20)
    shared = {k for k, v in asdict_plain(readings[1]).items() if v is not None}
    xml_values, mdoc_values = asdict_plain(readings[0]), asdict_plain(readings[1])
    for name in shared - {"software", "acquisition_time", "binning", "movie_name"}:
        if xml_values[name] is not None:
            assert xml_values[name] == pytest.approx(mdoc_values[name]), name


@needs_shared("acquisition")
def test_json_has_units_sources_and_missing():
    import json

    data = json.loads(read_acquisition(FIXTURES / K2).to_json())
    assert data["pixel_size_angst"] == pytest.approx(1.18367010637499)
    assert data["missing"] == ["cs_mm", "gain_reference", "defects_file"]
    assert data["sources"]["voltage_kv"] == {"file": K2, "field": "gun/AccelerationVoltage"}


def _fei2_movie(path: Path, n_frames: int, *, dose_fraction: bool, kind: bytes = b"FEI2") -> None:
    import mrcfile
    from mrcfile.dtypes import get_ext_header_dtype

    dtype = get_ext_header_dtype(kind)
    ext = np.zeros(n_frames, dtype=dtype)
    ext["Metadata size"] = dtype.itemsize
    ext["HT"] = 300000.0  # V
    ext["Dose"] = 1.25e20  # e/m² = 1.25 e/Å² (per fraction when "Is dose fraction")
    ext["Pixel size X"] = 0.83e-10  # m
    ext["Integration time"] = 2.5
    ext["Binning Width"] = 1
    ext["Applied defocus"] = -1.5e-6  # m
    ext["Magnification"] = 105000
    ext["Camera name"] = b"BM-Falcon"
    if kind == b"FEI2":  # FEI1 records have no commercial name
        ext["Detector commercial name"] = b"Falcon 4i"
    ext["D-Number"] = b"D3593"
    ext["Is dose fraction"] = dose_fraction
    with mrcfile.new(path, np.zeros((n_frames, 8, 12), np.float32)) as mrc:
        mrc.set_extended_header(np.frombuffer(ext.tobytes(), dtype="V1"))
        mrc.header.exttyp = kind


def test_mrc_fei2_extended_header(tmp_path):
    _fei2_movie(tmp_path / "fractions.mrc", 6, dose_fraction=True)
    p = read_acquisition(tmp_path / "fractions.mrc")
    assert p.voltage_kv == 300.0 and p.pixel_size_angst == pytest.approx(0.83)
    assert p.n_frames == 6 and p.frame_size_px == (12, 8)
    assert p.total_dose_e_per_angst2 == pytest.approx(6 * 1.25)  # dose fractions add up
    assert p.dose_per_frame_e_per_angst2 == pytest.approx(1.25)
    assert p.applied_defocus_um == pytest.approx(-1.5)
    assert p.magnification == 105000 and p.exposure_time_s == 2.5
    assert p.detector == "BM-Falcon" and p.detector_model == "Falcon 4i"
    assert p.microscope_id == "D3593"
    assert p.sources["voltage_kv"] == ("fractions.mrc", "FEI2 extended header: HT")


def test_mrc_fei2_single_image_dose_is_the_total(tmp_path):
    _fei2_movie(tmp_path / "image.mrc", 1, dose_fraction=False)
    assert read_acquisition(tmp_path / "image.mrc").total_dose_e_per_angst2 == pytest.approx(1.25)


def test_tiff_serialem_description_and_eer_metadata_tag(tmp_path):
    import tifffile

    meta = (b'<metadata><item name="exposureTime" unit="s">3.2</item>'
            b'<item name="numberOfFrames">640</item>'
            b'<item name="totalDose" unit="e/m^2">4.5e21</item>'
            b'<item name="sensorPixelSize.width" unit="m">7.2e-11</item></metadata>')
    tifffile.imwrite(tmp_path / "m.tiff", np.zeros((5, 8, 12), np.uint8),
                     extratags=[(65001, "B", len(meta), meta, True)],
                     description="PixelSpacing = 0.72\nVoltage = 300\nTargetDefocus = -1.8\n")
    p = read_acquisition(tmp_path / "m.tiff")
    assert p.pixel_size_angst == pytest.approx(0.72) and p.voltage_kv == 300.0
    assert p.applied_defocus_um == pytest.approx(-1.8)
    assert p.n_frames == 640  # EER metadata: raw frames, not TIFF pages
    assert p.total_dose_e_per_angst2 == pytest.approx(45.0)
    assert p.exposure_time_s == pytest.approx(3.2)
    assert p.physical_pixel_size_angst == pytest.approx(0.72)
    assert p.frame_size_px == (12, 8)
    assert p.sources["n_frames"][1] == "EER metadata tag 65001: numberOfFrames"


FACILITY = """
[defaults]
cs_mm = 2.7

[microscopes.D304]
name = "Polara"
cs_mm = 2.0
cameras = { "0" = "Gatan K2" }

[cameras."Gatan K2"]
mtf = { "300" = "/facility/mtf_k2_300kV.star" }
gain_rotation = 1
gain_flip = 2
"""


@needs_shared("acquisition")
def test_facility_config_fills_cs_and_camera(tmp_path):
    from vitrify.io.facility import apply_facility, load_facility_config

    (tmp_path / "site.toml").write_text(FACILITY)
    config = load_facility_config(tmp_path / "site.toml")
    p = apply_facility(read_acquisition(FIXTURES / "frames.mdoc"), config)
    assert p.cs_mm == 2.0 and p.sources["cs_mm"] == ("site.toml", "microscopes.D304.cs_mm")
    assert p.detector_model == "Gatan K2"  # SerialEM CameraIndex 0 on D304
    assert config.mtf_file("Gatan K2", p.voltage_kv) == "/facility/mtf_k2_300kV.star"
    assert config.camera("Gatan K2").gain_rotation == 1
    # without an entry for the microscope: the facility default, named as such
    other = apply_facility(read_acquisition(FIXTURES / K2), config)
    assert other.cs_mm == 2.7 and other.sources["cs_mm"] == ("site.toml", "defaults.cs_mm")
    # values the files give are never replaced
    assert apply_facility(other, config).cs_mm == 2.7


def test_facility_config_errors_name_file_and_key(tmp_path):
    from vitrify.io.facility import load_facility_config

    (tmp_path / "bad.toml").write_text("[microscopes.X]\ncs = 2.7\n")
    with pytest.raises(InputError, match=r"bad\.toml: \[microscopes\.X\]: unknown key"):
        load_facility_config(tmp_path / "bad.toml")
    (tmp_path / "broken.toml").write_text("[defaults\n")
    with pytest.raises(InputError, match=r"broken\.toml: invalid TOML"):
        load_facility_config(tmp_path / "broken.toml")


@needs_shared("acquisition")
def test_overrides_re_derive_dependent_values():
    from vitrify.io.acquisition import apply_overrides

    p = read_acquisition(FIXTURES / "frames.mdoc")  # 30 e/Å² over 40 frames
    q = apply_overrides(p, {"total_dose_e_per_angst2": 60.0, "cs_mm": None})
    assert q.dose_per_frame_e_per_angst2 == pytest.approx(1.5)
    assert q.sources["total_dose_e_per_angst2"] == ("command line", "total_dose_e_per_angst2")
    assert q.cs_mm is None


def test_documented_facility_example_loads(tmp_path):
    import re

    from vitrify.io.facility import load_facility_config

    docs = Path(__file__).resolve().parents[1] / "docs" / "mdcatch.md"
    example = re.search(r"```toml\n(.*?)```", docs.read_text(), re.S).group(1)
    (tmp_path / "site.toml").write_text(example)
    config = load_facility_config(tmp_path / "site.toml")
    assert config.microscopes["D304"].cs_mm == 2.0
    assert config.mtf_file("Gatan K2", 300.0) == "/facility/mtf/mtf_k2_300kV.star"


def _edited_k2(tmp_path: Path, old: str, new: str) -> Path:
    text = (FIXTURES / K2).read_text()
    assert text.count(old) == 1, old
    path = tmp_path / K2
    path.write_text(text.replace(old, new))
    return path


@needs_shared("acquisition")
def test_epu_super_resolution_factor_halves_the_saved_pixel(tmp_path):
    # README: EPU's SpatialScale already includes binning; divide by the SuperResolutionFactor
    path = _edited_k2(tmp_path, 'SuperResolutionFactor</a:Key><a:Value i:type="b:int" '
                      'xmlns:b="http://www.w3.org/2001/XMLSchema">1<',
                      'SuperResolutionFactor</a:Key><a:Value i:type="b:int" '
                      'xmlns:b="http://www.w3.org/2001/XMLSchema">2<')
    p = read_acquisition(path)
    assert p.super_resolution is True
    assert p.pixel_size_angst == pytest.approx(1.18367010637499 / 2)
    assert p.physical_pixel_size_angst == pytest.approx(1.18367010637499)  # binning 1
    assert p.frame_size_px == (2 * 3838, 2 * 3710)  # saved frames are twice the sensor
    assert "SuperResolutionFactor" in p.sources["pixel_size_angst"][1]


@needs_shared("acquisition")
def test_epu_phase_plate_used(tmp_path):
    path = _edited_k2(tmp_path, 'PhasePlateUsed</a:Key><a:Value i:type="b:boolean" '
                      'xmlns:b="http://www.w3.org/2001/XMLSchema">false<',
                      'PhasePlateUsed</a:Key><a:Value i:type="b:boolean" '
                      'xmlns:b="http://www.w3.org/2001/XMLSchema">true<')
    p = read_acquisition(path)
    assert p.phase_plate is True
    assert p.sources["phase_plate"] == (K2, "CustomData/PhasePlateUsed")


@needs_shared("acquisition")
def test_epu_xml_with_a_non_numeric_value_names_the_field(tmp_path):
    path = _edited_k2(tmp_path, "<AccelerationVoltage>300000<", "<AccelerationVoltage>300 kV<")
    with pytest.raises(InputError, match=r"AccelerationVoltage.*not a number"):
        read_acquisition(path)


def test_mrc_fei1_extended_header(tmp_path):
    _fei2_movie(tmp_path / "fei1.mrc", 4, dose_fraction=True, kind=b"FEI1")
    p = read_acquisition(tmp_path / "fei1.mrc")
    assert p.voltage_kv == 300.0 and p.pixel_size_angst == pytest.approx(0.83)  # HT V, pixel m
    assert p.total_dose_e_per_angst2 == pytest.approx(4 * 1.25)  # 1.25e20 e/m2 per fraction
    assert p.detector == "BM-Falcon" and p.microscope_id == "D3593"
    assert p.sources["voltage_kv"] == ("fei1.mrc", "FEI1 extended header: HT")


@needs_shared("acquisition")
def test_epu_k3_recognised_by_its_sensor_size(tmp_path):
    path = _edited_k2(tmp_path, "<a:height>3710</a:height><a:width>3838</a:width>",
                      "<a:height>4092</a:height><a:width>5760</a:width>")
    p = read_acquisition(path)
    assert p.detector == "EF-CCD" and p.detector_model == "Gatan K3"  # 5760 x 4092 sensor
    assert p.frame_size_px == (5760, 4092)


@needs_shared("acquisition")
def test_epu_falcon4_recognised_by_its_raw_frame_rate(tmp_path):
    text = (FIXTURES / FALCON).read_text()
    assert text.count("<ExposureTime>70.36</ExposureTime>") == 1
    (tmp_path / FALCON).write_text(text.replace("<ExposureTime>70.36<", "<ExposureTime>5.0<"))
    p = read_acquisition(tmp_path / FALCON)
    # 2734 raw frames in 5 s = 547 frames/s: a Falcon 4 (a Falcon 3 reads out ~40 frames/s)
    assert p.detector_model == "Falcon 4" and p.exposure_time_s == 5.0


@needs_shared("acquisition")
def test_mdoc_with_windows_line_ends_and_code_page_text_reads(tmp_path):
    text = (FIXTURES / "frames.mdoc").read_text()
    (tmp_path / "crlf.mdoc").write_bytes(text.replace("\n", "\r\n").encode())
    assert asdict_plain(read_acquisition(tmp_path / "crlf.mdoc")) == \
        asdict_plain(read_acquisition(FIXTURES / "frames.mdoc"))
    # a note typed on the SerialEM PC (Windows code page, not UTF-8)
    (tmp_path / "note.mdoc").write_bytes((text + "NavigatorLabel = grid 2 \xb5m\n").encode("latin-1"))
    assert read_acquisition(tmp_path / "note.mdoc").pixel_size_angst == pytest.approx(0.50226)


@needs_shared("acquisition")
def test_mdoc_cut_short_with_nul_padding_names_the_line(tmp_path):
    lines = (FIXTURES / "frames.mdoc").read_text().splitlines()
    bad = tmp_path / "crashed.mdoc"
    bad.write_bytes(("\n".join(lines[:24]) + "\nNumSubFrames = 4" + "\x00" * 40).encode())
    with pytest.raises(InputError, match=r"crashed\.mdoc: line 25: unreadable line"):
        read_acquisition(bad)

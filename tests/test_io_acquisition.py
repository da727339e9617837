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

from vitrify.io.acquisition import asdict_plain, read_acquisition
from vitrify.io.errors import InputError

FIXTURES = Path("/work/shared/fixtures/acquisition")
if not FIXTURES.is_dir():  # the fixtures live beside the repository
    FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "acquisition"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="acquisition fixtures not found")

FALCON = "FoilHole_18890345_Data_18881924_18881926_20200320_090200.xml"
K2 = "FoilHole_22011316_Data_19957701_19957703_20200323_100235.xml"
FRACTIONS = "FoilHole_5330585_Data_5338216_5338218_20200206_170645_Fractions.xml"


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


def test_fractions_side_car_merges_into_movie_xml(tmp_path):
    shutil.copy(FIXTURES / FALCON, tmp_path / "FoilHole_1_Data_2_3_4.xml")
    shutil.copy(FIXTURES / FRACTIONS, tmp_path / "FoilHole_1_Data_2_3_4_Fractions.xml")
    p = read_acquisition(tmp_path / "FoilHole_1_Data_2_3_4.xml")
    assert p.n_frames == 40  # the movie XML wins; the side-car only fills gaps
    assert p.total_dose_e_per_px == pytest.approx(23.07, abs=0.01)
    assert p.sources["total_dose_e_per_px"][0] == "FoilHole_1_Data_2_3_4_Fractions.xml"


def test_epu_session_file():
    p = read_acquisition(FIXTURES / "EpuSession-K2.xml")
    assert p.detector == "EF-CCD" and p.detector_model == "Gatan K2"
    assert p.n_frames == 40 and p.exposure_time_s == 10.0
    assert p.counting is True and p.super_resolution is False
    assert p.applied_defocus_um == pytest.approx(-2.5)  # Optics/Defocus -2.4999999999999998E-06
    assert p.phase_plate is False  # <PhasePlateEnabled>false</PhasePlateEnabled>
    assert p.software_version == "2.1.0.0"
    assert {"pixel_size_angst", "voltage_kv", "total_dose_e_per_angst2"} <= set(p.missing)


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


def test_truncated_xml_names_file_and_line(tmp_path):
    raw = (FIXTURES / K2).read_bytes()
    bad = tmp_path / "FoilHole_1_Data_2.xml"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"FoilHole_1_Data_2\.xml: line \d+.*truncated"):
        read_acquisition(bad)


def test_mdoc_garbage_line_names_file_and_line(tmp_path):
    lines = (FIXTURES / "frames.mdoc").read_text().splitlines()
    lines.insert(5, "\x00\x01garbage without an equals sign")
    bad = tmp_path / "bad.mdoc"
    bad.write_text("\n".join(lines))
    with pytest.raises(InputError, match=r"bad\.mdoc: line 6: unreadable line"):
        read_acquisition(bad)


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


def test_json_has_units_sources_and_missing():
    import json

    data = json.loads(read_acquisition(FIXTURES / K2).to_json())
    assert data["pixel_size_angst"] == pytest.approx(1.18367010637499)
    assert data["missing"] == ["cs_mm", "gain_reference", "defects_file"]
    assert data["sources"]["voltage_kv"] == {"file": K2, "field": "gun/AccelerationVoltage"}

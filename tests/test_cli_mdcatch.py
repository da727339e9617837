"""``vitrify mdcatch``: reading files, setting up projects from EPU and simulated sessions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from conftest import needs_shared, shared_fixtures
from vitrify.cli.main import build_app
from vitrify.io.errors import InputError

FIXTURES = shared_fixtures("acquisition")
SCHEMES = shared_fixtures("relion4_schemes")
K2 = "FoilHole_22011316_Data_19957701_19957703_20200323_100235.xml"


def _run(*args: str):
    return CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "200"})


def _error(capsys, monkeypatch, *args: str) -> str:
    """Run through ``main`` (which turns InputError into one line and exit 1); return stderr."""
    from vitrify.cli.main import main

    monkeypatch.setenv("COLUMNS", "1000")  # rich wraps at the terminal width
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def _simulated_session(directory: Path, n_movies: int = 3) -> list[Path]:
    from vitrify.sim.session import write_session_metadata

    directory.mkdir(parents=True)
    movies = []
    for index in range(n_movies):
        movies.append(directory / f"movie_{index:04d}.tiff")
        tifffile.imwrite(movies[-1], np.zeros((10, 32, 48), np.uint8))
    write_session_metadata(directory, movies, pixel_size_angst=0.83, voltage_kv=300.0, cs_mm=2.7,
                           dose_per_frame_e_per_angst2=1.0, exposure_time_s=2.0,
                           defocus_angst=15000.0)
    return movies


@needs_shared("acquisition")
def test_read_json_prints_one_object_with_missing():
    result = _run("mdcatch", "--read", str(FIXTURES / K2), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["pixel_size_angst"] == pytest.approx(1.18367010637499)
    assert data["voltage_kv"] == 300.0
    assert data["n_frames"] == 40
    assert data["missing"] == ["cs_mm", "gain_reference", "defects_file"]


@needs_shared("acquisition")
def test_read_table_shows_values_and_sources():
    result = _run("mdcatch", "--read", str(FIXTURES / "frames.mdoc"))
    assert result.exit_code == 0, result.output
    assert "0.50226" in result.output and "PixelSpacing (line 11)" in result.output
    assert "missing" in result.output


@needs_shared("acquisition")
def test_read_corrupt_file_is_one_line_error(tmp_path, capsys, monkeypatch):
    raw = (FIXTURES / K2).read_bytes()
    (tmp_path / "cut.xml").write_bytes(raw[:3000])
    err = _error(capsys, monkeypatch, "mdcatch", "--read", str(tmp_path / "cut.xml"))
    assert "cut.xml: line" in err and "truncated" in err


def test_session_from_simulated_movies(tmp_path):
    _simulated_session(tmp_path / "session")
    project = tmp_path / "project"
    result = _run("mdcatch", str(tmp_path / "session"), "--project", str(project),
                  "--particle-diameter", "150")
    assert result.exit_code == 0, result.output
    assert "vitrify schemer --scheme prep" in result.output
    record = json.loads((project / "acquisition.json").read_text())
    assert record["acquisition"]["pixel_size_angst"] == pytest.approx(0.83)
    assert record["acquisition"]["cs_mm"] == pytest.approx(2.7)  # from the simulator's extra key
    assert record["movies_found"] == 3
    options = record["scheme_options"]
    assert options["prep__importmovies__fn_in_raw"] == "Movies/movie_*.tiff"
    assert options["proc__extract__extract_size"] == "280"  # 1.5 * 150 / 0.83 = 271 -> 280
    assert options["proc__extract__rescale"] == "70"
    assert options["prep__motioncorr__dose_per_frame"] == "1"
    assert (project / "Movies").resolve() == (tmp_path / "session").resolve()
    assert "'proc__extract__do_rescale' : 'True'," in (project / "relion_it_options.py").read_text()


@needs_shared("acquisition")
def test_session_in_epu_layout_with_overrides_and_gain(tmp_path):
    data = tmp_path / "session" / "Images-Disc1" / "GridSquare_7" / "Data"
    data.mkdir(parents=True)
    shutil.copy(FIXTURES / K2, data / K2)
    movie = data / K2.replace(".xml", "_fractions.tiff")
    tifffile.imwrite(movie, np.zeros((40, 16, 16), np.uint8))
    tifffile.imwrite(tmp_path / "session" / "gain.tiff", np.ones((16, 16), np.float32))
    result = _run("mdcatch", str(tmp_path / "session"), "--project", str(tmp_path / "p"),
                  "--particle-diameter", "200", "--cs", "2.0", "--gain",
                  str(tmp_path / "session" / "gain.tiff"))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "acquisition.json").read_text())
    assert record["acquisition"]["cs_mm"] == 2.0
    assert record["acquisition"]["sources"]["cs_mm"] == {"file": "command line", "field": "cs_mm"}
    options = record["scheme_options"]
    assert options["prep__importmovies__fn_in_raw"] == \
        "Movies/Images-Disc*/GridSquare_*/Data/FoilHole_*_Data_*_fractions.tiff"
    assert options["prep__motioncorr__fn_gain_ref"] == "Movies/gain.tiff"
    # 25.1794 e/A2 over 40 fractions
    assert float(options["prep__motioncorr__dose_per_frame"]) == pytest.approx(25.179406 / 40, rel=1e-5)


@needs_shared("relion4_schemes")
def test_options_are_written_into_the_projects_scheme_job_files(tmp_path):
    from vitrify.io.star import read_star

    _simulated_session(tmp_path / "session", n_movies=1)
    project = tmp_path / "project"
    shutil.copytree(SCHEMES / "prep", project / "Schemes" / "prep")
    result = _run("mdcatch", str(tmp_path / "session"), "--project", str(project))
    assert result.exit_code == 0, result.output
    values = read_star(project / "Schemes" / "prep" / "motioncorr" / "job.star")["joboptions_values"]
    table = dict(zip(values["rlnJobOptionVariable"].astype(str), values["rlnJobOptionValue"].astype(str)))
    assert table["dose_per_frame"] == "1" and table["bin_factor"] == "1"
    assert table["other_args"] == "--do_at_most $$do_at_most"  # untouched options stay
    record = json.loads((project / "acquisition.json").read_text())
    assert {"key": "prep__motioncorr__dose_per_frame", "file": "Schemes/prep/motioncorr/job.star",
            "name": "dose_per_frame", "value": "1"} in record["scheme_options_applied"]


def test_session_without_metadata_is_an_error(tmp_path, capsys, monkeypatch):
    (tmp_path / "empty").mkdir()
    err = _error(capsys, monkeypatch, "mdcatch", str(tmp_path / "empty"), "--project", str(tmp_path / "p"))
    assert "no metadata file found" in err


@needs_shared("acquisition")
def test_watch_skips_a_partial_file_with_a_warning(tmp_path):
    from vitrify.pipeline.mdcatch import read_first_complete

    session = tmp_path / "s" / "Images-Disc1" / "GridSquare_1" / "Data"
    session.mkdir(parents=True)
    raw = (FIXTURES / K2).read_bytes()
    (session / "FoilHole_1_Data_1.xml").write_bytes(raw[:2000])  # EPU still writing it
    shutil.copy(FIXTURES / K2, session / "FoilHole_2_Data_2.xml")
    warnings: list[str] = []
    params = read_first_complete(tmp_path / "s", watch=True, poll_s=0.01, timeout_s=1.0,
                                 warn=warnings.append)
    assert Path(params.source_path).name == "FoilHole_2_Data_2.xml"
    assert len(warnings) == 1 and "FoilHole_1_Data_1.xml" in warnings[0]


def test_watch_times_out_cleanly(tmp_path):
    from vitrify.io.errors import InputError
    from vitrify.pipeline.mdcatch import read_first_complete

    (tmp_path / "s").mkdir()
    with pytest.raises(InputError, match="no complete metadata file appeared"):
        read_first_complete(tmp_path / "s", watch=True, poll_s=0.01, timeout_s=0.05)


@needs_shared("acquisition")
def test_epu_session_dm_reads_like_its_xml(tmp_path):
    shutil.copy(FIXTURES / "EpuSession-K2.xml", tmp_path / "EpuSession.dm")
    result = _run("mdcatch", "--read", str(tmp_path / "EpuSession.dm"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["detector_model"] == "Gatan K2" and data["n_frames"] == 40
    assert "pixel_size_angst" in data["missing"]


def test_eer_session_groups_raw_frames(tmp_path):
    from vitrify.sim.session import write_session_metadata

    session = tmp_path / "session"
    session.mkdir()
    movie = session / "movie_0001.eer"  # a TIFF container, as EER files are
    tifffile.imwrite(movie, np.zeros((100, 8, 8), np.uint8))
    xml, mdoc = write_session_metadata(session, [movie], pixel_size_angst=0.75, voltage_kv=300.0,
                                       cs_mm=2.7, dose_per_frame_e_per_angst2=0.05,
                                       exposure_time_s=4.0, defocus_angst=12000.0)
    mdoc.unlink()
    # EPU reports the fractions it was asked for (20), not the EER file's 100 raw frames
    xml.write_text(xml.read_text().replace("NumberOffractions>100<", "NumberOffractions>20<"))
    result = _run("mdcatch", str(session), "--project", str(tmp_path / "p"))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "acquisition.json").read_text())
    assert record["acquisition"]["eer"] is True and record["acquisition"]["n_frames"] == 100
    # 5 e/A2 over 100 raw frames = 0.05 each -> groups of 20 -> 1.0 e/A2 per fraction
    assert record["scheme_options"]["prep__motioncorr__eer_grouping"] == "20"
    assert float(record["scheme_options"]["prep__motioncorr__dose_per_frame"]) == pytest.approx(1.0)


@needs_shared("acquisition")
def test_watch_waits_for_the_first_file_to_appear_and_be_complete(tmp_path):
    import threading
    import time

    data = tmp_path / "s" / "Images-Disc1" / "GridSquare_1" / "Data"
    data.mkdir(parents=True)
    xml = data / "FoilHole_1_Data_1.xml"
    raw = (FIXTURES / K2).read_bytes()

    def microscope() -> None:  # EPU: the XML half written, then complete, then the movie
        time.sleep(0.3)
        xml.write_bytes(raw[: len(raw) // 2])
        time.sleep(0.5)
        xml.write_bytes(raw)
        time.sleep(0.3)
        tifffile.imwrite(data / "FoilHole_1_Data_1_fractions.tiff", np.zeros((40, 16, 16), np.uint8))

    thread = threading.Thread(target=microscope)
    thread.start()
    try:
        result = _run("mdcatch", str(tmp_path / "s"), "--project", str(tmp_path / "p"), "--watch",
                      "--poll", "0.05", "--timeout", "30")
    finally:
        thread.join()
    assert result.exit_code == 0, result.output
    assert result.output.count("skipping FoilHole_1_Data_1.xml") == 1
    assert "truncated" in result.output
    record = json.loads((tmp_path / "p" / "acquisition.json").read_text())
    assert record["acquisition"]["pixel_size_angst"] == pytest.approx(1.18367010637499)
    assert record["movies_found"] == 1


SITE = """
[defaults]
amplitude_contrast = 0.07
movie_patterns = ["stack_*.mrc"]

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
def test_facility_file_sets_site_values_without_code_edits(tmp_path):
    import mrcfile

    session = tmp_path / "session"
    session.mkdir()
    shutil.copy(FIXTURES / "frames.mdoc", session / "frames.mdoc")
    for index in (1, 2):  # this site saves movies under its own names, not SubFramePath's
        mrcfile.new(session / f"stack_{index:04d}.mrc", np.zeros((40, 16, 24), np.int8)).close()
    (session / "SuperRef_00000_Aug11_14.13.17.dm4").write_bytes(b"gain")  # GainReference line
    (session / "defects_00000_Aug11_14.13.17.txt").write_text("0 0 1 1\n")  # DefectFile line
    (tmp_path / "site.toml").write_text(SITE)
    mrcfile.new(session / "atlas_0001.mrc", np.zeros((16, 24), np.int8)).close()  # not a movie
    without = _run("mdcatch", str(session), "--project", str(tmp_path / "q"))
    assert without.exit_code == 0, without.output  # the default *.mrc, the largest family of it
    defaults = json.loads((tmp_path / "q" / "acquisition.json").read_text())
    assert defaults["scheme_options"]["prep__importmovies__fn_in_raw"] == "Movies/stack_*.mrc"
    assert defaults["movies_found"] == 2
    result = _run("mdcatch", str(session), "--project", str(tmp_path / "p"),
                  "--facility", str(tmp_path / "site.toml"))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "p" / "acquisition.json").read_text())
    options = record["scheme_options"]
    assert options["prep__importmovies__fn_in_raw"] == "Movies/stack_*.mrc"
    assert record["movies_found"] == 2
    assert options["prep__importmovies__Cs"] == "2" and options["prep__importmovies__Q0"] == "0.07"
    assert record["acquisition"]["sources"]["cs_mm"] == {"file": "site.toml",
                                                         "field": "microscopes.D304.cs_mm"}
    assert record["processing"]["amplitude_contrast"]["source"] == "site.toml: defaults.amplitude_contrast"
    assert record["microscope_name"] == "Polara"
    assert options["prep__importmovies__fn_mtf"] == "/facility/mtf_k2_300kV.star"
    assert options["prep__motioncorr__fn_gain_ref"] == "Movies/SuperRef_00000_Aug11_14.13.17.dm4"
    assert options["prep__motioncorr__fn_defect"] == "Movies/defects_00000_Aug11_14.13.17.txt"
    assert options["prep__motioncorr__gain_rot"] == "90 degrees (1)"
    assert options["prep__motioncorr__gain_flip"] == "Flip left to right (2)"
    # frames.mdoc: Binning 0.5 (super-resolution) -> bin 2; 30 e/A2 over 40 frames = 0.75
    assert options["prep__motioncorr__bin_factor"] == "2"
    assert options["prep__importmovies__angpix"] == "0.50226"
    assert float(options["prep__motioncorr__dose_per_frame"]) == pytest.approx(0.75)
    assert options["prep__motioncorr__group_for_ps"] == "5"  # round(4 / 0.75)


@needs_shared("acquisition")
def test_facility_movie_patterns_pick_the_raw_movies(tmp_path):
    from vitrify.io.acquisition import read_acquisition
    from vitrify.pipeline.mdcatch import locate_movies

    shutil.copy(FIXTURES / "frames.mdoc", tmp_path / "frames.mdoc")  # its SubFramePath is absent
    for name in ("a_0001_raw.mrc", "a_0002_raw.mrc", "a_0001_aligned.mrc"):
        (tmp_path / name).write_bytes(b"")
    params = read_acquisition(tmp_path / "frames.mdoc")
    site = locate_movies(params, tmp_path, ("*_raw.mrc",))
    assert (site.pattern, site.count, site.example.name) == ("a_*_raw.mrc", 2, "a_0001_raw.mrc")
    generic = locate_movies(params, tmp_path, ("*.mrc",))
    assert (generic.pattern, generic.count) == ("a_*.mrc", 3)  # why a site names its own pattern
    with pytest.raises(InputError, match="no movie found"):
        locate_movies(params, tmp_path, ("*.eer",))


@needs_shared("acquisition")
def test_gain_look_up_rules_per_camera(tmp_path):
    from vitrify.io.acquisition import read_acquisition, with_value
    from vitrify.io.facility import CameraConfig, FacilityConfig
    from vitrify.pipeline.mdcatch import locate_gain

    params = read_acquisition(FIXTURES / K2)  # EPU names no gain file
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "K2-20200323.gain").write_bytes(b"")
    (tmp_path / "norm_gain.mrc").write_bytes(b"")
    site = FacilityConfig(cameras={"Gatan K2": CameraConfig(gain_patterns=("*.gain",))})
    assert locate_gain(params, tmp_path, site).name == "K2-20200323.gain"
    assert locate_gain(params, tmp_path, FacilityConfig()).name == "norm_gain.mrc"  # defaults
    named = with_value(params, "gain_reference", "X:\\Data\\K2-20200323.gain", ("t.mdoc", "GainReference"))
    assert locate_gain(named, tmp_path, FacilityConfig()).name == "K2-20200323.gain"  # named wins

"""STAR read/write: RELION-4 layout, round trips of real RELION files, optics groups, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import needs_shared, shared_fixtures
from vitrify.io.errors import InputError
from vitrify.io.star import (
    merge_optics,
    read_star,
    read_star_block,
    read_star_optics,
    resolve_image_name,
    split_optics,
    write_star,
    write_star_optics,
)

FIXTURES = shared_fixtures("relion4_schemes")
FIXTURE_FILES = sorted(FIXTURES.rglob("*.star")) if FIXTURES.is_dir() else []
needs_fixtures = needs_shared("relion4_schemes")


def assert_blocks_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        if isinstance(a[name], pd.DataFrame):
            assert list(a[name].columns) == list(b[name].columns)
            pd.testing.assert_frame_equal(a[name].reset_index(drop=True), b[name].reset_index(drop=True))
        else:
            assert a[name] == b[name]


@needs_fixtures
@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: str(p.relative_to(FIXTURES)))
@pytest.mark.parametrize("as_strings", [False, True])
def test_fixture_round_trip_keeps_blocks_columns_order_values(path, as_strings, tmp_path):
    blocks = read_star(path, as_strings=as_strings)
    assert blocks, "no blocks read"
    write_star(tmp_path / "out.star", blocks)
    assert_blocks_equal(blocks, read_star(tmp_path / "out.star", as_strings=as_strings))


@needs_fixtures
@pytest.mark.parametrize("name", ["prep/ctffind/job.star", "prep/importmovies/job.star"])
def test_relion_written_files_are_rewritten_byte_identical(name, tmp_path):
    # These two files are untouched RELION output; the others were hand-edited upstream.
    write_star(tmp_path / "job.star", read_star(FIXTURES / name))
    assert (tmp_path / "job.star").read_bytes() == (FIXTURES / name).read_bytes()


@needs_fixtures
def test_job_star_option_strings_are_kept_verbatim():
    options = read_star(FIXTURES / "prep/motioncorr/job.star", as_strings=True)["joboptions_values"]
    values = dict(zip(options["rlnJobOptionVariable"], options["rlnJobOptionValue"]))
    assert values["gain_flip"] == "No flipping (0)"
    assert values["gain_rot"] == "No rotation (0)"
    assert values["fn_defect"] == ""
    autopick = read_star(FIXTURES / "proc/autopick/job.star", as_strings=True)["joboptions_values"]
    assert "$$do_log" in set(autopick["rlnJobOptionValue"])
    # Numbers stay text in string mode and job options are always text.
    scheme = read_star(FIXTURES / "proc/scheme.star", as_strings=True)
    assert all(isinstance(v, str) for v in scheme["scheme_floats"].iloc[:, 1])
    assert all(isinstance(v, str) for v in read_star(FIXTURES / "proc/class2d/job.star")[
        "joboptions_values"]["rlnJobOptionValue"])


@needs_fixtures
def test_tabs_and_irregular_whitespace_are_read():
    options = read_star(FIXTURES / "proc/class2d/job.star")["joboptions_values"]
    values = list(zip(options["rlnJobOptionVariable"], options["rlnJobOptionValue"]))
    assert ("do_em", "No") in values and ("do_grad", "Yes") in values


def test_loop_layout_is_relion4(tmp_path):
    frame = pd.DataFrame({"rlnMicrographName": ["a.mrc"], "rlnDefocusU": [12345.5], "rlnClassNumber": [3],
                          "rlnOriginXAngst": [-1.25], "rlnSigma2": [1.5e-5]})
    write_star(tmp_path / "a.star", {"micrographs": frame})
    assert (tmp_path / "a.star").read_text() == (
        "\n# version 30001\n\ndata_micrographs\n\nloop_ \n_rlnMicrographName #1 \n_rlnDefocusU #2 \n"
        "_rlnClassNumber #3 \n_rlnOriginXAngst #4 \n_rlnSigma2 #5 \n"
        "     a.mrc 12345.500000            3     -1.25000 1.500000e-05 \n \n"
    )


def test_strings_with_spaces_quotes_and_empty_round_trip(tmp_path):
    texts = ["7.5 degrees", "", "plain", 'say "hi" now', "'quoted", "#hash", "_under", "a\tb", "001"]
    frame = pd.DataFrame({"rlnJobOptionVariable": [f"v{i}" for i in range(len(texts))],
                          "rlnJobOptionValue": texts})
    write_star(tmp_path / "j.star", {"job": {"rlnJobTypeLabel": "relion.class2d", "rlnJobIsContinue": 0},
                                     "joboptions_values": frame})
    back = read_star(tmp_path / "j.star", as_strings=True)
    assert list(back["joboptions_values"]["rlnJobOptionValue"]) == texts
    assert back["job"] == {"rlnJobTypeLabel": "relion.class2d", "rlnJobIsContinue": "0"}


def test_empty_loop_round_trips_with_its_columns(tmp_path):
    empty = pd.DataFrame({"rlnSchemeJobNameOriginal": pd.Series([], dtype=object),
                          "rlnSchemeJobHasStarted": pd.Series([], dtype=np.int64)})
    write_star(tmp_path / "s.star", {"scheme_general": {"rlnSchemeName": "Schemes/x/"}, "scheme_jobs": empty,
                                     "scheme_edges": pd.DataFrame({"rlnSchemeEdgeIsFork": [0]})})
    back = read_star(tmp_path / "s.star")
    assert list(back) == ["scheme_general", "scheme_jobs", "scheme_edges"]
    assert back["scheme_jobs"].empty and list(back["scheme_jobs"].columns) == list(empty.columns)
    assert back["scheme_edges"]["rlnSchemeEdgeIsFork"].tolist() == [0]


def test_string_dtype_columns_are_written(tmp_path):
    frame = pd.DataFrame({"rlnMicrographName": pd.array(["a b.mrc", "c.mrc"], dtype="string"),
                          "rlnOpticsGroup": [1, 2]})
    write_star(tmp_path / "a.star", {"micrographs": frame})
    back = read_star(tmp_path / "a.star")["micrographs"]
    assert back["rlnMicrographName"].tolist() == ["a b.mrc", "c.mrc"]
    assert back["rlnMicrographName"].dtype == object


def _particles(n: int = 5, rng=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = rng or np.random.default_rng(0)
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1", "opticsGroup2"], "rlnOpticsGroup": [1, 2],
                           "rlnMicrographOriginalPixelSize": [0.885, 1.1], "rlnVoltage": [300.0, 200.0],
                           "rlnSphericalAberration": [2.7, 2.7], "rlnAmplitudeContrast": [0.1, 0.07],
                           "rlnImagePixelSize": [1.77, 2.2], "rlnImageSize": [64, 48],
                           "rlnImageDimensionality": [2, 2], "rlnCtfDataAreCtfPremultiplied": [0, 0]})
    data = pd.DataFrame({"rlnCoordinateX": rng.uniform(0, 4000, n), "rlnCoordinateY": rng.uniform(0, 4000, n),
                         "rlnImageName": [f"{i + 1:06d}@Extract/job007/Movies/a.mrcs" for i in range(n)],
                         "rlnMicrographName": ["MotionCorr/job002/Movies/a.mrc"] * n,
                         "rlnOpticsGroup": rng.integers(1, 3, n), "rlnDefocusU": rng.uniform(5000, 30000, n),
                         "rlnAngleRot": rng.uniform(-180, 180, n), "rlnOriginXAngst": rng.normal(0, 3, n),
                         "rlnSigma2Noise": rng.uniform(1e-5, 9e-5, n)})
    return optics, data


def test_particles_with_optics_write_read_merge_split(tmp_path):
    optics, data = _particles()
    write_star_optics(tmp_path / "particles.star", optics, data)
    star = read_star_optics(tmp_path / "particles.star")
    assert list(read_star(tmp_path / "particles.star")) == ["optics", "particles"]
    expected_optics = optics.astype({"rlnOpticsGroupName": object})
    pd.testing.assert_frame_equal(star.optics, expected_optics, check_exact=False, rtol=1e-6)
    np.testing.assert_allclose(star.data["rlnSigma2Noise"], data["rlnSigma2Noise"], rtol=1e-6)
    np.testing.assert_allclose(star.data["rlnDefocusU"], data["rlnDefocusU"], atol=1e-6)
    voltage = np.where(data["rlnOpticsGroup"] == 1, 300.0, 200.0)
    np.testing.assert_array_equal(star.merged["rlnVoltage"], voltage)
    optics2, data2 = split_optics(star.merged)
    pd.testing.assert_frame_equal(optics2, star.optics)
    pd.testing.assert_frame_equal(data2, star.data)


def test_per_particle_values_override_optics_and_stay_on_split():
    optics, data = _particles()
    data = data.assign(rlnAmplitudeContrast=np.linspace(0.05, 0.15, len(data)))
    merged = merge_optics(optics, data)
    np.testing.assert_array_equal(merged["rlnAmplitudeContrast"], data["rlnAmplitudeContrast"])
    _, data2 = split_optics(merged)
    assert "rlnAmplitudeContrast" in data2.columns and "rlnVoltage" not in data2.columns


def test_written_columns_follow_relion_order(tmp_path):
    optics, data = _particles()
    write_star_optics(tmp_path / "p.star", optics[optics.columns[::-1]], data[data.columns[::-1]])
    blocks = read_star(tmp_path / "p.star")
    assert list(blocks["optics"].columns)[:2] == ["rlnOpticsGroupName", "rlnOpticsGroup"]
    assert list(blocks["particles"].columns)[:4] == ["rlnCoordinateX", "rlnCoordinateY", "rlnImageName",
                                                    "rlnMicrographName"]


def _write_and_break(tmp_path, edit) -> Path:
    optics, data = _particles()
    path = tmp_path / "p.star"
    write_star_optics(path, optics, data)
    path.write_text(edit(path.read_text()))
    return path


def test_missing_required_column_names_file_block_column(tmp_path):
    path = _write_and_break(tmp_path, lambda t: t.replace("_rlnVoltage", "_rlnVoltageX"))
    with pytest.raises(InputError, match=r"p\.star: data_optics, column rlnVoltage: missing"):
        read_star_optics(path)


def test_bad_number_names_column_and_line(tmp_path):
    def edit(text):
        lines = text.splitlines()
        row = next(i for i, line in enumerate(lines) if "opticsGroup2" in line)
        lines[row] = lines[row].replace("200.000000", "abc")
        return "\n".join(lines) + "\n"

    path = _write_and_break(tmp_path, edit)
    line = next(i + 1 for i, x in enumerate(path.read_text().splitlines()) if "abc" in x)
    with pytest.raises(InputError, match=rf"data_optics, column rlnVoltage, line {line}: not a number: 'abc'"):
        read_star_optics(path)


def test_unknown_optics_group_is_an_error(tmp_path):
    optics, data = _particles()
    data.loc[3, "rlnOpticsGroup"] = 7
    write_star_optics(tmp_path / "p.star", optics, data)
    with pytest.raises(InputError, match=r"column rlnOpticsGroup, line \d+: unknown optics group 7"):
        read_star_optics(tmp_path / "p.star")


def test_wrong_block_is_named(tmp_path):
    optics, data = _particles()
    write_star_optics(tmp_path / "p.star", optics, data)
    with pytest.raises(InputError, match="no block data_micrographs.*data_optics, data_particles"):
        read_star_optics(tmp_path / "p.star", "micrographs")
    with pytest.raises(InputError, match="no block data_x"):
        read_star_block(tmp_path / "p.star", "x")


def test_legacy_file_without_optics_is_converted(tmp_path):
    legacy = pd.DataFrame({"rlnImageName": ["000001@a.mrcs", "000002@a.mrcs", "000001@b.mrcs"],
                           "rlnVoltage": [300.0, 300.0, 200.0], "rlnSphericalAberration": [2.7] * 3,
                           "rlnAmplitudeContrast": [0.1] * 3, "rlnDetectorPixelSize": [14.0, 14.0, 5.0],
                           "rlnMagnification": [100000.0, 100000.0, 50000.0],
                           "rlnOriginX": [2.0, -1.0, 0.5], "rlnOriginY": [0.0, 3.0, 1.0]})
    write_star(tmp_path / "old.star", {"": legacy})
    star = read_star_optics(tmp_path / "old.star")
    assert star.legacy
    np.testing.assert_allclose(star.optics["rlnImagePixelSize"], [1.4, 1.0])
    np.testing.assert_array_equal(star.data["rlnOpticsGroup"], [1, 1, 2])
    np.testing.assert_allclose(star.data["rlnOriginXAngst"], [2.8, -1.4, 0.5])
    np.testing.assert_allclose(star.data["rlnOriginYAngst"], [0.0, 4.2, 1.0])
    assert "rlnOriginX" not in star.data.columns and "rlnVoltage" not in star.data.columns
    np.testing.assert_allclose(star.merged["rlnVoltage"], [300, 300, 200])


def test_legacy_without_pixel_size_needs_one(tmp_path):
    legacy = pd.DataFrame({"rlnImageName": ["000001@a.mrcs"], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    write_star(tmp_path / "old.star", legacy)
    with pytest.raises(InputError, match="without a pixel size"):
        read_star_optics(tmp_path / "old.star")
    star = read_star_optics(tmp_path / "old.star", legacy_pixel_size_angst=1.5)
    assert star.optics["rlnImagePixelSize"].tolist() == [1.5]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("data_a\nloop_\n_rlnA #1\n_rlnB #2\n_rlnC #3\n1 2 3\n3 4\n", r"line 7: 2 values in a row of data_a"),
        ("data_a\nloop_\n_rlnA #1\n_rlnB #2\n1 2 3\n", r"line 5: 3 values in a row of data_a"),
        ('data_a\nloop_\n_rlnA #1\n"open 2\n', r"line 4: unterminated quote"),
        ("hello\n", r"line 1: unexpected text 'hello'"),
        ("data_a\nloop_\n_rlnA #1\n1\n\n2\n", r"line 6: unexpected text '2'.*blank line"),
        ("data_a\n_rlnA 1 2\n", r"line 2: 2 values for _rlnA"),
        ("data_a\n_rlnA 1\ndata_a\n_rlnA 1\n", r"line 3: block data_a appears twice"),
        ("data_a\n_rlnA 1\n_rlnA 2\n", r"line 3: _rlnA appears twice in data_a"),
        ("data_a\n_rlnA\n", r"line 2: no value for _rlnA"),
        ("data_a\nloop_\n_rlnA\n_rlnA\n1 2\n", r"a label appears twice in data_a"),
    ],
)
def test_syntax_errors_name_the_line(tmp_path, text, match):
    (tmp_path / "bad.star").write_text(text)
    with pytest.raises(InputError, match=match):
        read_star(tmp_path / "bad.star")


def test_short_rows_allowed_in_two_column_loops(tmp_path):
    (tmp_path / "job.star").write_text("data_joboptions_values\nloop_\n_rlnJobOptionVariable #1\n"
                                       "_rlnJobOptionValue #2\nfn_cont\nnr_classes 50\n")
    table = read_star(tmp_path / "job.star", as_strings=True)["joboptions_values"]
    assert table.values.tolist() == [["fn_cont", ""], ["nr_classes", "50"]]


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        read_star(tmp_path / "nope.star")
    (tmp_path / "bin.star").write_bytes(bytes(range(256)))
    with pytest.raises(InputError, match="not a text file"):
        read_star(tmp_path / "bin.star")


def test_comments_quotes_and_types_on_read(tmp_path):
    (tmp_path / "a.star").write_text(
        "# version 30001\ndata_\n\nloop_\n_rlnImageName #1\n_rlnDefocusU #2\n_rlnClassNumber\n"
        "# a comment\n000001@x.mrcs  1.5e+04  2\n'000002@y y.mrcs' -3  7 \n \n"
    )
    frame = read_star(tmp_path / "a.star")[""]
    assert frame["rlnImageName"].tolist() == ["000001@x.mrcs", "000002@y y.mrcs"]
    assert frame["rlnDefocusU"].dtype == np.float64 and frame["rlnClassNumber"].dtype == np.int64
    assert frame.attrs["star_first_line"] == 9


def test_precision_option_keeps_more_digits(tmp_path):
    frame = pd.DataFrame({"rlnX": [1.234567891234]})
    write_star(tmp_path / "a.star", {"a": frame}, float_format="%.15g")
    assert read_star(tmp_path / "a.star")["a"]["rlnX"][0] == 1.234567891234


def test_resolve_image_name(tmp_path):
    assert resolve_image_name("000012@Extract/job007/a.mrcs", tmp_path) == (11, tmp_path / "Extract/job007/a.mrcs")
    assert resolve_image_name("3@/abs/b.mrcs", tmp_path) == (2, Path("/abs/b.mrcs"))
    assert resolve_image_name("c.mrc", tmp_path) == (0, tmp_path / "c.mrc")
    for bad in ("0@a.mrcs", "x@a.mrcs", "1@"):
        with pytest.raises(InputError, match="bad image name"):
            resolve_image_name(bad, tmp_path)


def _big_loop_text(n: int, rng) -> str:
    rows = [
        f"{i + 1:06d}@Extract/job007/m{i // 100:03d}.mrcs {'nan' if i % 97 == 5 else rng.normal(0, 1e4)} "
        f"{int(rng.integers(-5, 5))} "
        f"{rng.uniform(1e-6, 1e-4):.6e} {'True' if i % 2 else 'False'} 0{i % 7} name{i % 3}"
        for i in range(n)
    ]
    labels = ["rlnImageName", "rlnDefocusU", "rlnClassNumber", "rlnSigma2", "rlnFlag", "rlnMicrographName",
              "rlnOther"]
    header = "data_particles\n\nloop_ \n" + "".join(f"_{label} #{k + 1} \n" for k, label in enumerate(labels))
    return header + "\n".join(rows) + "\n \n"


def test_fast_and_careful_parsers_agree(tmp_path, rng, monkeypatch):
    import vitrify.io._star_read as star_read

    (tmp_path / "big.star").write_text(_big_loop_text(1200, rng))
    fast = read_star(tmp_path / "big.star")["particles"]
    monkeypatch.setattr(star_read, "_FAST_MIN_ROWS", 10**9)
    careful = read_star(tmp_path / "big.star")["particles"]
    pd.testing.assert_frame_equal(fast, careful, check_exact=True)
    assert fast["rlnClassNumber"].dtype == np.int64 and fast["rlnSigma2"].dtype == np.float64
    assert fast["rlnMicrographName"].iloc[1] == "01" and fast["rlnFlag"].iloc[1] == "True"
    for frame in (fast, careful):
        write_star(tmp_path / "again.star", {"particles": frame})
        pd.testing.assert_frame_equal(read_star(tmp_path / "again.star")["particles"], frame)


@pytest.mark.parametrize("change", ["drop", "add"])
def test_big_file_with_a_bad_row_reports_its_line(tmp_path, rng, change):
    lines = _big_loop_text(1000, rng).splitlines()
    bad = 700
    lines[bad] = lines[bad].rsplit(" ", 1)[0] if change == "drop" else lines[bad] + " extra"
    (tmp_path / "big.star").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"line {bad + 1}: \d values in a row of data_particles"):
        read_star(tmp_path / "big.star")


def test_micrographs_and_movies_blocks(tmp_path):
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnMicrographOriginalPixelSize": [0.5], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                           "rlnMicrographPixelSize": [1.0]})
    mics = pd.DataFrame({"rlnMicrographName": ["MotionCorr/job002/a.mrc"], "rlnOpticsGroup": [1],
                         "rlnDefocusU": [15000.0], "rlnDefocusV": [14000.0]})
    write_star_optics(tmp_path / "mics.star", optics, mics, "micrographs")
    star = read_star_optics(tmp_path / "mics.star", "micrographs")
    assert star.merged["rlnMicrographPixelSize"].tolist() == [1.0]
    movies = pd.DataFrame({"rlnMicrographMovieName": ["Movies/a.tiff"]})  # no group column: one group
    write_star_optics(tmp_path / "movies.star", optics.drop(columns="rlnMicrographPixelSize"), movies, "movies")
    assert read_star_optics(tmp_path / "movies.star", "movies").data["rlnOpticsGroup"].tolist() == [1]
    write_star_optics(tmp_path / "bad.star", optics.drop(columns="rlnMicrographPixelSize"), mics, "micrographs")
    with pytest.raises(InputError, match="data_optics, column rlnMicrographPixelSize: missing required column"):
        read_star_optics(tmp_path / "bad.star", "micrographs")


def test_relion_double_labels_are_floats_both_ways(tmp_path):
    (tmp_path / "c.star").write_text("data_\nloop_\n_rlnCoordinateX #1\n_rlnClassNumber #2\n_rlnFoo #3\n"
                                     "1024 3 7\n\ndata_g\n_rlnVoltage 300\n_rlnImageSize 64\n")
    blocks = read_star(tmp_path / "c.star")
    frame = blocks[""]
    assert frame["rlnCoordinateX"].dtype == np.float64
    assert frame["rlnClassNumber"].dtype == np.int64 and frame["rlnFoo"].dtype == np.int64
    assert blocks["g"] == {"rlnVoltage": 300.0, "rlnImageSize": 64} and isinstance(blocks["g"]["rlnVoltage"], float)
    ints = pd.DataFrame({"rlnCoordinateX": [1024], "rlnClassNumber": [3]})
    write_star(tmp_path / "w.star", {"p": ints, "g": {"rlnVoltage": 300}})
    text = (tmp_path / "w.star").read_text()
    assert " 1024.000000            3 \n" in text and "_rlnVoltage" + " " * 12 + "  300.000000\n" in text


def test_bom_crlf_and_latin1_text_are_read(tmp_path):
    text = "# pixel size in \u00c5\r\ndata_a\r\nloop_\r\n_rlnImageName #1\r\n_rlnDefocusU #2\r\nx.mrc 1.5\r\n"
    (tmp_path / "bom.star").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "latin.star").write_bytes(text.encode("latin-1"))
    for name in ("bom.star", "latin.star"):
        frame = read_star(tmp_path / name)["a"]
        assert frame["rlnImageName"].tolist() == ["x.mrc"] and frame["rlnDefocusU"].tolist() == [1.5]


def test_files_we_write_are_read_by_the_starfile_package(tmp_path):
    starfile = pytest.importorskip("starfile")
    optics, data = _particles(20)
    write_star_optics(tmp_path / "p.star", optics, data)
    theirs = starfile.read(tmp_path / "p.star", always_dict=True)
    assert list(theirs) == ["optics", "particles"]
    assert list(theirs["particles"].columns) == list(read_star(tmp_path / "p.star")["particles"].columns)
    np.testing.assert_allclose(theirs["particles"]["rlnSigma2Noise"], data["rlnSigma2Noise"], rtol=1e-6)
    assert list(theirs["particles"]["rlnImageName"]) == list(data["rlnImageName"])


def test_integer_labels_written_as_floats_become_ints(tmp_path):
    (tmp_path / "f.star").write_text("data_g\n_rlnImageSize 64.000000\n\ndata_p\nloop_\n_rlnOpticsGroup\n"
                                     "_rlnClassNumber\n_rlnFoo\n1.000000 2.0 3.0\n2.000000 2.5 4.0\n")
    blocks = read_star(tmp_path / "f.star")
    assert blocks["g"] == {"rlnImageSize": 64} and isinstance(blocks["g"]["rlnImageSize"], int)
    frame = blocks["p"]
    assert frame["rlnOpticsGroup"].dtype == np.int64 and frame["rlnOpticsGroup"].tolist() == [1, 2]
    assert frame["rlnClassNumber"].dtype == np.float64  # 2.5 is not an integer: left as read
    assert frame["rlnFoo"].dtype == np.float64  # unknown label: typed from its values

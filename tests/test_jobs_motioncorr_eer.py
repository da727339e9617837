"""Import and motion correction of EER movies: RELION's eer_grouping / eer_upsampling options."""

from __future__ import annotations


import numpy as np
import pytest
import tifffile
from conftest import needs_shared, shared_fixtures
from _eer_encode import write_eer

from vitrify.errors import InputError
from vitrify.io.mrc import read_mrc
from vitrify.io.star import read_star, read_star_optics
from vitrify.jobs import motioncorr


def _cli(args):
    from vitrify.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


def test_eer_options_from_and_to_relion_job_star():
    values = {"input_star_mics": "Import/job001/movies.star", "eer_grouping": "20", "eer_upsampling": "2"}
    options = motioncorr.options_from_job_star(values)
    assert (options.eer_grouping, options.eer_upsampling) == (20, 2)
    written = motioncorr.job_star_from_options(options)
    assert (written["eer_grouping"], written["eer_upsampling"]) == ("20", "2")
    defaults = motioncorr.options_from_job_star({"input_star_mics": "m.star"})
    assert (defaults.eer_grouping, defaults.eer_upsampling) == (32, 1)
    with pytest.raises(InputError, match="eer_upsampling"):
        motioncorr.options_from_job_star({**values, "eer_upsampling": "4"})
    with pytest.raises(InputError, match="eer_grouping"):
        motioncorr.Options("m.star", eer_grouping=0)


@needs_shared("relion4_schemes")
def test_relion_scheme_motioncorr_job_star_sets_the_grouping():
    root = shared_fixtures("relion4_schemes") / "prep/motioncorr/job.star"
    table = read_star(root, as_strings=True)["joboptions_values"]
    values = dict(zip(table["rlnJobOptionVariable"], table["rlnJobOptionValue"]))
    assert motioncorr.options_from_job_star(values).eer_grouping == 20


def test_import_and_motioncorr_of_eer_movies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Movies").mkdir()
    rng = np.random.default_rng(0)
    ny, nx = 64, 80
    yy, xx = np.mgrid[:ny, :nx]
    specimen = 1 + 0.5 * np.sin(2 * np.pi * yy / 16) * np.cos(2 * np.pi * xx / 20)
    events = {}
    for name in ("a", "b"):
        events[name] = (rng.random((35, ny, nx)) < 0.3 * specimen).astype(np.uint8)   # 35 = 8 x 4 + 3
        write_eer(f"Movies/{name}.eer", events[name], sub_yx=rng.integers(0, 4, (35, 2, ny, nx)))
    assert _cli(["import", "--i", "Movies/*.eer", "--o", "Import/job001", "--angpix", "0.8"]) in (0, None)
    imported = read_star_optics("Import/job001/movies.star", "movies").data
    assert list(imported["rlnMicrographMovieName"]) == ["Movies/a.eer", "Movies/b.eer"]
    assert _cli(["motioncorr", "--i", "Import/job001/movies.star", "--o", "MotionCorr/job002",
                 "--patch-x", "1", "--patch-y", "1", "--no-dose-weighting", "--eer-grouping", "4",
                 "--device", "cpu"]) in (0, None)
    corrected = read_star_optics("MotionCorr/job002/corrected_micrographs.star", "micrographs").data
    assert list(corrected["rlnMicrographName"]) == ["MotionCorr/job002/Movies/a.mrc", "MotionCorr/job002/Movies/b.mrc"]
    shifts = read_star("MotionCorr/job002/Movies/a.star")["global_shift"]
    assert list(shifts["rlnMicrographFrameNumber"]) == list(range(1, 9))   # internal frames 33-35 dropped
    image, _ = read_mrc("MotionCorr/job002/Movies/a.mrc")
    assert image.shape == (ny, nx)
    # the sum keeps every counted electron of the 8 groups (alignment shifts move, not create, counts)
    assert float(image.sum(dtype=np.float64)) == pytest.approx(float(events["a"][:32].sum()), rel=1e-3)

    # 8K rendering with a 4K Falcon .gain (multiplicative, stored row order, upsampled 2 x 2)
    gain = (np.where(xx < nx // 2, 1.1, 0.95) * np.where(yy < 8, 1.05, 1.0)).astype(np.float32)
    tifffile.imwrite("Movies/falcon.gain", gain)
    assert _cli(["motioncorr", "--i", "Import/job001/movies.star", "--o", "MotionCorr/job003",
                 "--patch-x", "1", "--patch-y", "1", "--no-dose-weighting", "--eer-grouping", "4",
                 "--eer-upsampling", "2", "--gain", "Movies/falcon.gain", "--device", "cpu"]) in (0, None)
    image, _ = read_mrc("MotionCorr/job003/Movies/a.mrc")
    assert image.shape == (2 * ny, 2 * nx)
    weighted = float((events["a"][:32] * gain).sum(dtype=np.float64))
    assert float(image.sum(dtype=np.float64)) == pytest.approx(weighted, rel=1e-3)

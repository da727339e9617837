"""Import's MTF option (user files validated, ttsim3d's real detector curves) and bad movies."""

from __future__ import annotations

import numpy as np
import pytest

from vitrify.io.movies import write_movie
from vitrify.io.star import read_star_optics


def _cli(args):
    from vitrify.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


@pytest.fixture
def movies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Movies").mkdir()
    for k in range(2):
        write_movie(f"Movies/m{k}.tiff", np.ones((3, 16, 16), np.uint16))
    return tmp_path


def _write_mtf(path, freq, values, labels=("rlnResolutionInversePixel", "rlnMtfValue")):
    rows = "".join(f"{f:.6f} {v:.6f}\n" for f, v in zip(freq, values))
    path.write_text(f"data_mtf\nloop_\n_{labels[0]}\n_{labels[1]}\n{rows}\n")


def _import(extra):
    return _cli(["import", "--i", "Movies/*.tiff", "--o", "Import/job001", "--angpix", "1.0", *extra])


def test_user_mtf_file_is_validated_and_recorded(movies):
    _write_mtf(movies / "mtf.star", np.linspace(0, 0.5, 6), np.linspace(1, 0.3, 6))
    assert _import(["--mtf", "mtf.star"]) in (0, None)
    optics = read_star_optics("Import/job001/movies.star", "movies").optics
    assert optics["rlnMtfFileName"][0] == "mtf.star"


@pytest.mark.parametrize("freq,values,labels,message", [
    (np.linspace(0, 0.5, 6), np.ones(6), ("rlnResolutionInversePixel", "rlnFourierShell"), "not an MTF table"),
    (np.linspace(0, 1.0, 6), np.ones(6), ("rlnResolutionInversePixel", "rlnMtfValue"), "0.5 (1/pixel)"),
    (np.array([0.0, 0.2, 0.1]), np.ones(3), ("rlnResolutionInversePixel", "rlnMtfValue"), "increase"),
    (np.linspace(0, 0.5, 6), np.full(6, 7.0), ("rlnResolutionInversePixel", "rlnMtfValue"), "MTF values"),
])
def test_bad_mtf_files_are_one_line_errors(movies, capsys, freq, values, labels, message):
    _write_mtf(movies / "bad.star", freq, values, labels)
    assert _import(["--mtf", "bad.star"]) == 1
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (movies / "Import/job001/movies.star").exists()


def test_unknown_mtf_name_lists_what_is_available(movies, capsys):
    assert _import(["--mtf", "no_such_detector"]) == 1
    assert "no_such_detector" in capsys.readouterr().err


def test_shipped_detector_curve_is_copied_into_the_job(movies):
    from vitrify.jobs._mtf import read_mtf, shipped_mtf_files

    if "k3_CDS_300kV_FL1" not in shipped_mtf_files():
        pytest.skip("the optional ttsim3d package (real detector MTFs) is not installed")
    assert _import(["--mtf", "k3_CDS_300kV_FL1"]) in (0, None)
    optics = read_star_optics("Import/job001/movies.star", "movies").optics
    assert optics["rlnMtfFileName"][0] == "Import/job001/mtf_k3_CDS_300kV_FL1.star"
    table = read_mtf(optics["rlnMtfFileName"][0])
    mtf = table["rlnMtfValue"].to_numpy(float)
    assert mtf[0] == pytest.approx(1.0) and 0.5 < mtf[-1] < 0.9 and np.all(np.diff(mtf) <= 1e-6)
    assert len(shipped_mtf_files()) >= 10 and any(n.startswith("falcon4") for n in shipped_mtf_files())

"""Import → motion correction → select through the command line, with bad movies in the set."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pytest
import torch

movies_io = pytest.importorskip("vitrify.io.movies")
star_io = pytest.importorskip("vitrify.io.star")
mrc_io = pytest.importorskip("vitrify.io.mrc")

from conftest import needs_shared, shared_fixtures  # noqa: E402
from vitrify.preprocess._frames import shift_spectra  # noqa: E402

H, W, FRAMES = 160, 192, 8


def _movie(seed, drift, gain, n_frames=FRAMES):
    """uint16 counting frames of a smooth specimen drifting by ``drift`` (f, 2), divided by the gain."""
    g = torch.Generator().manual_seed(seed)
    k2 = torch.fft.fftfreq(H).view(-1, 1) ** 2 + torch.fft.rfftfreq(W).view(1, -1) ** 2
    specimen = torch.fft.irfft2(torch.fft.rfft2(torch.randn(H, W, generator=g)) * torch.exp(-60 * k2), s=(H, W))
    specimen = specimen / specimen.std()
    frames = torch.stack([torch.fft.irfft2(shift_spectra(torch.fft.rfft2(specimen), drift[f], (H, W)), s=(H, W))
                          for f in range(n_frames)])
    counts = torch.poisson((20 * (1 + 0.4 * frames)).clamp(min=0), generator=g).numpy()
    return np.round(counts / gain).astype(np.uint16)


def _cli(args):
    from vitrify.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


@pytest.fixture
def movies(tmp_path, monkeypatch):
    """Four movies in Movies/: two good, one with 6 frames, one with a black frame; a gain reference."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Movies").mkdir()
    gain = np.ones((H, W), np.float32)
    gain[:, : W // 2] = 2.0
    mrc_io.write_mrc("Movies/gain.mrc", gain, 1.0)
    drift = torch.stack([torch.linspace(0, 6, FRAMES), torch.linspace(0, -3, FRAMES)], dim=1)
    for k in range(2):
        movies_io.write_movie(f"Movies/good{k}.tiff", _movie(k, drift, gain), "lzw")
    movies_io.write_movie("Movies/short.tiff", _movie(5, drift, gain, n_frames=6))
    black = _movie(6, drift, gain)
    black[3] = 0
    movies_io.write_movie("Movies/black.tiff", black)
    return drift


def test_import_motioncorr_select(movies):
    assert _cli(["import", "--i", "Movies/*.tiff", "--o", "Import/job001", "--angpix", "1.0"]) in (0, None)
    imported = star_io.read_star_optics("Import/job001/movies.star", "movies")
    assert len(imported.data) == 4 and float(imported.optics["rlnMicrographOriginalPixelSize"][0]) == 1.0

    assert _cli(["motioncorr", "--i", "Import/job001/movies.star", "--o", "MotionCorr/job002",
                 "--gain", "Movies/gain.mrc", "--patch-x", "1", "--patch-y", "1", "--dose-per-frame", "2",
                 "--bin", "2", "--float16"]) in (0, None)
    corrected = star_io.read_star_optics("MotionCorr/job002/corrected_micrographs.star", "micrographs")
    names = list(corrected.data["rlnMicrographName"])
    assert names == [f"MotionCorr/job002/Movies/{n}.mrc" for n in ("black", "good0", "good1")]
    skipped = open("MotionCorr/job002/skipped.txt").read()
    assert skipped.startswith("Movies/short.tiff\t") and "6 frames where most movies have 8" in skipped
    # the black frame (4) is dropped with a message; the other frames keep their numbers
    frames = star_io.read_star("MotionCorr/job002/Movies/black.star")["global_shift"]["rlnMicrographFrameNumber"]
    assert list(frames) == [1, 2, 3, 5, 6, 7, 8]
    assert "black.tiff: dropped 1 empty/black frame(s): [4]" in open("MotionCorr/job002/run.log").read()
    assert float(corrected.optics["rlnMicrographPixelSize"][0]) == 2.0
    timing = pd.read_csv("MotionCorr/job002/timing.tsv", sep="\t")  # where the time went, by stage
    assert {"read", "gain", "FFT frames", "global alignment", "sums + dose weighting", "write"} <= set(timing["stage"])
    assert (timing["cpu_s"] >= 0).all() and (timing["wall_s"] >= 0).all()
    image, pixel = mrc_io.read_mrc(names[1])
    assert image.shape == (H // 2, W // 2) and pixel == pytest.approx(2.0)
    assert mrc_io.read_mrc_header(names[1])["mode"] == 12
    # the shifts recorded for a good movie follow the true drift (frame 1 = 0)
    shifts = star_io.read_star("MotionCorr/job002/Movies/good0.star")["global_shift"]
    truth = -(movies - movies[0]).numpy()
    error = np.hypot(shifts["rlnMicrographShiftX"] - truth[:, 0], shifts["rlnMicrographShiftY"] - truth[:, 1])
    assert float(np.sqrt((error ** 2).mean())) < 0.3
    total = corrected.data["rlnAccumMotionTotal"][1]
    assert total == pytest.approx(np.hypot(6, 3), rel=0.15)
    assert os.path.exists("MotionCorr/job002/Movies/good0_shifts.png")
    assert os.path.exists("MotionCorr/job002/Movies/good0_noDW.mrc")

    table = corrected.data.assign(rlnCtfMaxResolution=[4.0, 8.0, 5.5])
    star_io.write_star_optics("mics.star", corrected.optics, table, "micrographs")
    assert _cli(["select", "--i", "mics.star", "--o", "Select/job003", "--max", "6"]) in (0, None)
    kept = star_io.read_star_optics("Select/job003/micrographs.star", "micrographs").data
    assert list(kept["rlnCtfMaxResolution"]) == [4.0, 5.5]


def test_wrong_gain_size_skips_movies_with_a_clear_message(movies, capsys):
    mrc_io.write_mrc("Movies/gain_t.mrc", np.ones((W, H), np.float32), 1.0)
    _cli(["import", "--i", "Movies/good*.tiff", "--o", "Import/job001", "--angpix", "1.0"])
    capsys.readouterr()
    # every movie skipped: the job fails (nothing to hand on) with the first reason on one line
    assert _cli(["motioncorr", "--i", "Import/job001/movies.star", "--o", "MotionCorr/job002",
                 "--gain", "Movies/gain_t.mrc", "--patch-x", "1", "--patch-y", "1"]) == 1
    assert "no movies could be processed" in capsys.readouterr().err
    assert not os.path.exists("MotionCorr/job002/corrected_micrographs.star")
    skipped = open("MotionCorr/job002/skipped.txt").read()
    assert skipped.count("gain reference is") == 2 and "gain_rot" in skipped


def test_import_on_the_fly_adds_only_new_complete_files(movies):
    _cli(["import", "--i", "Movies/good*.tiff", "--o", "Import/job001", "--angpix", "1.0", "--only-new"])
    movies_io.write_movie("Movies/good2.tiff", np.ones((2, 8, 8), np.uint16))
    movies_io.write_movie("Movies/good3.tiff", np.ones((2, 8, 8), np.uint16))
    old = time.time() - 100
    os.utime("Movies/good2.tiff", (old, old))
    _cli(["import", "--i", "Movies/good*.tiff", "--o", "Import/job001", "--angpix", "1.0", "--only-new",
          "--stable-seconds", "30"])
    names = list(star_io.read_star_optics("Import/job001/movies.star", "movies").data["rlnMicrographMovieName"])
    assert names == ["Movies/good0.tiff", "Movies/good1.tiff", "Movies/good2.tiff"]


def test_import_without_matches_is_one_line_error(movies, capsys):
    assert _cli(["import", "--i", "Nothing/*.tiff", "--o", "Import/job001", "--angpix", "1.0"]) == 1
    assert "no files match" in capsys.readouterr().err


@needs_shared("relion4_schemes")
def test_options_from_relion_job_stars():
    from vitrify.jobs import import_, motioncorr, select

    root = shared_fixtures("relion4_schemes")

    def values(kind):
        table = star_io.read_star(f"{root}/{kind}/job.star", as_strings=True)["joboptions_values"]
        return dict(zip(table["rlnJobOptionVariable"], table["rlnJobOptionValue"]))

    imp = import_.options_from_job_star(values("prep/importmovies"))
    assert (imp.pattern, imp.pixel_size_angst, imp.voltage_kv, imp.movies) == ("Micrographs/*.tif", 0.455, 200.0, True)
    mc = motioncorr.options_from_job_star(values("prep/motioncorr"))
    assert (mc.binning, mc.dose_per_frame, mc.motion.patches_x, mc.float16, mc.gain_rotation) == (2.0, 1.55, 5, True, 0)
    sel = select.options_from_job_star({**values("proc/select_mics"), "fn_mic": "CtfFind/job003/micrographs_ctf.star"})
    assert (sel.label, sel.max_value, sel.mode) == ("rlnCtfMaxResolution", 6.0, "values")
    assert select.options_from_job_star(values("proc/select_parts")).mode == "class_ranker"
    assert pd.api.types.is_float(sel.min_value)


def test_gain_of_the_wrong_orientation_stops_with_the_setting_that_fits(tmp_path, monkeypatch, capsys):
    from vitrify.sim.micrographs import MicrographOptions
    from vitrify.sim.movies import simulate_movies

    monkeypatch.chdir(tmp_path)
    simulate_movies(MicrographOptions(n_micrographs=2, size_px=(128, 128), n_frames=4, particles_per_micrograph=2,
                                      carbon_fraction=0.0, seed=3), ".")
    gain, _ = mrc_io.read_mrc("Movies/gain.mrc")
    mrc_io.write_mrc("gain_flipped.mrc", np.flipud(gain).copy(), 1.5)
    args = ["motioncorr", "--i", "movies.star", "--patch-x", "1", "--patch-y", "1"]
    assert _cli(args + ["--o", "MotionCorr/job002", "--gain", "gain_flipped.mrc"]) == 1
    assert "gain_rot 0 and gain_flip 1" in " ".join(capsys.readouterr().err.split())
    assert _cli(args + ["--o", "MotionCorr/job003", "--gain", "gain_flipped.mrc", "--gain-flip", "1"]) in (0, None)
    assert _cli(args + ["--o", "MotionCorr/job004", "--gain", "Movies/gain.mrc"]) in (0, None)
    assert len(star_io.read_star_optics("MotionCorr/job004/corrected_micrographs.star", "micrographs").data) == 2


def test_motioncorr_continue_keeps_finished_movies_and_adds_new_ones(movies):
    gain, _ = mrc_io.read_mrc("Movies/gain.mrc")
    _cli(["import", "--i", "Movies/good*.tiff", "--o", "Import/job001", "--angpix", "1.0"])
    args = ["motioncorr", "--i", "Import/job001/movies.star", "--o", "MotionCorr/job002", "--gain",
            "Movies/gain.mrc", "--patch-x", "1", "--patch-y", "1"]
    assert _cli(args) in (0, None)
    done = {name: os.stat(f"MotionCorr/job002/Movies/{name}").st_mtime_ns for name in ("good0.mrc", "good0.star")}
    drift = torch.stack([torch.linspace(0, -4, FRAMES), torch.linspace(0, 2, FRAMES)], dim=1)
    movies_io.write_movie("Movies/good2.tiff", _movie(9, drift, gain))
    _cli(["import", "--i", "Movies/good*.tiff", "--o", "Import/job001", "--angpix", "1.0", "--only-new"])
    assert _cli(args) in (0, None)
    names = star_io.read_star_optics("MotionCorr/job002/corrected_micrographs.star", "micrographs").data
    assert [n.split("/")[-1] for n in names["rlnMicrographName"]] == ["good0.mrc", "good1.mrc", "good2.mrc"]
    assert {name: os.stat(f"MotionCorr/job002/Movies/{name}").st_mtime_ns for name in done} == done
    assert names["rlnAccumMotionTotal"].to_numpy() == pytest.approx([np.hypot(6, 3)] * 2 + [np.hypot(4, 2)], rel=0.15)

"""The ctffind → autopick → extract chain through the command line, on micrographs with known truth."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from conftest import needs_shared, shared_fixtures
from vitrify.jobs._preprocess_io import relative_output

ctf_core = pytest.importorskip("vitrify.core.ctf")
star_io = pytest.importorskip("vitrify.io.star")
mrc_io = pytest.importorskip("vitrify.io.mrc")

PIXEL = 2.0
N = 512
DIAMETER = 100.0
DEFOCI = [(15000.0, 14000.0, 30.0), (22000.0, 21000.0, 100.0)]


def _micrograph(u, v, angle, seed):
    """Dark discs at known positions, CTF-filtered, with CTF-filtered and white noise."""
    rng = np.random.default_rng(seed)
    radius = DIAMETER / 2 / PIXEL
    points: list[np.ndarray] = []
    while len(points) < 10:
        p = rng.uniform(2 * radius, N - 2 * radius, 2)
        if all(np.hypot(*(p - q)) > 3 * radius for q in points):
            points.append(p)
    yy, xx = np.mgrid[:N, :N]
    discs = np.zeros((N, N))
    for x, y in points:
        discs -= np.sqrt(np.clip(radius ** 2 - (xx - x) ** 2 - (yy - y) ** 2, 0, None)) / radius
    ctf = ctf_core.ctf_2d(N, ctf_core.CtfParams(pixel_size_angst=PIXEL, defocus_u_angst=u, defocus_v_angst=v,
                                                defocus_angle_deg=angle, bfactor=50.0)).numpy()
    specimen = 2.0 * discs + rng.normal(size=(N, N))
    image = np.fft.irfft2(np.fft.rfft2(specimen) * ctf, s=(N, N)) + 0.7 * rng.normal(size=(N, N))
    return image.astype(np.float32), np.array(points)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project directory with Import/job001/micrographs.star and two micrographs."""
    monkeypatch.chdir(tmp_path)
    truth = {}
    names = []
    for k, (u, v, a) in enumerate(DEFOCI):
        image, points = _micrograph(u, v, a, seed=k)
        name = f"Import/job001/Micrographs/mic{k}.mrc"
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        mrc_io.write_mrc(name, image, PIXEL)
        names.append(name)
        truth[name] = (u, v, a, points)
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnMicrographOriginalPixelSize": [PIXEL], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                           "rlnMicrographPixelSize": [PIXEL]})
    mics = pd.DataFrame({"rlnMicrographName": names, "rlnOpticsGroup": [1, 1]})
    star_io.write_star_optics("Import/job001/micrographs.star", optics, mics, "micrographs")
    return truth


def _cli(args):
    from vitrify.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


def test_ctffind_autopick_extract_chain(project):
    assert _cli(["ctffind", "--i", "Import/job001/micrographs.star", "--o", "CtfFind/job002",
                 "--box", "256", "--resmax", "6"]) in (0, None)
    ctf = star_io.read_star_optics("CtfFind/job002/micrographs_ctf.star", "micrographs").merged
    for _, row in ctf.iterrows():
        u, v, _, _ = project[row["rlnMicrographName"]]
        assert abs(row["rlnDefocusU"] - u) < 300 and abs(row["rlnDefocusV"] - v) < 300
        assert row["rlnCtfMaxResolution"] < 15 and row["rlnCtfFigureOfMerit"] > 0.2
    assert (relative_output(__import__("pathlib").Path("CtfFind/job002"),
                            ctf["rlnMicrographName"][0], "_ctf.png")).exists()

    assert _cli(["autopick", "--i", "CtfFind/job002/micrographs_ctf.star", "--o", "AutoPick/job003",
                 "--method", "log", "--log-diameter-min", "80", "--log-diameter-max", "120"]) in (0, None)
    files = star_io.read_star("AutoPick/job003/autopick.star")["coordinate_files"]
    assert len(files) == 2
    from vitrify.preprocess.picking import match_picks

    for mic, coords_file in zip(files["rlnMicrographName"], files["rlnMicrographCoordinates"]):
        coords = star_io.read_star(coords_file)[""]
        precision, recall = match_picks(coords[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float),
                                        project[mic][3], tolerance_px=8)
        assert precision >= 0.85 and recall >= 0.85

    assert _cli(["extract", "--i", "CtfFind/job002/micrographs_ctf.star", "--coords",
                 "AutoPick/job003/autopick.star", "--o", "Extract/job004", "--box", "64",
                 "--rescale", "32", "--float16"]) in (0, None)
    particles = star_io.read_star_optics("Extract/job004/particles.star", "particles")
    assert int(particles.optics["rlnImageSize"][0]) == 32
    assert float(particles.optics["rlnImagePixelSize"][0]) == pytest.approx(PIXEL * 2)
    assert {"rlnDefocusU", "rlnCtfMaxResolution", "rlnAutopickFigureOfMerit"} <= set(particles.data.columns)
    images = mrc_io.read_images(particles.data["rlnImageName"][:5], ".")
    assert images.shape == (5, 32, 32)
    assert mrc_io.read_mrc_header(particles.data["rlnImageName"][0].split("@")[1])["mode"] == 12


def test_ctffind_skips_a_blank_micrograph_and_goes_on(project):
    good = mrc_io.read_mrc("Import/job001/Micrographs/mic1.mrc")[0]
    mrc_io.write_mrc("Import/job001/Micrographs/mic1.mrc", np.zeros((N, N), np.float32), PIXEL)
    args = ["ctffind", "--i", "Import/job001/micrographs.star", "--o", "CtfFind/job002", "--box", "256",
            "--no-diagnostics"]
    assert _cli(args) in (0, None)
    ctf = star_io.read_star_optics("CtfFind/job002/micrographs_ctf.star", "micrographs").data
    assert list(ctf["rlnMicrographName"]) == ["Import/job001/Micrographs/mic0.mrc"]
    assert "mic1.mrc" in open("CtfFind/job002/skipped.txt").read()
    # continuing after the micrograph is fixed: the finished fit is kept, the fixed one is added
    done = relative_output(__import__("pathlib").Path("CtfFind/job002"), ctf["rlnMicrographName"][0], "_ctf.star")
    stamp = done.stat().st_mtime_ns
    mrc_io.write_mrc("Import/job001/Micrographs/mic1.mrc", good, PIXEL)
    assert _cli(args) in (0, None)
    ctf = star_io.read_star_optics("CtfFind/job002/micrographs_ctf.star", "micrographs").data
    assert len(ctf) == 2 and done.stat().st_mtime_ns == stamp
    assert abs(ctf["rlnDefocusU"][1] - DEFOCI[1][0]) < 500


def test_missing_input_is_one_line_error(project, capsys):
    assert _cli(["ctffind", "--i", "nope.star", "--o", "CtfFind/job002"]) == 1
    assert "nope.star" in capsys.readouterr().err


@needs_shared("relion4_schemes")
def test_options_from_relion_job_star():
    from vitrify.jobs import autopick, ctffind, extract
    from vitrify.io.star import read_star

    root = shared_fixtures("relion4_schemes")
    values = {kind: dict(zip(*read_star(f"{root}/{kind}/job.star", as_strings=True)
                             ["joboptions_values"].to_numpy().T))
              for kind in ("prep/ctffind", "proc/autopick", "proc/extract")}
    c = ctffind.options_from_job_star(values["prep/ctffind"])
    assert (c.search.tile_px, c.search.resolution_max_angst, c.search.defocus_min_angst) == (512, 5.0, 5000.0)
    a = autopick.options_from_job_star(values["proc/autopick"])
    assert (a.log.diameter_min_angst, a.log.diameter_max_angst, a.method) == (150.0, 180.0, "log")
    e = extract.options_from_job_star(values["proc/extract"])
    assert (e.extract.box_px, e.extract.rescale_px, e.float16, e.min_fom) == (166, 48, True, -3.0)

"""Autopick (template, Topaz) → extract through the command line on simulated micrographs with known truth."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch

from vitrify.io.mrc import read_images, write_mrc
from vitrify.io.star import read_star, read_star_optics, write_star, write_star_optics
from vitrify.preprocess.picking import match_picks

PIXEL = 1.5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Simulated micrographs + CFTR projections as class averages (white protein, as Class2D writes them)."""
    from vitrify.core.euler import euler_to_matrix
    from vitrify.core.projector import project_real
    from vitrify.sim.maps import MapOptions, simulate_map
    from vitrify.sim.micrographs import MicrographOptions, simulate_micrographs
    from vitrify.sim.structures import load_structure

    root = tmp_path_factory.mktemp("data")
    options = MicrographOptions(structures=("cftr",), n_micrographs=2, size_px=(512, 512),
                                particles_per_micrograph=12, min_distance_angst=220, carbon_fraction=0.0,
                                seed=7)
    data = simulate_micrographs(options, root)
    atoms = load_structure("cftr")
    box = int(2 * np.ceil(atoms.max_radius_angst() / PIXEL + 3))
    volume = torch.as_tensor(simulate_map(atoms, MapOptions(box, PIXEL)))
    angles = torch.tensor([[0.0, 0.0, 0.0], [0.0, 90.0, 0.0], [90.0, 90.0, 0.0], [30.0, 45.0, 60.0]])
    references = project_real(volume, euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2]))
    write_mrc(root / "classes.mrcs", references.numpy(), PIXEL)
    return root, data, atoms.max_radius_angst()


@pytest.fixture
def project(dataset, tmp_path, monkeypatch):
    """micrographs_ctf.star (true CTF) over the simulated micrographs plus one pure-noise micrograph."""
    root, data, radius = dataset
    monkeypatch.chdir(tmp_path)
    mics = data.truth["micrographs"][["rlnMicrographName", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"]].copy()
    mics["rlnMicrographName"] = [str(root / n) for n in mics["rlnMicrographName"]]
    noise = np.random.default_rng(0).poisson(90.0, size=(512, 512)).astype(np.float32)
    write_mrc("empty.mrc", noise, PIXEL)
    mics.loc[len(mics)] = ["empty.mrc", 20000.0, 20000.0, 0.0]
    mics["rlnOpticsGroup"] = 1
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnMicrographOriginalPixelSize": [PIXEL], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                           "rlnMicrographPixelSize": [PIXEL]})
    write_star_optics("micrographs_ctf.star", optics, mics, "micrographs")
    return root, data, radius


def _cli(args):
    from vitrify.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


def _truth(data, name):
    parts = data.truth["particles"]
    return parts[parts["rlnMicrographName"] == name][["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()


def test_template_picking_then_extraction_skips_the_empty_micrograph(project):
    root, data, radius = project
    assert _cli(["autopick", "--i", "micrographs_ctf.star", "--o", "AutoPick/job003", "--method", "template",
                 "--references", str(root / "classes.mrcs"), "--diameter", f"{1.6 * radius:.1f}"]) in (0, None)
    files = read_star("AutoPick/job003/autopick.star")["coordinate_files"]
    assert len(files) == 3
    for mic, coords_file in zip(files["rlnMicrographName"], files["rlnMicrographCoordinates"]):
        coords = read_star(coords_file)[""]
        if mic == "empty.mrc":
            assert len(coords) == 0
            continue
        name = str(mic).replace(f"{root}/", "")
        xy = coords[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float)
        precision, recall = match_picks(xy, _truth(data, name), radius / PIXEL / 2)
        assert precision >= 0.85 and recall >= 0.85
        assert coords["rlnClassNumber"].between(1, 4).all()
        assert coords["rlnAnglePsi"].between(0, 360).all()
    assert list(__import__("pathlib").Path("AutoPick/job003").rglob("*_autopick.png"))

    assert _cli(["extract", "--i", "micrographs_ctf.star", "--coords", "AutoPick/job003/autopick.star",
                 "--o", "Extract/job004", "--box", "128"]) in (0, None)
    particles = read_star_optics("Extract/job004/particles.star", "particles").data
    assert "empty.mrc" not in set(particles["rlnMicrographName"])
    assert len(particles) >= 0.85 * len(data.truth["particles"]) - 2
    assert "empty.mrc: no particles" in open("Extract/job004/skipped.txt").read()
    images = read_images(particles["rlnImageName"][:4])
    assert images.shape == (4, 128, 128) and np.isfinite(images).all()


def test_template_references_from_class_averages_star(project):
    root, data, radius = project
    refs = pd.DataFrame({"rlnReferenceImage": [f"{k:06d}@{root / 'classes.mrcs'}" for k in (2, 4)]})
    write_star("class_averages.star", {"": refs})
    from vitrify.jobs.autopick import Options, load_references

    images, pixel, template = load_references(Options("micrographs_ctf.star", "template",
                                                      references="class_averages.star"))
    assert tuple(images.shape)[0] == 2 and pixel == pytest.approx(PIXEL)
    assert template.diameter_angst == pytest.approx(0.75 * images.shape[-1] * PIXEL)


def test_missing_references_is_one_line_error(project, capsys):
    assert _cli(["autopick", "--i", "micrographs_ctf.star", "--o", "AutoPick/job003", "--method", "template",
                 "--references", "nothing.mrcs"]) == 1
    assert "nothing.mrcs" in capsys.readouterr().err


def test_topaz_absent_gives_the_install_command(project, monkeypatch, capsys):
    for name in ("topaz", "topaz.model", "topaz.model.factory"):
        monkeypatch.setitem(sys.modules, name, None)
    assert _cli(["autopick", "--i", "micrographs_ctf.star", "--o", "AutoPick/job005", "--method", "topaz"]) == 1
    assert "pip install --no-deps topaz-em" in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_topaz_picks_simulated_particles(dataset):
    pytest.importorskip("topaz.model.factory")
    from vitrify.io.mrc import read_mrc
    from vitrify.preprocess.topaz_pick import pick_topaz

    root, data, radius = dataset
    name = data.truth["micrographs"]["rlnMicrographName"][0]
    image, _ = read_mrc(root / name)
    picks = pick_topaz(torch.as_tensor(image), PIXEL, 2 * radius, threshold=0.0)
    precision, recall = match_picks(np.stack([picks.x_px, picks.y_px], 1), _truth(data, name),
                                    radius / PIXEL / 2)
    assert precision >= 0.8 and recall >= 0.8

"""Template picking with class-average-like references against simulated micrographs with known truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitrify.core.ctf import CtfParams
from vitrify.core.euler import euler_to_matrix
from vitrify.core.projector import project_real
from vitrify.io.errors import InputError
from vitrify.preprocess.picking import match_picks
from vitrify.preprocess.template_pick import TemplatePickOptions, pick_templates, resolve_diameter

PIXEL = 1.5


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Two 512² micrographs of well-separated CFTR particles and six projections of its map as references."""
    from vitrify.sim.maps import MapOptions, simulate_map
    from vitrify.sim.micrographs import MicrographOptions, simulate_micrographs
    from vitrify.sim.structures import load_structure

    options = MicrographOptions(structures=("cftr",), n_micrographs=2, size_px=(512, 512),
                                particles_per_micrograph=12, min_distance_angst=220, carbon_fraction=0.0,
                                seed=4)
    data = simulate_micrographs(options, tmp_path_factory.mktemp("sim"))
    atoms = load_structure("cftr")
    radius = atoms.max_radius_angst()
    box = int(2 * np.ceil(radius / PIXEL + 3))
    volume = torch.as_tensor(simulate_map(atoms, MapOptions(box, PIXEL)))
    rng = np.random.default_rng(11)  # orientations unrelated to the particles'
    angles = torch.as_tensor(np.stack([rng.uniform(0, 360, 6), np.degrees(np.arccos(rng.uniform(-1, 1, 6))),
                                       rng.uniform(0, 360, 6)], 1), dtype=torch.float32)
    references = project_real(volume, euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2]))
    return data, references, radius


def _micrograph(data, index):
    from vitrify.io.mrc import read_mrc

    name = data.truth["micrographs"]["rlnMicrographName"][index]
    image, _ = read_mrc(data.star.parent / name)
    parts = data.truth["particles"]
    truth = parts[parts["rlnMicrographName"] == name][["rlnCoordinateX", "rlnCoordinateY"]].to_numpy()
    row = data.truth["micrographs"].iloc[index]
    ctf = CtfParams(pixel_size_angst=PIXEL, defocus_u_angst=row["rlnDefocusU"], defocus_v_angst=row["rlnDefocusV"],
                    defocus_angle_deg=row["rlnDefocusAngle"])
    return torch.as_tensor(image), truth, ctf


def test_picks_match_truth_on_simulated_micrographs(simulated, device):
    data, references, radius = simulated
    found = 0
    for index in range(2):
        image, truth, ctf = _micrograph(data, index)
        picks = pick_templates(image.to(device), PIXEL, references.to(device), PIXEL,
                               TemplatePickOptions(1.6 * radius), ctf)
        precision, recall = match_picks(np.stack([picks.x_px, picks.y_px], 1), truth, radius / PIXEL / 2)
        assert precision >= 0.85 and recall >= 0.85, (index, precision, recall)
        assert set(picks.class_number.tolist()) <= set(range(1, 7))
        assert np.all(np.diff(picks.figure_of_merit) <= 0)
        found += len(picks)
    assert found > 10


def test_pure_noise_gives_no_picks(simulated):
    _, references, radius = simulated
    noise = torch.randn(512, 512, generator=torch.Generator().manual_seed(2))
    assert len(pick_templates(noise, PIXEL, references, PIXEL, TemplatePickOptions(1.6 * radius))) == 0


def _shape():
    """An asymmetric 'L' of 40 x 40 px (white), centred in a 64 px box."""
    image = np.zeros((64, 64), np.float32)
    image[12:52, 12:22] = 1.0
    image[42:52, 12:44] = 1.0
    return image


def test_best_reference_and_in_plane_angle_are_reported():
    rng = np.random.default_rng(0)
    shape = _shape()
    other = np.zeros_like(shape)
    other[22:42, 22:42] = 1.0  # a square: the decoy reference
    micrograph = rng.normal(size=(512, 512)).astype(np.float32)
    placed = {0: [(100, 100), (300, 120)], 1: [(120, 330), (380, 380)]}  # k quarter turns → centres
    for k, centres in placed.items():
        rotated = np.rot90(shape, k)
        for x, y in centres:
            micrograph[y - 32:y + 32, x - 32:x + 32] -= 3.0 * rotated  # dark protein
    references = torch.as_tensor(np.stack([other, shape]))
    opts = TemplatePickOptions(64.0, psi_step_deg=15.0, lowpass_angst=4.0, pixels_per_diameter=64,
                               highpass_angst=200.0)
    picks = pick_templates(torch.as_tensor(micrograph), 1.0, references, 1.0, opts)
    assert len(picks) == 4 and set(picks.class_number.tolist()) == {2}
    psi = {}
    for x, y, angle in zip(picks.x_px, picks.y_px, picks.psi_deg):
        k = next(k for k, centres in placed.items() if any(np.hypot(x - cx, y - cy) < 4 for cx, cy in centres))
        psi.setdefault(k, set()).add(float(angle) % 360)
    assert psi[0] == {0.0}
    # np.rot90 turns the image a quarter anticlockwise as displayed (row 0 on top): rotation_2d(90°)
    assert psi[1] == {90.0}


def test_diameter_defaults_to_three_quarters_of_the_reference_box():
    assert resolve_diameter(TemplatePickOptions(), (3, 64, 64), 2.0).diameter_angst == pytest.approx(96.0)
    assert resolve_diameter(TemplatePickOptions(50.0), (3, 64, 64), 2.0).diameter_angst == 50.0


def test_bad_references_and_options_are_input_errors():
    with pytest.raises(InputError):
        TemplatePickOptions(100.0, psi_step_deg=0.0)
    with pytest.raises(InputError):
        TemplatePickOptions(-5.0)
    image = torch.randn(128, 128)
    with pytest.raises(InputError, match="references"):
        pick_templates(image, 1.0, torch.zeros(2, 32, 32), 1.0, TemplatePickOptions(20.0))
    with pytest.raises(InputError, match="square"):
        pick_templates(image, 1.0, torch.randn(2, 32, 30), 1.0, TemplatePickOptions(20.0))

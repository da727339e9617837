"""CTF estimation on micrographs of our simulator (particles, ice, Poisson noise) against their truth.

The cases of issue 15: Thon rings only from sparse particles (60 per 1024² field, thin ice, no
carbon, white noise), astigmatism to be reported faithfully (neither zeroed nor inflated), and a
figure of merit / fit resolution that tell pure noise from rings.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitrify.io.mrc import read_mrc
from vitrify.preprocess.ctf_fit import CtfSearch, estimate_ctf
from vitrify.sim.micrographs import MicrographOptions, simulate_micrographs

SIZE = 1024


def _fits(tmp_path, **kwargs) -> list[tuple[dict, object]]:
    options = MicrographOptions(structures=("cftr",), size_px=(SIZE, SIZE), pixel_size_angst=1.5, n_frames=1,
                                carbon_fraction=0.0, ice_gradient_nm=10.0, **kwargs)
    data = simulate_micrographs(options, tmp_path)
    truth = data.truth["micrographs"]
    out = []
    for path, (_, row) in zip(data.files, truth.iterrows()):
        image = torch.as_tensor(np.asarray(read_mrc(path)[0], dtype=np.float32))
        out.append((row, estimate_ctf(image, options.optics, CtfSearch())))
    return out


def _mean_error(fit, row) -> float:
    return abs(0.5 * (fit.defocus_u_angst + fit.defocus_v_angst) - 0.5 * (row["rlnDefocusU"] + row["rlnDefocusV"]))


@pytest.fixture(scope="module")
def sparse_fits(tmp_path_factory):
    """Issue 15's 'outside' micrographs: 60 particles, 20 nm ice, no carbon, 0.8-3 µm, astigmatism ≤ 1500 Å."""
    return _fits(tmp_path_factory.mktemp("sparse"), n_micrographs=2, particles_per_micrograph=60,
                 ice_thickness_nm=20.0, defocus_min_angst=8000.0, defocus_max_angst=30000.0,
                 astigmatism_max_angst=1500.0, dose_per_frame=40.0, seed=4)


def test_weak_rings_of_sparse_particles_give_defocus_and_astigmatism(sparse_fits):
    for row, fit in sparse_fits:
        true_astig = abs(row["rlnDefocusU"] - row["rlnDefocusV"])
        assert _mean_error(fit, row) < 400
        assert abs(fit.astigmatism_angst - true_astig) < 400
        assert fit.astigmatism_angst > 0.0  # measured, never zeroed
        if true_astig > 500:
            assert abs((fit.defocus_angle_deg - row["rlnDefocusAngle"] + 90) % 180 - 90) < 15
        assert fit.figure_of_merit > 0.1 and fit.max_resolution_angst < 15


def test_small_astigmatism_is_reported_not_zeroed_nor_inflated(tmp_path):
    """A crowded field (strong rings), true astigmatism 252 Å: the fit within 150 Å of it (not 0, not 1000s)."""
    for row, fit in _fits(tmp_path, n_micrographs=1, particles_per_micrograph=200, min_distance_angst=100.0,
                          ice_thickness_nm=20.0, defocus_min_angst=10000.0, defocus_max_angst=25000.0,
                          astigmatism_max_angst=300.0, dose_per_frame=40.0, seed=11):
        true_astig = abs(row["rlnDefocusU"] - row["rlnDefocusV"])
        assert 0.0 < fit.astigmatism_angst and abs(fit.astigmatism_angst - true_astig) < 150
        assert _mean_error(fit, row) < 200


def test_pure_noise_scores_below_rings_and_reports_no_resolution(sparse_fits):
    noise = torch.as_tensor(np.random.default_rng(2).poisson(90.0, (SIZE, SIZE)).astype(np.float32))
    fit = estimate_ctf(noise, MicrographOptions(pixel_size_angst=1.5).optics, CtfSearch())
    assert fit.figure_of_merit < 0.5 * min(f.figure_of_merit for _, f in sparse_fits)
    assert fit.max_resolution_angst >= 20.0  # no Thon rings: fails any rlnCtfMaxResolution selection
    assert max(f.max_resolution_angst for _, f in sparse_fits) < 15.0

"""Simulated particles reconstructed at their true poses give back the truth map."""

from __future__ import annotations

import torch

from vitrify.io.mrc import read_mrc
from vitrify.sim.particles import ParticleOptions, simulate_particles
from vitrify.sim.reconstruct import fourier_shell_correlation, reconstruct_from_truth, resolution_at


def test_noise_free_ctf_particles_reconstruct_to_the_truth(tmp_path):
    options = ParticleOptions(structures=("adk",), n_particles=400, box_px=32, pixel_size_angst=3.0,
                              add_noise=False, max_shift_px=2.0, seed=3)
    data = simulate_particles(options, tmp_path)
    rec = reconstruct_from_truth(data.truth_star)
    truth, _ = read_mrc(data.truth_maps[0])
    fsc = fourier_shell_correlation(rec.volume, torch.as_tensor(truth))
    assert rec.n_particles == 400
    assert float(fsc[1:12].min()) > 0.9
    assert resolution_at(fsc, 32, 3.0) < 9.0


def test_fsc_of_a_map_with_itself_is_one_and_with_noise_falls():
    gen = torch.Generator().manual_seed(0)
    volume = torch.randn(16, 16, 16, generator=gen)
    assert torch.allclose(fourier_shell_correlation(volume, volume), torch.ones(9), atol=1e-5)
    other = torch.randn(16, 16, 16, generator=gen)
    assert float(fourier_shell_correlation(volume, other)[2:].abs().max()) < 0.5

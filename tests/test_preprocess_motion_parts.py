"""The pieces of the fast motion correction: cropped alignment, 3 x 3 DFT peaks, low-rank dose
weighting, one-pass resampled sums, stage timing — each against a direct computation or the truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitrify.preprocess._deformation import sampling_grids
from vitrify.preprocess._frames import (correlation_peaks, good_size, group_sums, local_peaks, phase_ramps,
                                        shift_spectra)
from vitrify.preprocess._motion_sum import DoseBasis, dose_basis, frame_exposures
from vitrify.preprocess.motion import (Deformation, MotionOptions, _deform, alignment_shape, correct_movie,
                                       deformation_field, dose_weights, sum_frames)
from vitrify.preprocess.timing import StageTimer


def _image(h, w, seed=0, smooth=30.0):
    g = torch.Generator().manual_seed(seed)
    k2 = torch.fft.fftfreq(h).view(-1, 1) ** 2 + torch.fft.rfftfreq(w).view(1, -1) ** 2
    return torch.fft.irfft2(torch.fft.rfft2(torch.randn(h, w, generator=g)) * torch.exp(-smooth * k2), s=(h, w))


def test_phase_ramps_move_an_image_by_whole_pixels_exactly():
    image = _image(48, 64)
    moved = torch.fft.irfft2(shift_spectra(torch.fft.rfft2(image), torch.tensor([5.0, -3.0]), (48, 64)), s=(48, 64))
    assert torch.allclose(moved, torch.roll(image, shifts=(-3, 5), dims=(0, 1)), atol=1e-4)
    ey, ex = phase_ramps((48, 64), torch.tensor([[1e5 + 0.25, 0.0]]))  # large shifts keep their phase
    assert float(ex[0, 0, 1].angle()) == pytest.approx(-2 * np.pi * ((1e5 + 0.25) / 64 % 1 - 1), abs=1e-4)


@pytest.mark.parametrize("shift", [(0.3, -0.4), (-0.45, 0.2), (0.0, 0.0)])
def test_local_peaks_match_the_full_correlation_map(shift):
    image = _image(64, 96, seed=1)
    spectrum = torch.fft.rfft2(image)
    moved = shift_spectra(spectrum, torch.tensor(shift), (64, 96))
    local = local_peaks(spectrum, moved, (64, 96))
    full = correlation_peaks(spectrum, moved, (64, 96), 8)
    assert torch.allclose(local, full, atol=1e-4)
    assert torch.allclose(local, torch.tensor(shift), atol=0.1)


def test_group_sums_with_clamped_windows_match_explicit_sums():
    spectra = torch.randn(2, 7, 3, 4, dtype=torch.complex64, generator=torch.Generator().manual_seed(2))
    for group in (2, 3, 4, 7):
        out = group_sums(spectra, group)
        for f in range(7):
            start = min(max(f - (group - 1) // 2, 0), 7 - group)
            assert torch.allclose(out[:, f], spectra[:, start:start + group].sum(1), atol=1e-5)


def test_alignment_shape_is_even_fft_friendly_and_cropped_to_the_resolution():
    opts = MotionOptions(align_resolution_angst=8.0)
    assert alignment_shape((1024, 1024), 1.5, opts) == (384, 384)
    h, w = alignment_shape((4092, 5760), 0.83, opts)
    assert h % 2 == w % 2 == 0 and good_size(h) == h and good_size(w) == w
    assert 4092 * 0.2075 <= h < 4092 * 0.25 and 5760 * 0.2075 <= w < 5760 * 0.25
    assert alignment_shape((96, 96), 1.0, opts) == (64, 64)   # never below 64 px
    assert alignment_shape((96, 96), 4.0, opts) == (96, 96)   # never above the frames


def test_low_rank_dose_weights_match_the_explicit_ones():
    numbers = torch.tensor([0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12])  # one frame dropped
    weights = dose_weights(12, (96, 80), 1.1, 3.0, pre_exposure=1.0, frame_numbers=numbers)
    exact = DoseBasis.exact(weights)
    basis = dose_basis(frame_exposures(12, 3.0, 1.0, numbers), (96, 80), 1.1)
    assert basis.coeffs.shape[0] < 12
    approx = torch.einsum("jf,jyx->fyx", basis.coeffs, basis.maps)
    direct = torch.einsum("jf,jyx->fyx", exact.coeffs, exact.maps)
    assert float((approx - direct).abs().max()) < 2e-3


def test_sums_with_low_rank_weights_match_the_frame_by_frame_sums():
    frames = torch.poisson(torch.full((8, 64, 64), 4.0) + 2 * _image(64, 64, seed=3).clamp(-1, 1),
                           generator=torch.Generator().manual_seed(4))
    shifts = torch.randn(8, 2, generator=torch.Generator().manual_seed(5))
    weights = dose_weights(8, (64, 64), 1.0, 4.0)
    plain, weighted = sum_frames(frames, shifts, None, weights)
    basis = dose_basis(frame_exposures(8, 4.0), (64, 64), 1.0)
    plain2, weighted2 = sum_frames(frames, shifts, None, basis, torch.fft.rfft2(frames))
    # frame by frame, as the definition reads
    spectra = shift_spectra(torch.fft.rfft2(frames), shifts, (64, 64))
    norm = torch.sqrt(8 / (weights ** 2).sum(0))
    direct = torch.fft.irfft2((spectra * weights).sum(0) * norm, s=(64, 64))
    assert torch.allclose(plain, torch.fft.irfft2(spectra.sum(0), s=(64, 64)), atol=1e-3)
    assert torch.allclose(weighted, direct, atol=1e-3) and torch.allclose(plain2, plain, atol=1e-3)
    assert float((weighted2 - direct).abs().max()) < 2e-3 * float(direct.abs().max())


def test_resampled_sum_moves_frames_by_global_plus_local_shift():
    h, w, n = 64, 80, 5
    coeffs = np.zeros((2, 24))
    coeffs[0, 1], coeffs[1, 13] = 0.8, -0.6          # x: linear in t; y: x·t
    model = Deformation(coeffs, (h, w), n)
    frames = _image(h, w, seed=6, smooth=80.0).expand(n, h, w).contiguous() + torch.arange(n).view(-1, 1, 1)
    shifts = torch.tensor([[0.5, -1.25], [2.0, 0.3], [-1.0, 1.0], [0.0, 0.0], [3.25, -2.5]])
    plain, _ = sum_frames(frames, shifts, model, None)
    expected = torch.zeros(h, w)
    for f in range(n):
        field = deformation_field(model, f) + shifts[f]
        expected += _deform(frames[f], field)
    inner = (slice(6, -6), slice(6, -6))
    assert torch.allclose(plain[inner], expected[inner], atol=1e-3)
    grid = sampling_grids(model, shifts, 1, 3)
    assert grid.shape == (2, h, w, 2)


def test_correct_movie_records_its_stages_and_finds_the_drift():
    drift = torch.stack([torch.linspace(0, 4, 8), torch.linspace(0, -2, 8)], dim=1)
    specimen = _image(128, 128, seed=7, smooth=20.0)
    frames = torch.stack([torch.fft.irfft2(shift_spectra(torch.fft.rfft2(specimen), d, (128, 128)), s=(128, 128))
                          for d in drift])
    frames = torch.poisson((20 * (1 + 0.5 * frames / frames.std())).clamp(min=0),
                           generator=torch.Generator().manual_seed(8))
    timer = StageTimer()
    result = correct_movie(frames, 1.0, MotionOptions(patches_x=1, patches_y=1), dose_per_frame=2.0, timer=timer)
    stages = [name for name, _, _ in timer.rows()]
    assert stages[:3] == ["defects", "FFT frames", "global alignment"] and "sums + dose weighting" in stages
    assert all(cpu >= 0 and wall >= 0 for _, cpu, wall in timer.rows())
    truth = -(drift - drift[0]).numpy()
    assert np.sqrt(((result.global_shifts_px - truth) ** 2).sum(1).mean()) < 0.15

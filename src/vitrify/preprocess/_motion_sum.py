"""Aligned sums of movie frames, plain and dose-weighted, in one pass over the frames.

Dose weights ``w_f(k) = exp(-N_f / 2N_c(|k|))`` (Grant & Grigorieff 2015) are smooth in the
frame index, so the ``(frames × radii)`` matrix of them has a tiny numerical rank: with its
SVD, ``w_f(k) ≈ Σ_j c[j, f] m_j(k)`` to 1e-4 with ``j`` ≈ 6 terms whatever the number of
frames. The dose-weighted sum ``Σ_f w_f F_f`` is then ``Σ_j m_j · FT(Σ_f c[j, f] x_f)``:
the frames are combined with ``1 + j`` coefficients each (one matrix product per chunk of
frames, in real or Fourier space), and the weights touch ``j`` images once at the end, not
every frame. The plain sum is the row of ones.

* Global shifts only: frames are moved exactly in Fourier space (separable phase ramps) and
  accumulated there; two inverse FFTs at the end.
* With a deformation model: every frame is resampled once (bicubic) by its global shift plus
  the local field, in real space; ``j`` forward and one inverse FFT at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from vitrify.preprocess._frames import frequencies, shift_spectra

#: frames moved together: each chunk reads and writes the 1 + j running sums once, so larger
#: chunks save memory traffic; at most this many bytes of frames (or spectra) per chunk, 4-16 frames
_CHUNK_BYTES = 512 << 20


def _chunk(n_frames: int, frame_bytes: int) -> int:
    return max(1, min(n_frames, 16, max(4, _CHUNK_BYTES // max(frame_bytes, 1))))
#: largest error of the low-rank dose weights (weights are ≤ 1)
_RANK_TOLERANCE = 1e-4
_RADIAL_SAMPLES = 4096


def critical_exposure(s_per_angst: torch.Tensor, voltage_kv: float) -> torch.Tensor:
    """Grant & Grigorieff (2015) critical exposure (e/Å²) at frequency s; ×0.8 at 200 kV."""
    scale = 0.8 if voltage_kv < 250 else 1.0
    return scale * (0.245 * s_per_angst.clamp(min=1e-6) ** -1.665 + 2.81)


def frame_exposures(n_frames: int, dose_per_frame: float, pre_exposure: float = 0.0,
                    frame_numbers: torch.Tensor | None = None) -> torch.Tensor:
    """``(f,)`` float64 exposure (e/Å²) at the middle of each frame; ``frame_numbers`` 0-based."""
    numbers = torch.arange(n_frames) if frame_numbers is None else frame_numbers.cpu()
    return pre_exposure + dose_per_frame * (numbers.to(torch.float64) + 0.5)


def dose_weights(n_frames: int, shape: tuple[int, int], pixel_size_angst: float,
                 dose_per_frame: float, pre_exposure: float = 0.0, voltage_kv: float = 300.0,
                 device=None, frame_numbers: torch.Tensor | None = None) -> torch.Tensor:
    """``(f, h, w//2+1)`` weights ``exp(-N_f / 2N_c(s))`` with N_f the exposure at mid-frame.

    ``frame_numbers`` ``(f,)`` (0-based position of each frame in the exposure) defaults to
    ``0..f-1``; pass it when frames were dropped.
    """
    ky = torch.fft.fftfreq(shape[0], d=pixel_size_angst, device=device).view(-1, 1)
    kx = torch.fft.rfftfreq(shape[1], d=pixel_size_angst, device=device).view(1, -1)
    critical = critical_exposure(torch.sqrt(kx * kx + ky * ky), voltage_kv)
    exposure = frame_exposures(n_frames, dose_per_frame, pre_exposure, frame_numbers)
    return torch.exp(-exposure.to(device, torch.float32).view(-1, 1, 1) / (2 * critical))


@dataclass(frozen=True)
class DoseBasis:
    """Normalised dose weights ``w_f(k) · norm(k) = Σ_j coeffs[j, f] · maps[j, k]``.

    ``coeffs`` ``(j, f)``, ``maps`` ``(j, h, w//2+1)`` float32; ``norm = sqrt(f / Σ_f w_f²)``
    makes the weighted sum equal the plain one at low frequency.
    """

    coeffs: torch.Tensor
    maps: torch.Tensor

    @staticmethod
    def exact(weights: torch.Tensor) -> DoseBasis:
        """The full-rank basis of explicit ``(f, h, w//2+1)`` weights."""
        n_frames = weights.shape[0]
        norm = torch.sqrt(n_frames / (weights ** 2).sum(0).clamp(min=1e-12))
        return DoseBasis(torch.eye(n_frames, device=weights.device), weights * norm)


def dose_basis(exposures: torch.Tensor, shape: tuple[int, int], pixel_size_angst: float,
               voltage_kv: float = 300.0, device=None) -> DoseBasis:
    """Low-rank :class:`DoseBasis` of the weights at ``exposures`` ``(f,)`` e/Å² for rfft2 of ``shape``.

    Cached: every movie of a dataset shares it.
    """
    key = tuple(float(e) for e in exposures.cpu())
    device = str(torch.device(device or "cpu"))
    return _dose_basis(key, tuple(shape), float(pixel_size_angst), float(voltage_kv), device)


@lru_cache(maxsize=4)
def _dose_basis(exposures: tuple[float, ...], shape: tuple[int, int], pixel_size_angst: float,
                voltage_kv: float, device: str) -> DoseBasis:
    s_max = float(np.hypot(0.5, 0.5)) / pixel_size_angst
    s = torch.linspace(0.0, s_max, _RADIAL_SAMPLES, dtype=torch.float64)
    exposure = torch.tensor(exposures, dtype=torch.float64).view(-1, 1)
    weights = torch.exp(-exposure / (2 * critical_exposure(s, voltage_kv)))
    u, sigma, vh = torch.linalg.svd(weights, full_matrices=False)
    rank = len(sigma)
    for j in range(1, len(sigma) + 1):
        if float(((u[:, :j] * sigma[:j]) @ vh[:j] - weights).abs().max()) <= _RANK_TOLERANCE:
            rank = j
            break
    norm = torch.sqrt(len(exposures) / (weights ** 2).sum(0))
    radial = (sigma[:rank, None] * vh[:rank]) * norm                      # (j, samples)
    ky, kx = frequencies(shape, device)
    position = torch.sqrt(kx * kx + ky * ky) / pixel_size_angst / s_max * (_RADIAL_SAMPLES - 1)
    low = position.floor().clamp(max=_RADIAL_SAMPLES - 2)
    frac = (position - low).to(torch.float32)
    low = low.long()
    table = radial.to(device, torch.float32)
    maps = table[:, low] * (1 - frac) + table[:, low + 1] * frac
    return DoseBasis(u[:, :rank].T.contiguous().to(device, torch.float32), maps)


def _coefficients(n_frames: int, dose: DoseBasis | None, device) -> torch.Tensor:
    """``(1 + j, f)``: a row of ones (plain sum) over the dose coefficients."""
    ones = torch.ones(1, n_frames, device=device)
    return ones if dose is None else torch.cat([ones, dose.coeffs.to(device)])


def sum_spectra(spectra_of, n_frames: int, shape: tuple[int, int], shifts_px: torch.Tensor,
                dose: DoseBasis | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Plain and dose-weighted sums of frames moved exactly (Fourier) by ``shifts_px`` ``(f, 2)``.

    ``spectra_of(start, stop)`` returns the rfft2 ``(stop - start, h, w//2+1)`` of those frames.
    Returns ``(h, w)`` images (the weighted one None without ``dose``).
    """
    coeffs = _coefficients(n_frames, dose, shifts_px.device)
    h, w2 = shape[0], shape[1] // 2 + 1
    acc = torch.zeros(len(coeffs), h * w2 * 2, device=shifts_px.device)
    chunk = _chunk(n_frames, h * w2 * 8)
    for start in range(0, n_frames, chunk):
        stop = min(start + chunk, n_frames)
        moved = shift_spectra(spectra_of(start, stop), shifts_px[start:stop], shape)
        acc.addmm_(coeffs[:, start:stop], torch.view_as_real(moved).reshape(stop - start, -1))
    acc = torch.view_as_complex(acc.view(len(coeffs), h, w2, 2))
    plain = torch.fft.irfft2(acc[0], s=shape)
    if dose is None:
        return plain, None
    weighted = acc[1] * dose.maps[0]
    for j in range(1, len(dose.maps)):
        weighted.addcmul_(acc[1 + j], dose.maps[j])
    return plain, torch.fft.irfft2(weighted, s=shape)


def sum_resampled(frames: torch.Tensor, grids_of, dose: DoseBasis | None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Plain and dose-weighted sums of ``frames`` ``(f, h, w)`` resampled (bicubic) on grids.

    ``grids_of(start, stop)`` returns ``(stop - start, h, w, 2)`` sampling grids (x, y in
    ``grid_sample``'s [-1, 1] convention, ``align_corners=False``).
    """
    n_frames, h, w = frames.shape
    coeffs = _coefficients(n_frames, dose, frames.device)
    acc = torch.zeros(len(coeffs), h * w, device=frames.device)
    chunk = _chunk(n_frames, h * w * 4 * 4)  # the frames, their grids and the resampled frames
    for start in range(0, n_frames, chunk):
        stop = min(start + chunk, n_frames)
        moved = torch.nn.functional.grid_sample(frames[start:stop, None].float(), grids_of(start, stop),
                                                mode="bicubic", padding_mode="border", align_corners=False)
        acc.addmm_(coeffs[:, start:stop], moved.reshape(stop - start, -1))
    acc = acc.view(len(coeffs), h, w)
    if dose is None:
        return acc[0], None
    weighted = torch.fft.rfft2(acc[1]) * dose.maps[0]
    for j in range(1, len(dose.maps)):
        weighted.addcmul_(torch.fft.rfft2(acc[1 + j]), dose.maps[j])
    return acc[0], torch.fft.irfft2(weighted, s=(h, w))

"""Frame-stack helpers for motion correction: rectangular phase shifts, cross-correlation peaks."""

from __future__ import annotations

import math

import torch


def frequencies(shape: tuple[int, int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, 1)`` and ``(1, w//2+1)`` frequencies (cycles/pixel) of an rfft2 of ``shape``."""
    ky = torch.fft.fftfreq(shape[0], device=device).view(-1, 1)
    kx = torch.fft.rfftfreq(shape[1], device=device).view(1, -1)
    return ky, kx


def shift_spectra(spectra: torch.Tensor, shifts_px: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Move images by ``+shifts`` via their rfft2 (plain ``rfft2``, any rectangle).

    Parameters
    ----------
    spectra
        ``(..., h, w//2+1)`` complex.
    shifts_px
        ``(..., 2)`` as ``(x, y)`` pixels, broadcast against the leading dims.
    """
    ky, kx = frequencies(shape, spectra.device)
    sx = shifts_px[..., 0, None, None].to(ky.dtype)
    sy = shifts_px[..., 1, None, None].to(ky.dtype)
    phase = (-2 * math.pi) * (kx * sx + ky * sy)
    return spectra * torch.polar(torch.ones_like(phase), phase)


def bfactor_filter(shape: tuple[int, int], pixel_size_angst: float, bfactor_angst2: float,
                   device=None) -> torch.Tensor:
    """``(h, w//2+1)`` ``exp(-B s²/4)`` with s in Å⁻¹, zero at DC (no mean in the correlation)."""
    ky, kx = frequencies(shape, device)
    s2 = (kx * kx + ky * ky) / pixel_size_angst ** 2
    weights = torch.exp(-bfactor_angst2 * s2 / 4)
    weights[0, 0] = 0.0
    return weights


def correlation_peaks(frames_ft: torch.Tensor, refs_ft: torch.Tensor, shape: tuple[int, int],
                      max_shift_px: float) -> torch.Tensor:
    """Shifts that align each frame to its reference, with parabolic sub-pixel peaks.

    Parameters
    ----------
    frames_ft, refs_ft
        ``(..., h, w//2+1)`` filtered spectra.
    max_shift_px
        Search radius (pixels).

    Returns
    -------
    torch.Tensor
        ``(..., 2)`` shifts ``(x, y)``: moving the frame by them matches the reference.
    """
    h, w = shape
    cc = torch.fft.irfft2(torch.conj(frames_ft) * refs_ft, s=shape)
    cc = torch.fft.fftshift(cc, dim=(-2, -1))  # zero shift at (h//2, w//2)
    ys = torch.arange(h, device=cc.device).view(-1, 1) - h // 2
    xs = torch.arange(w, device=cc.device).view(1, -1) - w // 2
    outside = (xs * xs + ys * ys) > max_shift_px ** 2
    flat = cc.masked_fill(outside, -torch.inf).flatten(-2)
    best = flat.argmax(dim=-1)
    row, col = best // w, best % w

    def value(dr: int, dc: int) -> torch.Tensor:
        r = (row + dr).clamp(0, h - 1)
        c = (col + dc).clamp(0, w - 1)
        return cc.flatten(-2).gather(-1, (r * w + c).unsqueeze(-1)).squeeze(-1)

    centre = value(0, 0)
    dx = _parabola(value(0, -1), centre, value(0, 1))
    dy = _parabola(value(-1, 0), centre, value(1, 0))
    return torch.stack([col - w // 2 + dx, row - h // 2 + dy], dim=-1).to(frames_ft.real.dtype)


def _parabola(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    denominator = left - 2 * centre + right
    offset = 0.5 * (left - right) / torch.where(denominator.abs() < 1e-30,
                                                 torch.full_like(denominator, -1e-30), denominator)
    return offset.clamp(-0.5, 0.5)


def group_sums(spectra: torch.Tensor, group: int) -> torch.Tensor:
    """Sum each frame with its ``group - 1`` nearest neighbours (centred window) over dim -3.

    ``(..., f, h, w2)`` → same shape; ``group <= 1`` returns the input.
    """
    if group <= 1:
        return spectra
    n_frames = spectra.shape[-3]
    cumulative = torch.cat([torch.zeros_like(spectra[..., :1, :, :]), spectra.cumsum(dim=-3)], dim=-3)
    idx = torch.arange(n_frames, device=spectra.device)
    lo = (idx - (group - 1) // 2).clamp(0, n_frames)
    hi = (lo + group).clamp(max=n_frames)
    lo = (hi - group).clamp(min=0)
    return cumulative[..., hi, :, :] - cumulative[..., lo, :, :]


def fourier_crop_rect(spectrum: torch.Tensor, shape_in: tuple[int, int],
                      shape_out: tuple[int, int]) -> torch.Tensor:
    """Crop an rfft2 ``(..., h, w//2+1)`` to ``(..., h', w'//2+1)`` (values not rescaled)."""
    h, _ = shape_in
    ho, wo = shape_out
    rows = torch.cat([torch.arange(0, (ho + 1) // 2), torch.arange(h - ho // 2, h)]).to(spectrum.device)
    return spectrum[..., rows, : wo // 2 + 1]

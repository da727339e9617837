"""Frame-stack helpers for motion correction: rectangular phase shifts, cross-correlation peaks."""

from __future__ import annotations

import math

import torch


def frequencies(shape: tuple[int, int], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, 1)`` and ``(1, w//2+1)`` frequencies (cycles/pixel) of an rfft2 of ``shape``."""
    ky = torch.fft.fftfreq(shape[0], device=device).view(-1, 1)
    kx = torch.fft.rfftfreq(shape[1], device=device).view(1, -1)
    return ky, kx


def phase_ramps(shape: tuple[int, int], shifts_px: torch.Tensor, device=None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable factors of the phase ramp that moves images by ``+shifts``.

    ``shifts_px`` ``(..., 2)`` (x, y) → ``ey`` ``(..., h, 1)`` and ``ex`` ``(..., 1, w//2+1)``
    complex, with ``ey * ex`` the ramp of an rfft2 of ``shape``. Built from 1D vectors (a
    shift costs one complex multiply per coefficient per factor, no full-size ``exp``); the
    phase is reduced to one turn before the float32 ``exp`` so large shifts stay exact.
    """
    ky, kx = frequencies(shape, device if device is not None else shifts_px.device)
    shifts = shifts_px.to(ky.device, torch.float64)
    turns_x = torch.remainder(kx.double() * shifts[..., 0, None, None], 1.0)
    turns_y = torch.remainder(ky.double() * shifts[..., 1, None, None], 1.0)
    ex = torch.polar(torch.ones_like(turns_x), (-2 * math.pi) * turns_x).to(torch.complex64)
    ey = torch.polar(torch.ones_like(turns_y), (-2 * math.pi) * turns_y).to(torch.complex64)
    return ey, ex


def shift_spectra(spectra: torch.Tensor, shifts_px: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Move images by ``+shifts`` via their rfft2 (plain ``rfft2``, any rectangle).

    Parameters
    ----------
    spectra
        ``(..., h, w//2+1)`` complex64.
    shifts_px
        ``(..., 2)`` as ``(x, y)`` pixels, broadcast against the leading dims.
    """
    ey, ex = phase_ramps(shape, shifts_px, spectra.device)
    return (spectra * ey).mul_(ex)


def good_size(n: int) -> int:
    """The smallest even ``m >= n`` whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = max(2, n + (n % 2))
    while True:
        rest = m
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 2


def bfactor_filter(shape: tuple[int, int], sample_movie_px: float, bfactor_px2: float,
                   device=None) -> torch.Tensor:
    """``(h, w//2+1)`` alignment weights ``exp(-B s²)``, zero at DC (no mean in the correlation).

    ``bfactor_px2`` is in pixel² of the movie and ``s`` in cycles per movie pixel, as RELION's own
    motion correction applies its ``--bfactor`` (job.star ``bfactor``) to each of the two spectra
    it correlates: ``exp(-B s²)`` is ``exp(-B' s'²/4)`` with ``B' = 4 p² B`` Å² and ``s'`` in Å⁻¹ at
    ``p`` Å/px. ``sample_movie_px``: movie pixels per pixel of ``shape`` (> 1 on cropped spectra).

    >>> w = bfactor_filter((8, 8), 2.0, 100.0)
    >>> round(float(w[0, 1]), 4) == round(math.exp(-100.0 * (0.125 / 2.0) ** 2), 4)
    True
    """
    ky, kx = frequencies(shape, device)
    s2 = (kx * kx + ky * ky) / sample_movie_px ** 2
    weights = torch.exp(-bfactor_px2 * s2)
    weights[0, 0] = 0.0
    return weights


def correlation_peaks(frames_ft: torch.Tensor, refs_ft: torch.Tensor, shape: tuple[int, int],
                      max_shift_px: float) -> torch.Tensor:
    """Shifts that align each frame to its reference, with parabolic sub-pixel peaks.

    Only the ``(2r+3)²`` correlation values around zero shift are searched (r = max shift).

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
    r = int(min(max_shift_px, h // 2 - 2, w // 2 - 2))
    offsets = torch.arange(-r - 1, r + 2, device=cc.device)
    window = cc[..., (offsets % h)[:, None], (offsets % w)[None, :]]  # (..., 2r+3, 2r+3), zero at r+1
    inner = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= r * r
    n = 2 * r + 3
    best = window.masked_fill(~inner, -torch.inf).flatten(-2).argmax(dim=-1)
    row, col = best // n, best % n
    flat = window.flatten(-2)

    def value(dr: int, dc: int) -> torch.Tensor:
        return flat.gather(-1, ((row + dr) * n + col + dc).unsqueeze(-1)).squeeze(-1)

    centre = value(0, 0)
    dx = _parabola(value(0, -1), centre, value(0, 1))
    dy = _parabola(value(-1, 0), centre, value(1, 0))
    return torch.stack([col - (r + 1) + dx, row - (r + 1) + dy], dim=-1).to(frames_ft.real.dtype)


def local_peaks(frames_ft: torch.Tensor, refs_ft: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Like :func:`correlation_peaks` for shifts known to be under a pixel: the correlation is
    evaluated only at the 3 × 3 integer shifts around zero, by two small DFT matrix products
    (about a tenth of an inverse FFT), then the parabolic peak.

    ``frames_ft``, ``refs_ft`` ``(..., h, w//2+1)`` → ``(..., 2)`` shifts ``(x, y)`` (≤ 1.5 px).
    """
    h, w = shape
    product = torch.conj(frames_ft) * refs_ft
    offsets = torch.tensor([-1.0, 0.0, 1.0], device=product.device, dtype=torch.float64)
    ky, kx = frequencies(shape, product.device)
    rows = torch.polar(torch.ones(3, h, dtype=torch.float64, device=product.device),
                       2 * torch.pi * offsets[:, None] * ky.view(1, -1).double()).to(product.dtype)
    # rfft columns stand for themselves and their conjugates, except 0 and the Nyquist column
    multiplicity = torch.full((w // 2 + 1,), 2.0, dtype=torch.float64, device=product.device)
    multiplicity[0] = 1.0
    if w % 2 == 0:
        multiplicity[-1] = 1.0
    cols = torch.polar(multiplicity[:, None].expand(-1, 3).contiguous(),
                       2 * torch.pi * kx.view(-1, 1).double() * offsets[None, :]).to(product.dtype)
    # contract the contiguous column axis first: one plain matrix product over all batches
    lead = product.shape[:-2]
    half = (product.reshape(-1, w // 2 + 1) @ cols).view(*lead, h, 3)                 # (..., h, 3)
    values = (rows @ half).real                                                       # (..., 3 (dy), 3 (dx))
    flat = values.flatten(-2)
    best = flat.argmax(dim=-1)
    row, col = best // 3, best % 3
    centre = flat.gather(-1, best.unsqueeze(-1)).squeeze(-1)

    def value(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return flat.gather(-1, (r.clamp(0, 2) * 3 + c.clamp(0, 2)).unsqueeze(-1)).squeeze(-1)

    inner_x = (col == 1)
    inner_y = (row == 1)
    dx = torch.where(inner_x, _parabola(value(row, col - 1), centre, value(row, col + 1)), torch.zeros_like(centre))
    dy = torch.where(inner_y, _parabola(value(row - 1, col), centre, value(row + 1, col)), torch.zeros_like(centre))
    return torch.stack([col - 1 + dx, row - 1 + dy], dim=-1).to(frames_ft.real.dtype)


def _parabola(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    denominator = left - 2 * centre + right
    offset = 0.5 * (left - right) / torch.where(denominator.abs() < 1e-30,
                                                 torch.full_like(denominator, -1e-30), denominator)
    return offset.clamp(-0.5, 0.5)


def group_sums(spectra: torch.Tensor, group: int) -> torch.Tensor:
    """Sum each frame with its ``group - 1`` nearest neighbours (centred window) over dim -3.

    ``(..., f, h, w2)`` → same shape; ``group <= 1`` returns the input. Windows are clamped
    to the stack (the first and last frames' windows are shifted inwards).
    """
    if group <= 1:
        return spectra
    n_frames = spectra.shape[-3]
    if group >= n_frames:
        return spectra.sum(dim=-3, keepdim=True).expand_as(spectra).clone()
    half = (group - 1) // 2
    starts = [min(max(f - half, 0), n_frames - group) for f in range(n_frames)]
    out = torch.empty_like(spectra)
    first, last = half, n_frames - group + half          # frames whose window is f - half ...
    for f in [*range(first), *range(last + 1, n_frames)]:  # the clamped windows at both ends
        out[..., f, :, :] = spectra[..., starts[f]:starts[f] + group, :, :].sum(dim=-3)
    inner = out[..., first:last + 1, :, :]
    inner.copy_(spectra[..., 0:last + 1 - half, :, :])
    for j in range(1, group):
        inner.add_(spectra[..., j:j + last + 1 - half, :, :])
    return out


def fourier_crop_rect(spectrum: torch.Tensor, shape_in: tuple[int, int],
                      shape_out: tuple[int, int]) -> torch.Tensor:
    """Crop an rfft2 ``(..., h, w//2+1)`` to ``(..., h', w'//2+1)`` (values not rescaled)."""
    h, _ = shape_in
    ho, wo = shape_out
    rows = torch.cat([torch.arange(0, (ho + 1) // 2), torch.arange(h - ho // 2, h)]).to(spectrum.device)
    return spectrum[..., rows, : wo // 2 + 1]

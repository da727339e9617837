"""Translations as Fourier phase ramps, and RELION's origin sign.

``phase_shift_2d(f, s)`` moves image content by ``+s`` pixels: ``out(r) = in(r - s)``, i.e.
``F_out(k) = F_in(k) · exp(-2πi k·s / n)`` with ``s = (x, y)``.

RELION origins (formats.md §8): ``rlnOriginXAngst/YAngst`` are in Å (pixels = value / pixel size).
The particle centre lies at ``box centre - origin``, and refinement translates the image **by
+origin** to align it with the reference. Hence:

* to centre (align) a particle: ``phase_shift_2d(image_ft, +origin_px)``;
* to simulate a particle with a given origin from a centred projection:
  ``phase_shift_2d(projection_ft, -origin_px)``.

:func:`origin_angst_to_shift_px` does the first conversion.
"""

from __future__ import annotations

import math

import torch

from vitrify.core.fourier import frequency_grid_2d, frequency_grid_3d

__all__ = [
    "phase_shift_2d",
    "phase_shift_3d",
    "phase_ramp_2d",
    "shift_2d",
    "origin_angst_to_shift_px",
]


def phase_ramp_2d(shifts_px: torch.Tensor, n: int, *, rfft: bool = True) -> torch.Tensor:
    """Phase factors ``exp(-2πi k·s/n)`` for shifts.

    Parameters
    ----------
    shifts_px
        ``(..., 2)`` shifts as ``(x, y)`` in pixels.
    n
        Box size.
    rfft
        Half-plane ``(n, n//2+1)`` or full ``(n, n)`` layout.

    Returns
    -------
    torch.Tensor
        ``(..., n, n//2+1)`` complex.
    """
    real_dtype = shifts_px.dtype if shifts_px.is_floating_point() else torch.float32
    ky, kx = frequency_grid_2d(n, rfft=rfft, device=shifts_px.device, dtype=real_dtype)
    sx = shifts_px[..., 0, None, None].to(real_dtype)
    sy = shifts_px[..., 1, None, None].to(real_dtype)
    phase = (-2 * math.pi / n) * (kx * sx + ky * sy)
    return torch.polar(torch.ones_like(phase), phase)


def phase_shift_2d(images_ft: torch.Tensor, shifts_px: torch.Tensor) -> torch.Tensor:
    """Shift images in Fourier space by ``+shifts_px``.

    Parameters
    ----------
    images_ft
        ``(..., n, n//2+1)`` complex (layout of ``rfft2_centered``), or ``(..., n, n)`` full plane.
    shifts_px
        ``(..., 2)`` as ``(x, y)`` pixels; broadcast against the leading dims of ``images_ft``.

    Returns
    -------
    torch.Tensor
        Same layout as ``images_ft`` (broadcast leading dims).
    """
    n = images_ft.shape[-2]
    rfft = images_ft.shape[-1] != n or n == 1
    return images_ft * phase_ramp_2d(shifts_px, n, rfft=rfft).to(images_ft.dtype)


def phase_shift_3d(volumes_ft: torch.Tensor, shifts_px: torch.Tensor) -> torch.Tensor:
    """Shift volumes ``(..., n, n, n//2+1)`` by ``shifts_px`` ``(..., 3)`` as ``(x, y, z)`` pixels."""
    n = volumes_ft.shape[-3]
    real_dtype = shifts_px.dtype if shifts_px.is_floating_point() else torch.float32
    kz, ky, kx = frequency_grid_3d(n, device=shifts_px.device, dtype=real_dtype)
    s = shifts_px[..., None, None, None, :].to(real_dtype)
    phase = (-2 * math.pi / n) * (kx * s[..., 0] + ky * s[..., 1] + kz * s[..., 2])
    return volumes_ft * torch.polar(torch.ones_like(phase), phase).to(volumes_ft.dtype)


def shift_2d(images: torch.Tensor, shifts_px: torch.Tensor) -> torch.Tensor:
    """Real-space convenience: ``(..., n, n)`` images moved by ``shifts_px`` ``(..., 2)`` (x, y)."""
    from vitrify.core.fourier import irfft2_centered, rfft2_centered

    n = images.shape[-1]
    return irfft2_centered(phase_shift_2d(rfft2_centered(images), shifts_px), n)


def origin_angst_to_shift_px(origin_x_angst, origin_y_angst, pixel_size_angst) -> torch.Tensor:
    """Shift (x, y) in pixels that *centres* a particle with RELION origins (Å): ``+origin / pixel``.

    Inputs are floats or ``(...)`` tensors; returns ``(..., 2)`` float32 (or the input dtype).
    """
    ox = torch.as_tensor(origin_x_angst)
    oy = torch.as_tensor(origin_y_angst, device=ox.device)
    ox, oy = torch.broadcast_tensors(ox, oy)
    out = torch.stack([ox, oy], dim=-1) / pixel_size_angst
    return out if out.is_floating_point() and out.dtype != torch.float64 else out.float()

"""Fourier filters: low-pass / high-pass with a raised-cosine edge, B-factors, shell weighting.

Cut-offs are given either in pixels of frequency (``*_shell``, ``k = n · pixel / resolution``) or
in Å (``*_angst``). The edge is ``width_shells`` wide and centred on the cut-off, like RELION's
``lowPassFilterMap`` (cosine from ``cutoff - width/2`` to ``cutoff + width/2``).
"""

from __future__ import annotations

import math

import torch

from vitrify.core.fourier import (irfft2_centered, irfft3_centered, radius_grid_2d, radius_grid_3d,
                                  rfft2_centered, rfft3_centered)
from vitrify.errors import InputError

__all__ = ["lowpass_profile", "lowpass_fourier", "lowpass_filter", "highpass_filter",
           "apply_bfactor", "resolution_to_shell"]

_RADIUS = {2: radius_grid_2d, 3: radius_grid_3d}
_FFT = {2: (rfft2_centered, irfft2_centered), 3: (rfft3_centered, irfft3_centered)}


def resolution_to_shell(resolution_angst: float, box_px: int, pixel_size_angst: float) -> float:
    """Frequency radius in pixels of a resolution in Å."""
    if resolution_angst <= 0:
        raise InputError(f"resolution {resolution_angst} Å", field="resolution",
                         expected="a positive number of Å")
    return box_px * pixel_size_angst / resolution_angst


def lowpass_profile(radius: torch.Tensor, cutoff_shell: float, width_shells: float = 2.0) -> torch.Tensor:
    """1 below ``cutoff - width/2``, raised cosine to 0 at ``cutoff + width/2``."""
    if width_shells <= 0:
        return (radius <= cutoff_shell).to(radius.dtype)
    t = torch.clamp((radius - (cutoff_shell - width_shells / 2)) / width_shells, 0.0, 1.0)
    return 0.5 + 0.5 * torch.cos(math.pi * t)


def lowpass_fourier(f: torch.Tensor, n: int, cutoff_shell: float, width_shells: float = 2.0,
                    *, ndim: int = 2) -> torch.Tensor:
    """Low-pass half-layout transforms ``(..., n, n//2+1)`` (or 3D) in place of a copy."""
    r = _RADIUS[ndim](n, device=f.device, dtype=f.real.dtype)
    return f * lowpass_profile(r, cutoff_shell, width_shells)


def lowpass_filter(x: torch.Tensor, resolution_angst: float, pixel_size_angst: float, *,
                   ndim: int = 2, width_shells: float = 2.0) -> torch.Tensor:
    """Low-pass real images ``(..., n, n)`` / volumes ``(..., n, n, n)`` to ``resolution_angst``."""
    n = x.shape[-1]
    fwd, inv = _FFT[ndim]
    shell = resolution_to_shell(resolution_angst, n, pixel_size_angst)
    return inv(lowpass_fourier(fwd(x), n, shell, width_shells, ndim=ndim), n)


def highpass_filter(x: torch.Tensor, resolution_angst: float, pixel_size_angst: float, *,
                    ndim: int = 2, width_shells: float = 2.0) -> torch.Tensor:
    """Remove frequencies below ``1/resolution_angst`` (complement of :func:`lowpass_filter`)."""
    n = x.shape[-1]
    fwd, inv = _FFT[ndim]
    shell = resolution_to_shell(resolution_angst, n, pixel_size_angst)
    f = fwd(x)
    r = _RADIUS[ndim](n, device=x.device, dtype=f.real.dtype)
    return inv(f * (1 - lowpass_profile(r, shell, width_shells)), n)


def apply_bfactor(x: torch.Tensor, bfactor_angst2: float, pixel_size_angst: float, *,
                  ndim: int = 3) -> torch.Tensor:
    """Multiply the transform by ``exp(-B s² / 4)`` (``s`` in 1/Å; negative B sharpens)."""
    n = x.shape[-1]
    fwd, inv = _FFT[ndim]
    f = fwd(x)
    s = _RADIUS[ndim](n, device=x.device, dtype=f.real.dtype) / (n * pixel_size_angst)
    return inv(f * torch.exp(-bfactor_angst2 * s * s / 4), n)

"""Fourier shell/ring correlation and resolution from it.

``FSC(s) = Re Σ F1 F2* / sqrt(Σ |F1|² Σ |F2|²)`` over the voxels of shell ``s`` (``round(|k|) = s``,
:mod:`vitrify.core.fourier`), for shells ``0 .. n//2``. Sums run over the half-space layout with the
Hermitian multiplicity weights (the ``kx = 0`` plane counted once), i.e. exactly the full-space sums.
"""

from __future__ import annotations

import torch

from vitrify.core.fourier import rfft2_centered, rfft3_centered, shell_index_2d, shell_index_3d, \
    shell_sums

__all__ = ["fourier_shell_correlation", "fsc", "frc", "shell_resolution_angst",
           "resolution_at_threshold"]


def _multiplicity(shape_last: int, n: int, device, dtype) -> torch.Tensor:
    w = torch.full((shape_last,), 2.0, device=device, dtype=dtype)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return w


def fourier_shell_correlation(f1: torch.Tensor, f2: torch.Tensor, shells: torch.Tensor,
                              n_shells: int) -> torch.Tensor:
    """Correlation per shell of two half-layout transforms.

    Parameters
    ----------
    f1, f2
        ``(..., *grid)`` complex, rfft layout (grid ``(n, n//2+1)`` or ``(n, n, n//2+1)``).
    shells
        ``grid`` int64 shell indices.
    n_shells
        Number of shells returned.

    Returns
    -------
    torch.Tensor
        ``(..., n_shells)`` real; 0 where a shell has no power.
    """
    n = shells.shape[0]
    w = _multiplicity(shells.shape[-1], n, f1.device, f1.real.dtype)
    num = shell_sums((f1 * f2.conj()).real * w, shells, n_shells)
    p1 = shell_sums(f1.abs() ** 2 * w, shells, n_shells)
    p2 = shell_sums(f2.abs() ** 2 * w, shells, n_shells)
    den = torch.sqrt(p1 * p2)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.zeros_like(den))


def fsc(map1: torch.Tensor, map2: torch.Tensor) -> torch.Tensor:
    """FSC of real-space maps ``(..., n, n, n)`` -> ``(..., n//2+1)`` (shells 0 .. n//2)."""
    n = map1.shape[-1]
    shells = shell_index_3d(n, device=map1.device)
    return fourier_shell_correlation(rfft3_centered(map1), rfft3_centered(map2), shells, n // 2 + 1)


def frc(images1: torch.Tensor, images2: torch.Tensor) -> torch.Tensor:
    """FRC of real-space images ``(..., n, n)`` -> ``(..., n//2+1)``."""
    n = images1.shape[-1]
    shells = shell_index_2d(n, device=images1.device)
    return fourier_shell_correlation(rfft2_centered(images1), rfft2_centered(images2), shells,
                                     n // 2 + 1)


def shell_resolution_angst(box_px: int, pixel_size_angst: float, *, device=None,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Resolution (Å) of shells ``0 .. n//2``: ``n · pixel / s`` (``inf`` for shell 0)."""
    s = torch.arange(box_px // 2 + 1, device=device, dtype=dtype)
    return torch.where(s > 0, box_px * pixel_size_angst / torch.clamp(s, min=1), torch.full_like(s, float("inf")))


def resolution_at_threshold(curve: torch.Tensor, box_px: int, pixel_size_angst: float,
                            threshold: float = 0.143) -> float:
    """Resolution (Å) where a ``(n//2+1,)`` FSC curve first drops below ``threshold``.

    Linear interpolation between the last shell above and the first below, as RELION reports
    (shell 0 is skipped). Returns the Nyquist resolution ``2 · pixel`` if it never drops.
    """
    c = curve.detach().double().cpu()
    below = torch.nonzero(c[1:] < threshold).squeeze(-1)
    if below.numel() == 0:
        return 2.0 * pixel_size_angst
    i = int(below[0]) + 1
    if i == 1:
        return float(box_px * pixel_size_angst)
    a, b = float(c[i - 1]), float(c[i])
    frac = (a - threshold) / (a - b) if a != b else 0.0
    shell = (i - 1) + frac
    return float(box_px * pixel_size_angst / shell)

"""The engine's Fourier scaling: particle and reference transforms divided by ``n**2``.

RELION's forward transform divides by the number of pixels; the engine does the same so
that sigma2 and tau2 spectra come out on RELION's scale. A reference is kept as a
real-space image ``(K, n, n)``; for template sampling it is zero-padded to ``pad * n``
and transformed with the *same* ``1/n**2`` factor, so the padded grid at ``pad * k``
holds the value of the unpadded transform at ``k``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vitrify.core.fourier import irfft2_centered, rfft2_centered


def image_ft(images: torch.Tensor) -> torch.Tensor:
    """``(..., n, n)`` real centred images -> ``(..., n, n//2+1)`` complex, divided by ``n**2``."""
    n = images.shape[-1]
    return rfft2_centered(images) / float(n * n)


def padded_ft(images: torch.Tensor, pad: int) -> torch.Tensor:
    """``(K, n, n)`` real references -> ``(K, m, m//2+1)`` complex padded transforms, ``m = pad*n``."""
    n = images.shape[-1]
    m = pad * n
    lo = m // 2 - n // 2  # the centre pixel n//2 lands on m//2
    hi = m - n - lo
    padded = F.pad(images, (lo, hi, lo, hi))
    return rfft2_centered(padded) / float(n * n)


def images_from_padded(grids: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`padded_ft`: ``(K, m, m//2+1)`` -> centre crop ``(K, n, n)`` real."""
    m = grids.shape[-2]
    full = irfft2_centered(grids, m) * float(n * n)
    lo = m // 2 - n // 2
    return full[..., lo:lo + n, lo:lo + n].contiguous()

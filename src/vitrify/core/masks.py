"""Soft circular (2D) and spherical (3D) masks with a raised-cosine edge, as RELION uses.

The mask is 1 inside ``radius_px``, ``0.5 + 0.5 cos(π (r - radius) / width)`` for
``radius <= r <= radius + width``, and 0 beyond; ``r`` is the distance (pixels) from the box centre
``n // 2``. :func:`apply_soft_mask` fills the masked-out region with the mean of the edge/background
region (RELION's ``softMaskOutsideMap`` behaviour) or with zero.
"""

from __future__ import annotations

import math

import torch

from vitrify.errors import InputError

__all__ = ["distance_from_centre", "soft_circular_mask", "soft_spherical_mask", "apply_soft_mask",
           "raised_cosine", "mask_from_map"]


def distance_from_centre(n: int, ndim: int, *, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n,)*ndim`` distance in pixels from the centre index ``n // 2``."""
    c = torch.arange(n, device=device, dtype=dtype) - n // 2
    grids = torch.meshgrid(*([c] * ndim), indexing="ij")
    return torch.sqrt(sum(g * g for g in grids))


def raised_cosine(r: torch.Tensor, radius: float, width: float) -> torch.Tensor:
    """1 inside ``radius``, cosine fall-off over ``width``, 0 outside (``width <= 0``: hard edge)."""
    if width <= 0:
        return (r <= radius).to(r.dtype)
    t = torch.clamp((r - radius) / width, 0.0, 1.0)
    return 0.5 + 0.5 * torch.cos(math.pi * t)


def _check(radius_px: float, width_px: float) -> None:
    if radius_px <= 0 or width_px < 0:
        raise InputError(f"mask radius {radius_px} / edge width {width_px} px", field="mask",
                         expected="radius > 0 and width >= 0")


def soft_circular_mask(n: int, radius_px: float, width_px: float = 5.0, *, device=None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n, n)`` soft disc."""
    _check(radius_px, width_px)
    return raised_cosine(distance_from_centre(n, 2, device=device, dtype=dtype), radius_px, width_px)


def soft_spherical_mask(n: int, radius_px: float, width_px: float = 5.0, *, device=None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(n, n, n)`` soft sphere."""
    _check(radius_px, width_px)
    return raised_cosine(distance_from_centre(n, 3, device=device, dtype=dtype), radius_px, width_px)


def apply_soft_mask(x: torch.Tensor, radius_px: float, width_px: float = 5.0, *, ndim: int = 2,
                    background: str = "mean") -> torch.Tensor:
    """Mask images ``(..., n, n)`` (``ndim=2``) or volumes ``(..., n, n, n)`` (``ndim=3``).

    ``background="mean"``: outside values become the mean of the region outside ``radius_px``
    (per image), blended through the soft edge; ``"zero"``: plain multiplication.
    """
    if background not in _BACKGROUNDS:
        raise InputError(f"unknown background {background!r}", field="background",
                         expected=" | ".join(_BACKGROUNDS))
    _check(radius_px, width_px)
    n = x.shape[-1]
    mask = raised_cosine(distance_from_centre(n, ndim, device=x.device, dtype=x.dtype), radius_px, width_px)
    bg = _BACKGROUNDS[background](x, mask, ndim)
    return x * mask + bg * (1 - mask)


def mask_from_map(volume: torch.Tensor, threshold: float, extend_px: float = 0.0,
                  soft_edge_px: float = 0.0) -> torch.Tensor:
    """RELION ``relion_mask_create``: binarise at ``threshold``, extend, add a raised-cosine edge.

    Parameters
    ----------
    volume
        ``(n, n, n)`` map (already low-passed if wanted).
    threshold
        Voxels ``>= threshold`` start the mask.
    extend_px
        Grow the binary mask by this many pixels (negative: shrink it).
    soft_edge_px
        Width of the raised-cosine edge outside the extended mask.

    Returns
    -------
    torch.Tensor
        ``(n, n, n)`` mask in ``[0, 1]``, same device and dtype as ``volume``.
    """
    from scipy.ndimage import distance_transform_edt

    binary = (volume >= threshold).detach().cpu().numpy()
    if not binary.any():
        raise InputError(f"no voxel reaches the threshold {threshold:g}", field="ini_threshold",
                         expected=f"a threshold below the map maximum {float(volume.max()):g}")
    if extend_px < 0:
        binary = distance_transform_edt(binary) > -extend_px
        extend_px = 0.0
    outside = torch.as_tensor(distance_transform_edt(~binary), dtype=volume.dtype, device=volume.device)
    return raised_cosine(outside, float(extend_px), float(soft_edge_px))


def _mean_background(x: torch.Tensor, mask: torch.Tensor, ndim: int) -> torch.Tensor:
    outside = 1 - mask
    dims = tuple(range(-ndim, 0))
    total = outside.sum()
    if float(total) == 0:
        return torch.zeros_like(x.sum(dim=dims, keepdim=True))
    return (x * outside).sum(dim=dims, keepdim=True) / total


def _zero_background(x: torch.Tensor, mask: torch.Tensor, ndim: int) -> torch.Tensor:
    return torch.zeros((), device=x.device, dtype=x.dtype)


_BACKGROUNDS = {"mean": _mean_background, "zero": _zero_background}

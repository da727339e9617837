"""Class-average preprocessing for the ranker (RELION's ``class_ranker`` §4).

Two versions of each class average are made:

* the CNN input (:func:`cnn_images`): centre-windowed to ``w = ceil(D / p) + 1`` pixels (made
  even; D the particle diameter, p the pixel size), then Fourier-resized to 64 x 64 with the
  real-space intensity kept; no intensity normalisation;
* the feature image (:func:`feature_image`): Fourier-resized to 4 Å/px, ``n = round(size * p / 4)``
  made even, and its 25 Å low-pass (:func:`lowpass_25`, raised cosine, 2-shell edge at shell
  ``round(n * 4 / 25)``).

Images are centred at index ``n // 2`` (RELION's box centre ``size / 2``).

>>> import torch
>>> cnn_images(torch.ones(2, 48, 48), pixel_size_angst=2.0, diameter_angst=60.0).shape
torch.Size([2, 64, 64])
>>> round(float(cnn_images(torch.ones(1, 48, 48), 2.0, 60.0).mean()), 4)
1.0
"""

from __future__ import annotations

import math

import torch

from vitrify.core.filters import lowpass_fourier
from vitrify.core.fourier import irfft2_centered, rescale_2d, rfft2_centered
from vitrify.errors import InputError

CNN_SIZE_PX = 64
FEATURE_PIXEL_ANGST = 4.0
LOWPASS_ANGST = 25.0


def window_size_px(diameter_angst: float, pixel_size_angst: float) -> int:
    """RELION's window: ``ceil(D / p) + 1``, rounded up to even."""
    w = math.ceil(diameter_angst / pixel_size_angst) + 1
    return w + w % 2


def centre_window(images: torch.Tensor, size_px: int) -> torch.Tensor:
    """Crop or zero-pad centred images ``(..., n, n)`` to ``(..., size_px, size_px)``.

    The window holds the indices ``[-size/2, size/2 - 1]`` around the centre ``n // 2``.
    """
    n = images.shape[-1]
    out = images.new_zeros(*images.shape[:-2], size_px, size_px)
    lo_in, lo_out = n // 2 - size_px // 2, 0
    if lo_in < 0:
        lo_in, lo_out = 0, size_px // 2 - n // 2
    m = min(n - lo_in, size_px - lo_out)
    out[..., lo_out:lo_out + m, lo_out:lo_out + m] = images[..., lo_in:lo_in + m, lo_in:lo_in + m]
    return out


def cnn_images(images: torch.Tensor, pixel_size_angst: float, diameter_angst: float) -> torch.Tensor:
    """CNN inputs ``(k, 64, 64)`` from class averages ``(k, n, n)`` (window to the diameter, resize).

    Raises :class:`InputError` when the diameter or pixel size cannot be used.
    """
    if not (pixel_size_angst > 0 and diameter_angst > 0):
        raise InputError(f"pixel size {pixel_size_angst} Å and particle diameter {diameter_angst} Å",
                         field="rlnParticleDiameter", expected="both > 0")
    w = window_size_px(diameter_angst, pixel_size_angst)
    return rescale_2d(centre_window(images.float(), w), CNN_SIZE_PX)


def feature_size_px(box_px: int, pixel_size_angst: float) -> int:
    """Box of the 4 Å/px feature image: ``round(size * p / 4)``, made even (at least 8)."""
    n = round(box_px * pixel_size_angst / FEATURE_PIXEL_ANGST)
    n -= n % 2
    if n < 8:
        raise InputError(f"a {box_px} px box at {pixel_size_angst} Å/px is {n} px at 4 Å/px",
                         field="rlnPixelSize", expected="classes at least 32 Å across")
    return n


def feature_image(images: torch.Tensor, pixel_size_angst: float) -> torch.Tensor:
    """Class averages ``(k, n, n)`` resized to 4 Å/px: ``(k, m, m)`` with :func:`feature_size_px`."""
    return rescale_2d(images.float(), feature_size_px(images.shape[-1], pixel_size_angst))


def lowpass_25(images: torch.Tensor) -> torch.Tensor:
    """25 Å raised-cosine low-pass (2-shell edge) of 4 Å/px images ``(..., m, m)``."""
    m = images.shape[-1]
    shell = round(m * FEATURE_PIXEL_ANGST / LOWPASS_ANGST)
    return irfft2_centered(lowpass_fourier(rfft2_centered(images), m, shell, 2.0), m)


def mask_radius_px(diameter_angst: float, feature_box_px: int) -> float:
    """Mask radius R in 4 Å pixels: ``min(D / 8, m / 2)``."""
    return min(diameter_angst / (2 * FEATURE_PIXEL_ANGST), feature_box_px / 2)

"""Particle extraction: windowing, Fourier rescaling, normalisation, contrast inversion.

Order as in RELION's ``relion_preprocess --extract`` (formats.md section 10): window
``box_px`` around each coordinate → optional rescale to ``rescale_px`` (Fourier
cropping/padding) → optional dust removal → normalise to mean 0, σ 1 over the
background circle → optional contrast inversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vitrify.core.fourier import rescale_2d
from vitrify.io.errors import InputError


@dataclass(frozen=True)
class ExtractOptions:
    """Extraction settings (RELION job.star names in brackets)."""

    box_px: int                               # [extract_size]
    rescale_px: int | None = None             # [rescale] when [do_rescale]
    normalise: bool = True                    # [do_norm]
    invert_contrast: bool = True              # [do_invert]
    bg_radius_px: float | None = None         # [bg_diameter]/2 in output pixels; None = RELION default
    white_dust_sigma: float = -1.0            # [white_dust], -1 = off
    black_dust_sigma: float = -1.0            # [black_dust], -1 = off

    def __post_init__(self) -> None:
        if self.box_px < 4 or self.box_px % 2:
            raise InputError(f"box size {self.box_px} must be even and >= 4", field="extract_size",
                             expected="an even number of pixels")
        if self.rescale_px is not None and (self.rescale_px < 4 or self.rescale_px % 2):
            raise InputError(f"rescaled size {self.rescale_px} must be even and >= 4", field="rescale",
                             expected="an even number of pixels")

    @property
    def output_px(self) -> int:
        """Side of the written images."""
        return self.rescale_px or self.box_px

    @property
    def background_radius_px(self) -> float:
        """RELION's default: ``int(0.75 · box/2 · rescale/box)`` when bg_diameter is -1."""
        if self.bg_radius_px is not None and self.bg_radius_px > 0:
            return self.bg_radius_px
        return float(int(0.75 * self.box_px / 2 * self.output_px / self.box_px))


def window_particles(micrograph: torch.Tensor, x_px: np.ndarray, y_px: np.ndarray,
                     box_px: int) -> tuple[torch.Tensor, np.ndarray]:
    """Cut boxes centred on rounded coordinates; boxes reaching outside are skipped.

    Parameters
    ----------
    micrograph
        ``(ny, nx)``.
    x_px, y_px
        ``(k,)`` particle centres (px, x = column). The centre lands on pixel ``box//2``.

    Returns
    -------
    (torch.Tensor, np.ndarray)
        ``(m, box, box)`` windows and the ``(m,)`` indices of the kept particles.
    """
    ny, nx = micrograph.shape
    x0 = np.rint(np.asarray(x_px, float)).astype(np.int64) - box_px // 2
    y0 = np.rint(np.asarray(y_px, float)).astype(np.int64) - box_px // 2
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + box_px <= nx) & (y0 + box_px <= ny)
    kept = np.nonzero(inside)[0]
    offsets = torch.arange(box_px, device=micrograph.device)
    rows = torch.as_tensor(y0[kept], device=micrograph.device).view(-1, 1) + offsets
    cols = torch.as_tensor(x0[kept], device=micrograph.device).view(-1, 1) + offsets
    windows = micrograph[rows[:, :, None], cols[:, None, :]]
    return windows.float(), kept


def background_mask(box_px: int, radius_px: float, device=None) -> torch.Tensor:
    """``(box, box)`` bool: pixels with ``x² + y² > radius²`` (centre at ``box//2``)."""
    c = torch.arange(box_px, device=device, dtype=torch.float32) - box_px // 2
    return (c.view(-1, 1) ** 2 + c.view(1, -1) ** 2) > radius_px ** 2


def _background_stats(images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values = images[:, mask]
    mean = values.mean(dim=1)
    var = (values * values).mean(dim=1) - mean * mean
    return mean.view(-1, 1, 1), var.clamp(min=0).sqrt().view(-1, 1, 1)


def remove_dust(images: torch.Tensor, mask: torch.Tensor, white_sigma: float, black_sigma: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace pixels beyond ``+white_sigma`` / ``-black_sigma`` σ by background noise.

    ``images`` ``(m, n, n)``; a negative sigma switches that side off.
    """
    if white_sigma <= 0 and black_sigma <= 0:
        return images
    mean, std = _background_stats(images, mask)
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    noise = mean + std * noise
    bad = torch.zeros_like(images, dtype=torch.bool)
    if white_sigma > 0:
        bad |= images > mean + white_sigma * std
    if black_sigma > 0:
        bad |= images < mean - black_sigma * std
    return torch.where(bad, noise, images)


def normalise_background(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Subtract the background mean and divide by its σ (skipped where σ < 1e-10). ``(m, n, n)``."""
    mean, std = _background_stats(images, mask)
    safe = torch.where(std < 1e-10, torch.ones_like(std), std)
    return torch.where(std < 1e-10, images - mean, (images - mean) / safe)


def extract_particles(micrograph: torch.Tensor, x_px: np.ndarray, y_px: np.ndarray,
                      options: ExtractOptions) -> tuple[torch.Tensor, np.ndarray]:
    """Extract, rescale, normalise and invert particles of one micrograph.

    Parameters
    ----------
    micrograph
        ``(ny, nx)`` image ("black protein").
    x_px, y_px
        ``(k,)`` coordinates in micrograph pixels.

    Returns
    -------
    (torch.Tensor, np.ndarray)
        ``(m, out, out)`` float32 images and the indices of the ``m`` particles kept
        (those whose box lies inside the micrograph).
    """
    images, kept = window_particles(micrograph, x_px, y_px, options.box_px)
    if len(kept) == 0:
        return images.new_zeros(0, options.output_px, options.output_px), kept
    if options.rescale_px and options.rescale_px != options.box_px:
        images = rescale_2d(images, options.rescale_px)
    mask = background_mask(options.output_px, options.background_radius_px, images.device)
    if not bool(mask.any()):
        raise InputError("background circle covers the whole box", field="bg_diameter",
                         expected="a diameter smaller than the box")
    images = remove_dust(images, mask, options.white_dust_sigma, options.black_dust_sigma)
    if options.normalise:
        images = normalise_background(images, mask)
    if options.invert_contrast:
        images = -images
    return images, kept

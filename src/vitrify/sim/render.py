"""Particle images from maps: projection, shift, CTF, noise at a given SNR, RELION normalisation.

Image formation (per particle ``i`` with rotation ``A_i``, origin ``o_i``, CTF ``C_i``)::

    signal_i = IFT[ C_i · shift(-o_i) · P(A_i) ]          (P: Fourier slice of the map)
    image_i  = normalise(signal_i + noise_i)

The CTF is RELION's (``vitrify.core.ctf.ctf_2d`` of a ``CtfParams``: CTF(0) = +Q0, first lobe positive for
underfocus), so a positive map gives "white protein" images, as RELION's particles after
extraction with contrast inversion.

**SNR** (the ``snr`` option) is defined as the variance of the noise-free, CTF-modulated
signal inside the particle disc (radius = the particle's radius, px) divided by the variance
of the noise there. One noise level is used for the whole data set: it is the mean signal
variance over the real particles (not the junk) divided by ``snr``; single particles vary
around the requested SNR with their orientation.

Noise is Gaussian, white or "coloured" (power falling as 1 / (1 + (f / 0.1 px⁻¹)²), scaled
so its variance is unchanged). Noisy images are then normalised as RELION's extraction does:
per image, the pixels outside a circle of radius ``int(0.75 · n / 2)`` get mean 0 and
standard deviation 1. Noise-free images are left in map units (nothing to normalise).
"""

from __future__ import annotations

from collections.abc import Iterator
import torch

from vitrify.core.ctf import CtfParams, ctf_2d
from vitrify.core.fourier import irfft2_centered, radius_grid_2d, rfft2_centered
from vitrify.core.projector import Projector, crop_centered, pad_centered, project_fourier
from vitrify.core.shifts import phase_shift_2d

#: corner frequency (cycles / px) of the coloured-noise spectrum
COLOURED_NOISE_CORNER = 0.1


def disc_mask(n: int, radius_px: float, *, device=None) -> torch.Tensor:
    """``(n, n)`` bool, True inside the circle of ``radius_px`` around ``n//2``."""
    return _centred_radius(n, device) <= radius_px


def _centred_radius(n: int, device) -> torch.Tensor:
    coords = torch.arange(n, device=device, dtype=torch.float32) - n // 2
    return torch.sqrt(coords[:, None] ** 2 + coords[None, :] ** 2)


def project_particles(projector: Projector, rotations: torch.Tensor,
                      origins_px: torch.Tensor) -> torch.Tensor:
    """Noise-free, CTF-free particle images.

    Parameters
    ----------
    projector
        3D projector of one map (``make_projector``).
    rotations
        ``(b, 3, 3)`` RELION matrices.
    origins_px
        ``(b, 2)`` RELION origins (x, y) in pixels: the particle centre goes to centre - origin.

    Returns
    -------
    torch.Tensor
        ``(b, n, n)`` real.
    """
    slices = phase_shift_2d(project_fourier(projector, rotations), -origins_px)
    return irfft2_centered(slices, projector.box_px)


def apply_ctf(images: torch.Tensor, ctf: CtfParams | None, *, pad: int = 2) -> torch.Tensor:
    """CTF-modulate ``(b, n, n)`` images as a microscope would, without wrap-around.

    Each image is zero-padded to ``pad · n`` (the object sits in a larger field of view),
    multiplied by the CTF of that box in Fourier space and cropped back, so the signal the
    CTF delocalises beyond the box is lost instead of wrapping in from the other side.
    ``ctf`` holds one CTF per image (defocus tensors ``(b,)``, pixel size of the images);
    None returns ``images``.
    """
    if ctf is None:
        return images
    n = images.shape[-1]
    big = pad_centered(images, pad * n, 2)
    transfer = ctf_2d(pad * n, ctf)
    return crop_centered(irfft2_centered(rfft2_centered(big) * transfer, pad * n), n, 2)


def noise_amplitude(n: int, colour: str, *, device=None) -> torch.Tensor | None:
    """``(n, n//2+1)`` amplitude filter of the noise spectrum (None for white noise)."""
    if colour == "white":
        return None
    def spectrum(rfft: bool) -> torch.Tensor:
        radius = radius_grid_2d(n, rfft=rfft, device=device) / n
        return 1.0 / torch.sqrt(1.0 + (radius / COLOURED_NOISE_CORNER) ** 2)

    return spectrum(True) / torch.sqrt((spectrum(False) ** 2).mean())


def draw_noise(shape: tuple[int, int, int], sigma: float, amplitude: torch.Tensor | None,
               generator: torch.Generator, *, device=None) -> torch.Tensor:
    """Gaussian noise ``shape = (b, n, n)`` with standard deviation ``sigma``, optionally coloured."""
    noise = torch.randn(shape, generator=generator, device=device) * sigma
    if amplitude is None:
        return noise
    return irfft2_centered(rfft2_centered(noise) * amplitude, shape[-1])


def normalise_relion(images: torch.Tensor, bg_radius_px: int | None = None) -> torch.Tensor:
    """RELION's extraction normalisation: background (outside ``bg_radius_px``) mean 0, std 1.

    ``images`` is ``(b, n, n)``; the default radius is ``int(0.75 · n / 2)``. Images with a
    flat background (std < 1e-10) are only shifted.
    """
    n = images.shape[-1]
    radius = int(0.75 * n / 2) if bg_radius_px is None else bg_radius_px
    background = _centred_radius(n, images.device) > radius
    values = images[:, background]
    mean = values.mean(dim=1)
    std = torch.sqrt(torch.clamp((values**2).mean(dim=1) - mean**2, min=0.0))
    std = torch.where(std < 1e-10, torch.ones_like(std), std)
    return (images - mean[:, None, None]) / std[:, None, None]


def masked_variance(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(b,)`` variance of each ``(b, n, n)`` image over the pixels where ``mask`` is True."""
    return images[:, mask].var(dim=1)


def batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of at most ``size`` items."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))

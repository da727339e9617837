"""Template picking from 2D class averages: masked normalised cross-correlation.

The references (e.g. a ``run_it025_classes.mrcs`` of Class2D: white protein, CTF-corrected)
are rescaled to a working pixel size where the particle spans ~20 pixels, optionally
multiplied by the micrograph's CTF, rotated in-plane every ``psi_step_deg`` (Fourier-space
rotation of :mod:`vitrify.core.projector`), masked by a circle of the particle diameter and
normalised to zero mean and unit norm inside it. The micrograph is binned to the same
pixel size and band-pass filtered. For every reference and angle the normalised
cross-correlation (NCC) with the micrograph under the circular mask is computed with
FFTs; the mask is rotation invariant, so the local mean and variance of the micrograph
are computed once. The figure of merit is the best NCC over references and angles,
expressed in robust σ units of its map (median and MAD), as for the LoG picker, so that
pure noise gives no picks at the default threshold. Each pick keeps the best
reference (rlnClassNumber) and angle (rlnAnglePsi): the particle looks like the
reference rotated by ``R(psi)`` (:func:`vitrify.core.euler.rotation_2d`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from vitrify.core.ctf import CtfParams, ctf_2d
from vitrify.core.fourier import irfft2_centered, rescale_2d, rfft2_centered
from vitrify.core.projector import make_projector_2d, rotate_2d_fourier
from vitrify.io.errors import InputError
from vitrify.preprocess.picking import Picks, fourier_bin, local_peaks, robust_stats, suppress_close


@dataclass(frozen=True)
class TemplatePickOptions:
    """Template picker settings (RELION AutoPick job.star names in brackets where they exist)."""

    diameter_angst: float = -1.0              # particle diameter (mask, distance); -1: 0.75 × reference box
    psi_step_deg: float = 10.0                # [psi_sampling_autopick]
    lowpass_angst: float = 20.0               # [lowpass]
    highpass_angst: float = -1.0              # [highpass]; -1 = 2 × diameter
    references_white: bool = True             # class averages show white protein (RELION's default)
    invert: bool = False                      # micrograph particles are white
    threshold_adjust: float = 0.0             # in σ of the FOM map, added to the baseline
    baseline_sigma: float = 5.0               # threshold (σ) at adjust 0
    min_distance_fraction: float = 0.8        # of the diameter [mindist_autopick]
    pixels_per_diameter: float = 20.0         # sets the working pixel size

    def __post_init__(self) -> None:
        if self.diameter_angst <= 0 and self.diameter_angst != -1:
            raise InputError("particle diameter must be positive", field="particle_diameter",
                             expected="a diameter in Å (or -1: from the references)")
        if not 0 < self.psi_step_deg <= 180:
            raise InputError(f"psi step {self.psi_step_deg}", field="psi_sampling_autopick",
                             expected="0 < step <= 180 degrees")
        if self.lowpass_angst <= 0:
            raise InputError("low-pass must be positive", field="lowpass", expected="Å > 0")


def resolve_diameter(opts: TemplatePickOptions, references_shape: tuple[int, ...],
                     reference_pixel_angst: float) -> TemplatePickOptions:
    """``opts`` with diameter -1 replaced by 0.75 × the reference box (Å)."""
    if opts.diameter_angst > 0:
        return opts
    return replace(opts, diameter_angst=0.75 * references_shape[-1] * reference_pixel_angst)


def _working_pixel(pixel_size_angst: float, opts: TemplatePickOptions) -> float:
    return max(pixel_size_angst, min(opts.lowpass_angst / 2, opts.diameter_angst / opts.pixels_per_diameter))


def prepare_references(references: torch.Tensor, reference_pixel_angst: float, working_pixel_angst: float,
                       opts: TemplatePickOptions, ctf: CtfParams | None = None) -> torch.Tensor:
    """References at the working pixel size, dark-protein, CTF-modulated when ``ctf`` is given.

    Parameters
    ----------
    references
        ``(k, b, b)`` class averages, centred at ``b//2``.

    Returns
    -------
    torch.Tensor
        ``(k, m, m)`` with ``m`` even, at ``working_pixel_angst``.
    """
    if references.ndim != 3 or references.shape[-1] != references.shape[-2] or references.shape[-1] % 2:
        raise InputError(f"references of shape {tuple(references.shape)}", field="references",
                         expected="a stack of square images with an even side")
    if not torch.isfinite(references).all() or float(references.std()) == 0.0:
        raise InputError("references are empty or not finite", field="references",
                         expected="class averages with signal")
    b = references.shape[-1]
    m = max(8, 2 * round(b * reference_pixel_angst / working_pixel_angst / 2))
    refs = rescale_2d(references.float(), m) if m != b else references.float()
    refs = refs - refs.mean(dim=(-2, -1), keepdim=True)
    if opts.references_white:
        refs = -refs  # micrographs show dark protein
    if ctf is not None:
        transfer = ctf_2d(m, replace(ctf, pixel_size_angst=working_pixel_angst), device=refs.device)
        refs = irfft2_centered(rfft2_centered(refs) * transfer, m)  # class averages are CTF-corrected
    return refs


def rotated_templates(refs: torch.Tensor, psi_deg: torch.Tensor, radius_px: float) -> torch.Tensor:
    """``(k, a, m, m)`` references rotated by every angle, masked, zero-mean and unit-norm in the mask."""
    m = refs.shape[-1]
    rotated = irfft2_centered(rotate_2d_fourier(make_projector_2d(refs), psi_deg), m)
    mask = _circle(m, radius_px, refs.device)
    rotated = rotated * mask
    count = mask.sum()
    mean = rotated.sum(dim=(-2, -1), keepdim=True) / count
    rotated = (rotated - mean) * mask
    return rotated / rotated.norm(dim=(-2, -1), keepdim=True).clamp(min=1e-12)


def _circle(n: int, radius_px: float, device) -> torch.Tensor:
    c = torch.arange(n, device=device, dtype=torch.float32) - n // 2
    return ((c.view(-1, 1) ** 2 + c.view(1, -1) ** 2) <= radius_px ** 2).float()


def _embed_at_origin(images: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Put centred ``(..., m, m)`` images into ``(..., h, w)`` with their centre at pixel (0, 0)."""
    m = images.shape[-1]
    out = images.new_zeros(*images.shape[:-2], *shape)
    out[..., :m, :m] = images
    return torch.roll(out, shifts=(-(m // 2), -(m // 2)), dims=(-2, -1))


def _band_pass(image: torch.Tensor, pixel_angst: float, lowpass_angst: float, highpass_angst: float,
               ) -> torch.Tensor:
    h, w = image.shape
    ky = torch.fft.fftfreq(h, d=pixel_angst, device=image.device).view(-1, 1)
    kx = torch.fft.rfftfreq(w, d=pixel_angst, device=image.device).view(1, -1)
    k2 = ky * ky + kx * kx
    low = torch.exp(-math.log(2.0) * k2 * lowpass_angst ** 2)
    high = 1 - torch.exp(-math.log(2.0) * k2 * highpass_angst ** 2)
    return torch.fft.irfft2(torch.fft.rfft2(image - image.mean()) * low * high, s=(h, w))


def ncc_map(image: torch.Tensor, templates: torch.Tensor, mask: torch.Tensor,
            chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Best masked NCC over templates, and the index of the best one, at every pixel.

    Parameters
    ----------
    image
        ``(h, w)`` filtered micrograph.
    templates
        ``(t, m, m)`` zero-mean, unit-norm inside ``mask`` and zero outside.
    mask
        ``(m, m)`` 0/1 circle.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(h, w)`` NCC in [-1, 1] (template centred on the pixel) and ``(h, w)`` long indices.
    """
    shape = tuple(image.shape)
    f_image = torch.fft.rfft2(image)
    f_mask = torch.conj(torch.fft.rfft2(_embed_at_origin(mask, shape)))
    n = float(mask.sum())
    local_sum = torch.fft.irfft2(f_mask * f_image, s=shape)
    local_sq = torch.fft.irfft2(f_mask * torch.fft.rfft2(image * image), s=shape)
    std = (local_sq - local_sum ** 2 / n).clamp(min=0).sqrt()
    floor = 1e-3 * float(std.median()) + 1e-12
    best = torch.full(shape, -2.0, device=image.device)
    index = torch.zeros(shape, dtype=torch.long, device=image.device)
    for start in range(0, templates.shape[0], chunk):
        block = templates[start:start + chunk]
        f_t = torch.conj(torch.fft.rfft2(_embed_at_origin(block, shape)))
        ncc = torch.fft.irfft2(f_t * f_image, s=shape) / std.clamp(min=floor)
        value, arg = ncc.max(dim=0)
        better = value > best
        best = torch.where(better, value, best)
        index = torch.where(better, arg + start, index)
    return best, index


def pick_templates(micrograph: torch.Tensor, pixel_size_angst: float, references: torch.Tensor,
                   reference_pixel_angst: float, opts: TemplatePickOptions,
                   ctf: CtfParams | None = None) -> Picks:
    """Pick particles that look like any of the ``(k, b, b)`` references on one micrograph.

    ``micrograph`` ``(ny, nx)`` shows dark protein unless ``opts.invert``. Returns picks in
    the micrograph's pixels, best first, with rlnClassNumber (1-based reference) and psi.
    ``ctf``, the micrograph's CTF when known, modulates the references (at their working pixel size).
    """
    if not torch.isfinite(micrograph).all() or float(micrograph.std()) == 0.0:
        raise InputError("micrograph is empty, constant or not finite", field="pixel values",
                         expected="an image with signal")
    opts = resolve_diameter(opts, tuple(references.shape), reference_pixel_angst)
    work_px = _working_pixel(pixel_size_angst, opts)
    ny, nx = micrograph.shape
    shape = (2 * round(ny * pixel_size_angst / work_px / 2), 2 * round(nx * pixel_size_angst / work_px / 2))
    image = fourier_bin(micrograph, (min(shape[0], ny), min(shape[1], nx)))
    work_px = pixel_size_angst * ny / image.shape[0]
    if opts.invert:
        image = -image
    highpass = opts.highpass_angst if opts.highpass_angst > 0 else 2 * opts.diameter_angst
    image = _band_pass(image, work_px, opts.lowpass_angst, highpass)
    refs = prepare_references(references.to(micrograph.device), reference_pixel_angst, work_px, opts, ctf)
    radius = 0.5 * opts.diameter_angst / work_px
    m = refs.shape[-1]
    radius = min(radius, m / 2 - 1)
    psi = torch.arange(0.0, 360.0, opts.psi_step_deg, device=micrograph.device)
    templates = rotated_templates(refs, psi, radius).flatten(0, 1)
    ncc, best = ncc_map(image, templates, _circle(m, radius, micrograph.device))
    median, sigma = robust_stats(ncc)
    fom = (ncc - median) / sigma
    return _peaks(fom, best, len(psi), psi, opts, work_px, (ny / image.shape[0], nx / image.shape[1]))


def _peaks(fom: torch.Tensor, best: torch.Tensor, n_psi: int, psi: torch.Tensor, opts: TemplatePickOptions,
           work_px: float, factors: tuple[float, float]) -> Picks:
    min_dist = opts.min_distance_fraction * opts.diameter_angst / work_px
    edge = int(math.ceil(0.5 * opts.diameter_angst / work_px))
    peaks = local_peaks(fom, int(round(min_dist)), opts.baseline_sigma + opts.threshold_adjust,
                         math.inf, edge).cpu().numpy()
    values = fom[peaks[:, 0], peaks[:, 1]].cpu().numpy() if len(peaks) else np.zeros(0)
    kept = suppress_close(peaks.astype(float), values, min_dist) if len(peaks) else np.zeros(0, int)
    peaks, values = peaks[kept], values[kept]
    which = best[peaks[:, 0], peaks[:, 1]].cpu().numpy() if len(peaks) else np.zeros(0, int)
    return Picks(x_px=peaks[:, 1] * factors[1], y_px=peaks[:, 0] * factors[0],
                 figure_of_merit=values.astype(np.float64),
                 diameter_angst=np.full(len(peaks), opts.diameter_angst),
                 class_number=(which // n_psi + 1).astype(np.int64),
                 psi_deg=psi.cpu().numpy()[which % n_psi].astype(np.float64))

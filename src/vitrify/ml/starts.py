"""Starting model: noise spectra, random-psi class averages and Gaussian-blob references.

RELION-4 (``shared/spec/vdam.md`` section 4), without a user reference:

1. sigma2 per optics group from the power spectra of the first particles
   (``sum power / (2 sum weights)`` minus half the power of their average);
2. the same particles inserted with random psi into class ``i % K`` (CTF-weighted),
   reconstructed as data / weight and low-passed at shell ``round(0.07 n)``;
3. Gaussian blobs: 40 positive and 40 negative blobs per class around the centre, with
   amplitudes read from that average, scaled to its standard deviation;
4. low-pass again and a soft circular mask of the particle diameter.
"""

from __future__ import annotations

import torch

from vitrify.core.filters import lowpass_fourier
from vitrify.core.masks import soft_circular_mask
from vitrify.ml.fourier2d import image_ft, images_from_padded
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.templates import make_rotation_table, scatter_to_grids
from vitrify.ml.window import FourierWindow, pack, window_shell_sums


def flatten_solvent(refs: torch.Tensor, radius_px: float, edge_px: float = 5.0) -> torch.Tensor:
    """Multiply references ``(K, n, n)`` by the soft circle (RELION ``--flatten_solvent``)."""
    return refs * soft_circular_mask(refs.shape[-1], radius_px, edge_px, device=refs.device)


def lowpass(refs: torch.Tensor, shell: int, width: int = 2) -> torch.Tensor:
    """Raised-cosine low-pass of ``(K, n, n)``: 1 up to Fourier shell ``shell``, 0 from ``shell + width``.

    :func:`vitrify.core.filters.lowpass_fourier` with its edge centred on ``shell + width / 2``; the
    filter is radial, so the images are transformed without centring.
    """
    n = refs.shape[-1]
    return torch.fft.irfft2(lowpass_fourier(torch.fft.rfft2(refs), n, shell + width / 2, width), s=(n, n))


def initial_sigma2(particles: ParticleSet, window: FourierWindow, n_per_group: int = 1000
                   ) -> torch.Tensor:
    """Noise spectra ``(G, n//2+1)`` float64 from the first particles of each optics group."""
    n = window.box_px
    out = torch.zeros(particles.n_groups, n // 2 + 1, dtype=torch.float64)
    hw = window.half_weight.to(particles.ft.device).double()
    count = window_shell_sums(hw[None], window)[0]
    for g in range(particles.n_groups):
        idx = torch.nonzero(particles.group == g).flatten()[:n_per_group]
        if idx.numel() == 0:
            continue
        x = particles.ft[idx].to(torch.complex128)
        power = window_shell_sums(((x.real ** 2 + x.imag ** 2) * hw).sum(0), window) / idx.numel()
        mean = x.mean(0)
        mean_power = window_shell_sums((mean.real ** 2 + mean.imag ** 2) * hw, window)
        s2 = (power - mean_power) / (2 * count.clamp_min(1e-30))
        s2 = s2.cpu()
        for s in range(1, s2.shape[0]):  # non-positive shells take the previous value
            if s2[s] <= 0:
                s2[s] = s2[s - 1] if s > 1 else s2[s2 > 0].min()
        s2[0] = s2[1]
        out[g, : s2.shape[0]] = s2
        out[g, s2.shape[0]:] = s2[-1]
    return out


def random_psi_averages(particles: ParticleSet, window: FourierWindow, n_classes: int, pad: int,
                        generator: torch.Generator, n_use: int = 1000) -> torch.Tensor:
    """Class averages ``(K, n, n)`` of the first particles inserted with random psi."""
    dev = particles.ft.device
    n = window.box_px
    m = pad * n
    idx = torch.arange(min(n_use, particles.n_particles), device=dev)
    psi = torch.rand(idx.shape[0], generator=generator).to(dev) * 360.0
    data = torch.zeros(n_classes, m, m // 2 + 1, dtype=torch.complex64, device=dev)
    weight = torch.zeros(n_classes, m, m // 2 + 1, device=dev)
    hw = window.half_weight.to(dev)
    for k in range(n_classes):
        sel = idx[idx % n_classes == k]
        if sel.numel() == 0:
            continue
        table = make_rotation_table(psi[sel], window, pad)
        c = particles.ctf[sel]
        d, w = scatter_to_grids((particles.ft[sel] * c * hw)[None], (c * c * hw)[None], table)
        data[k], weight[k] = d[0], w[0]
    floor = weight.mean(dim=(-2, -1), keepdim=True) * 1e-3
    return images_from_padded(data / torch.maximum(weight, floor.clamp_min(1e-30)), n)


def gaussian_blobs(average: torch.Tensor, diameter_px: float, generator: torch.Generator,
                   n_blobs: int = 40) -> torch.Tensor:
    """Blob image ``(n, n)`` from a class average ``(n, n)`` (RELION's 2D blob start)."""
    n = average.shape[-1]
    dev = average.device
    coords = torch.arange(n, device=dev, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    images = []
    for _ in range(2):
        centres = n / 2 + torch.randn(n_blobs, 2, generator=generator) * (diameter_px / 7.0)
        img = torch.zeros(n, n, device=dev)
        for cx, cy in centres.tolist():
            ix, iy = int(cx), int(cy)
            amp = float(average[iy, ix].abs()) if 0 <= ix < n and 0 <= iy < n else 0.0
            img += amp * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * (10.0 / diameter_px) ** 2)
        images.append(img)
    blob = images[0] - images[1] / 2
    scale = float(average.std()) / max(float(blob.std()), 1e-30)
    return blob * scale


def initial_references(particles: ParticleSet, window: FourierWindow, n_classes: int,
                       diameter_px: float, pad: int, generator: torch.Generator,
                       blobs: bool = True) -> tuple[torch.Tensor, int]:
    """Starting references ``(K, n, n)`` and the starting window radius ``round(0.07 n)``."""
    n = window.box_px
    ini_shell = max(1, round(0.07 * n))
    refs = lowpass(random_psi_averages(particles, window, n_classes, pad, generator), ini_shell)
    if blobs:
        refs = torch.stack([gaussian_blobs(refs[k], diameter_px, generator) for k in range(n_classes)])
        refs = lowpass(refs, ini_shell)
    refs = flatten_solvent(refs, diameter_px / 2.0)
    return refs.float(), ini_shell


def packed_image_ft(images: torch.Tensor, window: FourierWindow) -> torch.Tensor:
    """``(N, n, n)`` real images -> ``(N, P)`` packed engine transforms."""
    return pack(image_ft(images), window.to(images.device)).to(torch.complex64)


def pack_particles(images: torch.Tensor, ctf_grids: torch.Tensor | None, window: FourierWindow,
                   diameter_px: float, edge_px: float = 5.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Engine inputs for a chunk of particles.

    Parameters
    ----------
    images
        ``(B, n, n)`` real particle images (background mean 0, std 1).
    ctf_grids
        ``(B, n, n//2+1)`` CTFs in the rfft layout, or None (no CTF correction).

    Returns
    -------
    ``(B, P)`` complex64 packed transforms of the zero-masked images and ``(B, P)`` float32
    packed CTFs.
    """
    mask = soft_circular_mask(images.shape[-1], diameter_px / 2.0, edge_px, device=images.device)
    ft = packed_image_ft(images.float() * mask, window)
    if ctf_grids is None:
        return ft, torch.ones(ft.shape, device=ft.device)
    return ft, pack(ctf_grids.float(), window.to(images.device)).contiguous()


def scaled_user_references(user_refs: torch.Tensor, particles: ParticleSet, window: FourierWindow,
                           diameter_px: float, pad: int, generator: torch.Generator) -> torch.Tensor:
    """User references ``(K, n, n)`` masked and scaled to the data.

    Their mean standard deviation is set to that of the low-passed random-psi class averages,
    the scale the blob starts take; the relative power of the references is kept.
    """
    ini_shell = max(1, round(0.07 * window.box_px))
    averages = lowpass(random_psi_averages(particles, window, user_refs.shape[0], pad, generator), ini_shell)
    refs = flatten_solvent(user_refs.to(averages.device, torch.float64), diameter_px / 2.0)
    scale = averages.std(dim=(1, 2)).mean() / refs.std(dim=(1, 2)).mean().clamp_min(1e-30)
    return (refs * scale).float()


def initial_model(particles: ParticleSet, window: FourierWindow, n_classes: int, diameter_px: float,
                  pixel_size_angst: float, tau2_fudge: float, seed: int, sigma_offset_px: float,
                  pad: int = 2, blobs: bool = True, user_refs: torch.Tensor | None = None) -> MlModel:
    """The iteration-0 model: blob references (or ``user_refs`` ``(K, n, n)`` at full resolution),
    noise spectra, uniform classes."""
    gen = torch.Generator().manual_seed(int(seed))
    n = window.box_px
    if user_refs is None:
        refs, ini_shell = initial_references(particles, window, n_classes, diameter_px, pad, gen, blobs)
    else:
        refs, ini_shell = scaled_user_references(user_refs, particles, window, diameter_px, pad, gen), n // 2
    zeros = torch.zeros(n_classes, n // 2 + 1, dtype=torch.float64)
    return MlModel(refs=refs.to(particles.ft.device),
                   pdf_class=torch.full((n_classes,), 1.0 / n_classes, dtype=torch.float64),
                   sigma2=initial_sigma2(particles, window), tau2=zeros, data_vs_prior=zeros.clone(),
                   sigma2_offset_px=float(sigma_offset_px) ** 2, tau2_fudge=tau2_fudge,
                   current_radius=min(n // 2 - 1, ini_shell + 10), pixel_size_angst=pixel_size_angst,
                   pad=pad)

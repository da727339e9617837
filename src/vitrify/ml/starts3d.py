"""3D starting model without a reference: random-orientation averages and Gaussian blobs.

RELION-4 (``shared/spec/vdam.md`` section 4), in 3D:

1. noise spectra from the first particles (:func:`vitrify.ml.starts.initial_sigma2`);
2. those particles back-projected (CTF-weighted) with random Euler angles into class ``i % K``,
   reconstructed as data / weight and low-passed at shell ``round(0.07 n)``;
3. 40 positive and 40 negative Gaussian blobs per class, centres ~ N(n/2, (D/6)^2) per axis,
   amplitudes read from that average, scaled to its standard deviation;
4. low-pass again and a soft sphere of the particle diameter.
"""

from __future__ import annotations

import torch

from vitrify.core.euler import euler_to_matrix
from vitrify.core.filters import lowpass_fourier
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.slices import (grid_shells, insert_slices, make_slice_table, slice_radius, subset_rows,
                               volumes_from_grids)
from vitrify.ml.starts import initial_sigma2
from vitrify.ml.vdam3d import flatten_solvent
from vitrify.ml.window import FourierWindow, unpack


def lowpass3d(refs: torch.Tensor, shell: int, width: int = 2) -> torch.Tensor:
    """Raised-cosine low-pass of ``(K, n, n, n)`` volumes at Fourier shell ``shell`` (+ ``width``)."""
    n = refs.shape[-1]
    f = torch.fft.rfftn(refs, dim=(-3, -2, -1))
    return torch.fft.irfftn(lowpass_fourier(f, n, shell + width / 2, width, ndim=3), s=(n, n, n), dim=(-3, -2, -1))


def random_orientation_averages(particles: ParticleSet, window: FourierWindow, n_classes: int,
                                generator: torch.Generator, n_use: int = 1000,
                                radius: int | None = None) -> torch.Tensor:
    """Volumes ``(K, n, n, n)`` of the first particles inserted with random orientations.

    Only the shells up to ``radius`` (default: the window's) are inserted and kept.
    """
    radius = window.radius if radius is None else min(int(radius), window.radius)
    dev = particles.ft.device
    n = window.box_px
    m = 2 * n
    count = min(n_use, particles.n_particles)
    angles = torch.rand(count, 3, generator=generator, dtype=torch.float64) * torch.tensor([360.0, 180.0, 360.0])
    rots = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2]).float().to(dev)
    hw = window.half_weight.to(dev)
    # particle pixel k sits at 2 k on the padded 2D grid: a padded grid with only those pixels set
    big = FourierWindow(m, window.radius, 2 * window.kx, 2 * window.ky,
                        _padded_flat(window, m), window.shell, window.half_weight, window.shell_end)
    table = make_slice_table(rots, n, slice_radius(radius))
    c = particles.ctf[:count]
    data2d = unpack(particles.ft[:count] * c * hw, big)
    w2d = unpack((c * c * hw).to(torch.complex64), big).real
    out = []
    for k in range(n_classes):
        sel = torch.nonzero(torch.arange(count, device=dev) % n_classes == k).flatten()
        sub = subset_rows(table, sel)
        d, w = insert_slices(data2d[sel][None], w2d[sel][None], sub)
        floor = w.mean() * 1e-3
        grid = d / torch.maximum(w, floor.clamp_min(1e-30))
        grid = torch.where(grid_shells(table.g, dev) <= radius, grid, torch.zeros_like(grid))
        out.append(volumes_from_grids(grid, n)[0])
    return torch.stack(out)


def _padded_flat(window: FourierWindow, m: int) -> torch.Tensor:
    """Flat indices on an ``(m, m//2+1)`` grid of the window pixels at twice their frequency."""
    ky = torch.remainder(2 * window.ky.long(), m)
    return ky * (m // 2 + 1) + 2 * window.kx.long()


def gaussian_blobs3d(average: torch.Tensor, diameter_px: float, generator: torch.Generator,
                     n_blobs: int = 40) -> torch.Tensor:
    """Blob volume ``(n, n, n)`` from an average ``(n, n, n)`` (RELION's 3D blob start)."""
    n = average.shape[-1]
    dev = average.device
    c = torch.arange(n, device=dev, dtype=torch.float32)
    vols = []
    for _ in range(2):
        centres = n / 2 + torch.randn(n_blobs, 3, generator=generator) * (diameter_px / 6.0)
        vol = torch.zeros(n, n, n, device=dev)
        for cx, cy, cz in centres.tolist():
            ix, iy, iz = int(cx), int(cy), int(cz)
            inside = all(0 <= v < n for v in (ix, iy, iz))
            amp = float(average[iz, iy, ix].abs()) if inside else 0.0
            g = [torch.exp(-(c - v) ** 2 * (10.0 / diameter_px) ** 2) for v in (cx, cy, cz)]
            vol += amp * g[2][:, None, None] * g[1][None, :, None] * g[0][None, None, :]
        vols.append(vol)
    blob = vols[0] - vols[1] / 2
    return blob * (float(average.std()) / max(float(blob.std()), 1e-30))


def initial_model3d(particles: ParticleSet, window: FourierWindow, n_classes: int, diameter_px: float,
                    pixel_size_angst: float, seed: int, sigma_offset_px: float, blobs: bool = True) -> MlModel:
    """Iteration-0 model: blob volumes ``(K, n, n, n)``, noise spectra, uniform classes."""
    gen = torch.Generator().manual_seed(int(seed))
    n = window.box_px
    ini_shell = max(1, round(0.07 * n))
    # the average is low-passed at ini_shell (+ 2 shells of edge): shells beyond ini_shell + 4 are not inserted
    refs = lowpass3d(random_orientation_averages(particles, window, n_classes, gen, radius=ini_shell + 4), ini_shell)
    if blobs:
        refs = torch.stack([gaussian_blobs3d(refs[k], diameter_px, gen) for k in range(n_classes)])
        refs = lowpass3d(refs, ini_shell)
    refs = flatten_solvent(refs, diameter_px / 2.0)
    zeros = torch.zeros(n_classes, n // 2 + 1, dtype=torch.float64)
    return MlModel(refs=refs.float().to(particles.ft.device),
                   pdf_class=torch.full((n_classes,), 1.0 / n_classes, dtype=torch.float64),
                   sigma2=initial_sigma2(particles, window), tau2=zeros, data_vs_prior=zeros.clone(),
                   sigma2_offset_px=float(sigma_offset_px) ** 2, tau2_fudge=1.0,
                   current_radius=min(n // 2 - 1, ini_shell + 10), pixel_size_angst=pixel_size_angst, pad=2)


def reference_model3d(volume: torch.Tensor, particles: ParticleSet, window: FourierWindow, n_classes: int,
                      diameter_px: float, pixel_size_angst: float, sigma_offset_px: float) -> MlModel:
    """Iteration-0 model from a start map ``(n, n, n)`` (low-passed at ``round(0.07 n)``) in every class."""
    n = window.box_px
    ini_shell = max(1, round(0.07 * n))
    refs = lowpass3d(volume.float()[None].expand(n_classes, n, n, n).contiguous(), ini_shell)
    refs = flatten_solvent(refs, diameter_px / 2.0)
    zeros = torch.zeros(n_classes, n // 2 + 1, dtype=torch.float64)
    return MlModel(refs=refs.to(particles.ft.device),
                   pdf_class=torch.full((n_classes,), 1.0 / n_classes, dtype=torch.float64),
                   sigma2=initial_sigma2(particles, window), tau2=zeros, data_vs_prior=zeros.clone(),
                   sigma2_offset_px=float(sigma_offset_px) ** 2, tau2_fudge=1.0,
                   current_radius=min(n // 2 - 1, ini_shell + 10), pixel_size_angst=pixel_size_angst, pad=2)

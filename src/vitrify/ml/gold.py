"""Gold-standard maths of 3D auto-refinement: half-map FSC, FSC-based tau2, joined low resolution.

RELION's ``relion_refine --auto_refine --split_random_halves`` refines two random halves of the
particles independently. After each E-step the two halves' unregularised reconstructions
(``data / weight`` of the back-projected sums) are compared by their FSC, and the FSC sets the
regularisation of both halves' maps (``BackProjector::reconstruct`` with ``update_tau2_with_fsc``):
per shell ``SSNR = FSC / (1 - FSC)`` (FSC clamped to [0.001, 0.999]), and the MAP map is
``data / (weight + mean_weight / (T SSNR))``, i.e. ``tau2 = T SSNR / mean_weight``. For the final map
of both halves together the FSC of the whole is ``sqrt(2 FSC / (1 + FSC))``. Below
``low_resol_join_halves`` (40 Å) the two halves' maps are averaged so that they stay in one frame.

Grids are padded volume transforms ``(g, g, g//2+1)`` (:func:`vitrify.ml.slices.volume_grids`,
``g = PAD n``) with shells :func:`vitrify.ml.slices.grid_shells` (shells of the ``n`` box).
"""

from __future__ import annotations

import math

import torch

from vitrify.core.fsc import fsc, resolution_at_threshold
from vitrify.ml.slices import PAD, volumes_from_grids
from vitrify.ml.vdam3d import map_reconstruct, shell_means

FSC_THRESHOLD = 0.143


def unregularised_volume(data: torch.Tensor, weight: torch.Tensor, shells: torch.Tensor, radius: int,
                         n: int) -> torch.Tensor:
    """``data / weight`` inside ``radius`` as a real ``(n, n, n)`` volume (weights floored at 1e-3 of the
    shell mean, as :func:`vitrify.ml.vdam3d.map_reconstruct`, so empty voxels stay 0).

    ``data`` complex, ``weight`` real, both ``(g, g, g//2+1)``.
    """
    zero_tau2 = torch.zeros(1, n // 2 + 1, dtype=torch.float64, device=data.device)
    grid = map_reconstruct(data[None], weight[None], zero_tau2, 1.0, radius, shells, minres_map=n)
    return volumes_from_grids(grid, n)[0]


def half_map_fsc(volume1: torch.Tensor, volume2: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """FSC ``(n//2+1,)`` float64 of two half volumes ``(n, n, n)``, both times ``mask`` when given."""
    if mask is not None:
        volume1, volume2 = volume1 * mask, volume2 * mask
    return fsc(volume1.float(), volume2.float()).double()


def grid_fsc(data1: torch.Tensor, weight1: torch.Tensor, data2: torch.Tensor, weight2: torch.Tensor,
             n: int) -> torch.Tensor:
    """FSC ``(n//2+1,)`` float64 of two halves' unregularised averages ``data / weight`` compared in Fourier
    space on the particles' grid (the padded grids ``(g, g, g//2+1)`` read at every other voxel, the box's
    frequencies), as RELION compares the halves' downsampled averages: no real-space crop or mask, which
    would spread the halves' shared low resolution into higher shells.
    """
    from vitrify.core.fourier import shell_index_3d
    from vitrify.core.fsc import fourier_shell_correlation

    shells = shell_index_3d(n, device=data1.device)
    averages = []
    for data, weight in ((data1, weight1), (data2, weight2)):
        d, w = data[::2, ::2, ::2].to(torch.complex128), weight[::2, ::2, ::2].double()
        mean = torch.zeros(n // 2 + 2, dtype=torch.float64, device=w.device).index_add_(
            0, shells.reshape(-1).clamp(max=n // 2 + 1), w.reshape(-1))
        count = torch.bincount(shells.reshape(-1).clamp(max=n // 2 + 1), minlength=n // 2 + 2).clamp_min(1)
        floor = (mean / count)[shells.clamp(max=n // 2 + 1)] * 1e-3
        averages.append(torch.where(w > 0, d / torch.maximum(w, floor.clamp_min(1e-300)), torch.zeros_like(d)))
    return fourier_shell_correlation(averages[0], averages[1], shells, n // 2 + 1).double()


def ssnr_from_fsc(curve: torch.Tensor, whole: bool = False) -> torch.Tensor:
    """RELION's ``FSC / (1 - FSC)`` per shell (FSC clamped to [0.001, 0.999]; ``whole``: the FSC of
    the two halves joined, ``sqrt(2 FSC / (1 + FSC))``)."""
    f = curve.double().clamp_min(0.001)
    if whole:
        f = torch.sqrt(2.0 * f / (1.0 + f))
    f = f.clamp_max(0.999)
    return f / (1.0 - f)


def fsc_tau2(weight: torch.Tensor, curve: torch.Tensor, shells: torch.Tensor, radius: int, n: int,
             whole: bool = False) -> torch.Tensor:
    """``(1, n//2+1)`` tau2 for :func:`vitrify.ml.vdam3d.map_reconstruct` (with ``tau2_fudge``) such that
    its prior term is ``mean_weight / (T SSNR)``: ``tau2 = SSNR / (PAD^3 mean_weight)`` per shell.

    ``weight`` ``(g, g, g//2+1)`` real; ``curve`` ``(n//2+1,)`` half-map FSC.
    """
    mean_w = shell_means(weight[None], shells, radius)[0].clamp_min(1e-30)
    tau2 = torch.zeros(1, n // 2 + 1, dtype=torch.float64, device=weight.device)
    ssnr = ssnr_from_fsc(curve.to(weight.device), whole)[: radius + 1]
    tau2[0, : radius + 1] = ssnr / (PAD ** 3 * mean_w)
    return tau2


def regularised_volume(data: torch.Tensor, weight: torch.Tensor, curve: torch.Tensor, tau2_fudge: float,
                       shells: torch.Tensor, radius: int, n: int, minres_map: int = 5,
                       whole: bool = False) -> torch.Tensor:
    """MAP volume ``(n, n, n)`` of padded sums ``(g, g, g//2+1)`` regularised by the FSC ``curve``."""
    tau2 = fsc_tau2(weight, curve, shells, radius, n, whole)
    grid = map_reconstruct(data[None], weight[None], tau2, tau2_fudge, radius, shells, minres_map)
    return volumes_from_grids(grid, n)[0]


def join_low_resolution(volume1: torch.Tensor, volume2: torch.Tensor, shell: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Average two volumes ``(n, n, n)`` in Fourier space below ``shell`` (RELION
    ``--low_resol_join_halves``); above it each keeps its own."""
    if shell <= 0:
        return volume1, volume2
    n = volume1.shape[-1]
    f1, f2 = torch.fft.rfftn(volume1, dim=(-3, -2, -1)), torch.fft.rfftn(volume2, dim=(-3, -2, -1))
    low = _shell_radius(n, volume1.device) < shell
    mean = (f1 + f2) / 2
    f1, f2 = torch.where(low, mean, f1), torch.where(low, mean, f2)
    s = (n, n, n)
    return torch.fft.irfftn(f1, s=s, dim=(-3, -2, -1)), torch.fft.irfftn(f2, s=s, dim=(-3, -2, -1))


def _shell_radius(n: int, device) -> torch.Tensor:
    """``|k|`` of the ``(n, n, n//2+1)`` rfftn layout (DC at index 0)."""
    f = torch.fft.fftfreq(n, 1.0 / n, device=device)
    fx = torch.arange(n // 2 + 1, device=device, dtype=f.dtype)
    return torch.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + fx[None, None, :] ** 2)


def lowpass_to_resolution(volume: torch.Tensor, resolution_angst: float, pixel_size_angst: float,
                          width_shells: float = 2.0) -> torch.Tensor:
    """Raised-cosine low-pass of ``(n, n, n)`` that is 0 from ``resolution_angst`` on (the ``--ini_high``
    start: nothing finer than it, so that the halves share nothing beyond it)."""
    from vitrify.core.filters import lowpass_fourier

    n = volume.shape[-1]
    shell = n * pixel_size_angst / resolution_angst - width_shells / 2
    f = torch.fft.rfftn(volume, dim=(-3, -2, -1))
    return torch.fft.irfftn(lowpass_fourier(f, n, shell, width_shells, ndim=3), s=(n, n, n), dim=(-3, -2, -1))


def resolution_angst(curve: torch.Tensor, n: int, pixel_size_angst: float,
                     threshold: float = FSC_THRESHOLD) -> float:
    """Resolution (Å) where the FSC ``(n//2+1,)`` first drops below ``threshold`` (interpolated)."""
    return resolution_at_threshold(curve, n, pixel_size_angst, threshold)


def resolution_shell(resolution: float, n: int, pixel_size_angst: float) -> int:
    """The Fourier shell (rounded down) of a resolution in Å."""
    if not math.isfinite(resolution) or resolution <= 0:
        return 0
    return int(math.floor(n * pixel_size_angst / resolution + 1e-9))


def fsc_to_truth(volume: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """FSC ``(n//2+1,)`` of a volume with the true map (both times ``mask``), for tests and benchmarks."""
    return half_map_fsc(volume, truth, mask)


__all__ = ["FSC_THRESHOLD", "fsc_tau2", "fsc_to_truth", "grid_fsc", "half_map_fsc", "join_low_resolution",
           "lowpass_to_resolution", "regularised_volume", "resolution_angst", "resolution_shell",
           "ssnr_from_fsc", "unregularised_volume"]

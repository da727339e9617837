"""Post-processing maths: phase randomisation, corrected FSC, Guinier fit and FSC weighting.

As RELION's ``relion_postprocess``: the masked half-maps' FSC is corrected for the correlation the
mask itself creates by repeating it on half-maps whose phases are randomised beyond a shell,
``FSC_true = (FSC_t - FSC_n) / (1 - FSC_n)`` from that shell on; the B-factor comes from a straight
line fitted to ``ln |F|`` against ``s²`` (``s`` in 1/Å), ``B = 4 · slope``; the map is weighted per
shell by ``sqrt(2 FSC / (1 + FSC))``.
"""

from __future__ import annotations

import math

import torch

from vitrify.core.fourier import irfft3_centered, radius_grid_3d, rfft3_centered, shell_index_3d, \
    shell_sums

__all__ = ["phase_randomize", "randomize_from_shell", "corrected_fsc", "log_amplitude_shells",
           "fit_guinier", "fsc_weight"]


def phase_randomize(volume: torch.Tensor, from_shell: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep amplitudes, draw uniform random phases at radii ``>= from_shell`` (pixels of frequency).

    Parameters
    ----------
    volume
        ``(n, n, n)`` real map.
    from_shell
        First frequency radius (rounded shell index) whose phases are randomised.
    generator
        Seeded ``torch.Generator`` (CPU) for reproducible phases.

    Returns
    -------
    torch.Tensor
        ``(n, n, n)`` real map.
    """
    n = volume.shape[-1]
    f = rfft3_centered(volume)
    shells = shell_index_3d(n, device=volume.device)
    phases = torch.rand(f.shape, generator=generator, dtype=f.real.dtype).to(volume.device) * (2 * math.pi)
    rotated = f.abs() * torch.polar(torch.ones_like(phases), phases)
    return irfft3_centered(torch.where(shells >= from_shell, rotated, f), n)


def randomize_from_shell(fsc_unmasked: torch.Tensor, threshold: float = 0.8) -> int:
    """First shell (> 0) where ``fsc_unmasked`` ``(n_shells,)`` falls below ``threshold`` (RELION's 0.8).

    The last shell when it never does.
    """
    below = torch.nonzero(fsc_unmasked[1:] < threshold).squeeze(-1)
    return int(below[0]) + 1 if below.numel() else int(fsc_unmasked.shape[-1] - 1)


def corrected_fsc(fsc_masked: torch.Tensor, fsc_randomized: torch.Tensor, from_shell: int) -> torch.Tensor:
    """``(n_shells,)`` FSC_true: the masked FSC below ``from_shell``, ``(t - n)/(1 - n)`` from it on."""
    out = fsc_masked.clone()
    t, r = fsc_masked[from_shell:], fsc_randomized[from_shell:]
    denominator = torch.where(r < 1, 1 - r, torch.ones_like(r))
    out[from_shell:] = torch.where(r < 1, (t - r) / denominator, torch.zeros_like(t))
    return out


def log_amplitude_shells(volume_ft: torch.Tensor, n: int) -> torch.Tensor:
    """``(n//2+1,)`` ln of the mean amplitude per shell of an rfft3 transform (``-inf`` where zero)."""
    shells = shell_index_3d(n, device=volume_ft.device)
    mean = shell_sums(volume_ft.abs(), shells, n // 2 + 1, mean=True)
    return torch.log(mean)


def fit_guinier(log_amplitude: torch.Tensor, box_px: int, pixel_size_angst: float,
                low_angst: float, high_angst: float) -> tuple[float, float, float]:
    """Straight line through ``ln|F|`` against ``s²`` for resolutions ``low_angst`` to ``high_angst``.

    Parameters
    ----------
    log_amplitude
        ``(n//2+1,)`` per-shell ln amplitudes (:func:`log_amplitude_shells`).
    box_px, pixel_size_angst
        Map box and pixel size.
    low_angst, high_angst
        Resolution range fitted (RELION: 10 Å to the final resolution).

    Returns
    -------
    tuple
        ``(bfactor_angst2, intercept, correlation)``; ``bfactor = 4 · slope`` (negative for a map
        whose amplitudes fall, the B-factor that sharpens it).
    """
    s = torch.arange(log_amplitude.shape[-1], dtype=torch.float64) / (box_px * pixel_size_angst)
    y = log_amplitude.detach().double().cpu()
    keep = (s >= 1 / low_angst) & (s <= 1 / high_angst) & torch.isfinite(y)
    if int(keep.sum()) < 3:
        return 0.0, float(y[torch.isfinite(y)][0]) if torch.isfinite(y).any() else 0.0, 0.0
    x, y = s[keep] ** 2, y[keep]
    xm, ym = x.mean(), y.mean()
    slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    intercept = float(ym - slope * xm)
    corr = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
    return 4.0 * slope, intercept, corr


def fsc_weight(volume_ft: torch.Tensor, fsc_curve: torch.Tensor, n: int) -> torch.Tensor:
    """Weight an rfft3 transform per shell by ``sqrt(2 FSC / (1 + FSC))`` (0 where FSC <= 0).

    ``fsc_curve`` is ``(n//2+1,)``; frequencies beyond Nyquist (the corners) get weight 0.
    """
    f = fsc_curve.to(volume_ft.real.dtype).clamp_min(0)
    weight = torch.sqrt(2 * f / (1 + f))
    radius = radius_grid_3d(n, device=volume_ft.device, dtype=volume_ft.real.dtype)
    shells = torch.round(radius).long()
    padded = torch.cat([weight.to(volume_ft.device), torch.zeros(1, dtype=weight.dtype, device=volume_ft.device)])
    return volume_ft * padded[shells.clamp(max=n // 2 + 1)]

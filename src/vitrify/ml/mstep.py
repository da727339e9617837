"""M-step pieces shared by EM and VDAM: spectra, class fractions, reconstruction, resolution.

Sums arrive in the template frame (:class:`~vitrify.ml.estep.EStepSums`); they are
inserted into padded class grids with the adjoint of the template sampling, then

* EM: ``F = data / (weight + 1 / (pad^2 T tau2))`` for shells >= ``minres_map`` (plain
  data/weight below), weights floored at 1/1000 of their shell mean (RELION without
  gridding correction);
* noise ``sigma2(s) = sum |x - c P|^2 / (2 N Npix(s))`` per optics group;
* class fractions, offset prior variance ``sum w |o|^2 / (2 sum w)``;
* SSNR ``data_vs_prior(s) = mean_shell(weight * pad^2 * T * tau2)`` and the next window
  radius (first shell with SSNR < 1, + 10 shells, as RELION's ``updateCurrentResolution``).

Every statistic can be blended with its previous value by ``mu`` (VDAM's moving averages).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vitrify.core.fourier import shell_index_2d, shell_sums
from vitrify.ml.estep import EStepSums
from vitrify.ml.fourier2d import image_ft
from vitrify.ml.model import MlModel
from vitrify.ml.templates import RotationTable, scatter_stacked_to_grids
from vitrify.ml.window import FourierWindow, pack, window_shell_sums


def reference_tau2(refs: torch.Tensor, window: FourierWindow) -> torch.Tensor:
    """Reference power per shell ``|F|^2 / 2``: ``(K, n, n)`` -> ``(K, n//2+1)`` float64 (0 beyond the window)."""
    f = pack(image_ft(refs), window.to(refs.device))
    hw = window.half_weight.to(refs.device).double()
    power = window_shell_sums((f.real.double() ** 2 + f.imag.double() ** 2) * hw, window)
    count = window_shell_sums(hw[None], window)
    out = torch.zeros(refs.shape[0], refs.shape[-1] // 2 + 1, dtype=torch.float64, device=refs.device)
    out[:, : window.radius + 1] = power / count.clamp_min(1e-30) / 2
    return out


def sums_to_grids(sums: EStepSums, table_for: Callable[[torch.Tensor], RotationTable], n_classes: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Template-frame sums -> padded grids ``(H, K, m, m//2+1)`` (complex data, real weight).

    Every frame (coarse, fine) that holds weight is inserted with the adjoint of its own
    sampling table (``table_for(psi_deg)``) and the grids are added.
    """
    frames = list(sums.frames.values())
    used = [fr for fr in frames if bool((fr.weight != 0).any())] or frames[:1]  # e.g. no coarse sums
    data = weight = None
    for frame in used:
        h, r, p = frame.weight.shape
        n_psi = r // n_classes
        table = table_for(frame.psi_deg)
        for i in range(h):  # one product per half-set: wider products run slower (cache)
            stacked = frame.data[i].reshape(n_classes, n_psi, 2 * p)
            d, w = scatter_stacked_to_grids(stacked[..., :p], stacked[..., p:],
                                            frame.weight[i].reshape(n_classes, n_psi, p), table)
            if data is None:
                data = torch.zeros(h, *d.shape, dtype=d.dtype, device=d.device)
                weight = torch.zeros(h, *w.shape, dtype=w.dtype, device=w.device)
            data[i] += d
            weight[i] += w
    return data, weight


def map_reconstruct(data: torch.Tensor, weight: torch.Tensor, tau2: torch.Tensor, tau2_fudge: float,
                    pad: int, radius: int, minres_map: int = 5) -> torch.Tensor:
    """Regularised (MAP) class transforms on padded grids.

    Parameters
    ----------
    data, weight
        ``(K, m, m//2+1)`` sums (complex, real).
    tau2
        ``(K, n//2+1)`` reference power per shell.

    Returns
    -------
    ``(K, m, m//2+1)`` complex64, zero beyond shell ``radius``.
    """
    m = data.shape[-2]
    shells = shell_index_2d(m, oversampling=pad, device=data.device)
    inside = shells <= radius
    w = weight.double()
    floor = shell_sums(w, shells, radius + 1, mean=True).clamp_min(1e-30) * 1e-3
    s_clamped = shells.clamp(max=radius)
    w = torch.maximum(w, floor[:, s_clamped])
    t2 = tau2.double()[:, shells.clamp(max=tau2.shape[1] - 1)]
    prior = torch.where(t2 > 0, 1.0 / (pad * pad * tau2_fudge * t2.clamp_min(1e-300)), torch.zeros_like(t2))
    prior = torch.where(shells >= minres_map, prior, torch.zeros_like(prior))
    out = data.to(torch.complex128) / (w + prior)
    return torch.where(inside, out, torch.zeros_like(out)).to(torch.complex64)


def data_vs_prior(weight: torch.Tensor, tau2: torch.Tensor, tau2_fudge: float, pad: int,
                  n_shells: int) -> torch.Tensor:
    """SSNR per class and shell ``(K, n_shells)`` from padded weight grids ``(K, m, m//2+1)``."""
    m = weight.shape[-2]
    shells = shell_index_2d(m, oversampling=pad, device=weight.device)
    t2 = tau2.double()[:, shells.clamp(max=tau2.shape[1] - 1)]
    return shell_sums(weight.double() * pad * pad * tau2_fudge * t2, shells, n_shells, mean=True)


def next_radius(dvp: torch.Tensor, box_px: int, incr_shells: int = 10, minres_map: int = 5) -> int:
    """Window radius of the next E-step from the SSNR ``(K, S)`` (RELION's current_size / 2)."""
    best = dvp.max(dim=0).values
    below = torch.nonzero(best[1:] < 1.0).flatten()
    maxres = int(below[0]) if below.numel() else best.shape[0] - 1  # first shell < 1, minus 1
    maxres = max(maxres, minres_map)
    return int(min(box_px // 2 - 1, maxres + incr_shells))


def update_sigma2(model: MlModel, sums: EStepSums, window: FourierWindow, mu: float) -> None:
    """Noise spectra from the residual sums (shells inside the pass window; others unchanged)."""
    radius = model.current_radius
    hw = window.half_weight[: window.pixels_within(radius)].double().to(sums.sigma2.device)
    npix = torch.zeros(radius + 1, dtype=torch.float64, device=hw.device)
    npix.index_add_(0, window.shell[: hw.shape[0]].to(hw.device), hw)
    for g in range(sums.sigma2.shape[0]):
        count = float(sums.group_count[g])
        if count <= 0:
            continue
        new = sums.sigma2[g, 1: radius + 1] / (2.0 * count * npix[1:].clamp_min(1e-30))
        old = model.sigma2[g, 1: radius + 1].to(new.device)
        val = mu * old + (1.0 - mu) * new
        val = torch.where(val > 1e-14, val, old)
        model.sigma2[g, 1: radius + 1] = val.to(model.sigma2.device)


def update_class_stats(model: MlModel, sums: EStepSums, mu: float) -> None:
    """Class fractions and the offset prior variance (moving averages with ``mu``)."""
    total = float(sums.class_weight.sum())
    if total <= 0:
        return
    pdf = mu * model.pdf_class + (1.0 - mu) * (sums.class_weight / total).to(model.pdf_class.device)
    model.pdf_class = pdf / pdf.sum()
    new_off = float(sums.offset_sq) / (2.0 * total)
    model.sigma2_offset_px = mu * model.sigma2_offset_px + (1.0 - mu) * new_off

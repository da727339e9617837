"""VDAM reference update: half-set gradients, moments, FSC-regularised step, class replacement.

Follows ``shared/spec/vdam.md`` section 5 on padded class grids ``(K, m, m//2+1)``:

* gradients per pseudo half-set h (row parity): ``g_h = data_h / max(1, weight_h)`` with
  ``data = sum w c (x - c P) / sigma2`` (template-frame sums minus ``weight * P``);
* first moments ``m1_h`` (beta1 0.9, the first use copies ``g_h``), a shared second
  moment ``m2 = 0.999 m2 + 0.001 |g2 - g1|^2 / (|(g1 + g2)/2|^2 + 1e-12)`` (initial 1);
* ``G = mean(m1) / (sqrt(m2) + 1e-12)``; noise per shell ``mean |m1_1 - m1_2|``;
* ``snr = 2 T P / noise`` (P = mean |F| per shell), ``fsc = snr / (1 + snr)`` and
  ``F += eta_k (fsc G - (1 - fsc) F)`` inside the window; the result is windowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vitrify.core.fourier import shell_index_2d, shell_sums
from vitrify.ml.fourier2d import images_from_padded, padded_ft

BETA1, BETA2, EPS = 0.9, 0.999, 1e-12


@dataclass
class Moments:
    """VDAM moments: ``m1`` ``(2, K, m, m//2+1)`` complex64, ``m2`` ``(K, m, m//2+1)`` float32."""

    m1: torch.Tensor
    m2: torch.Tensor

    @classmethod
    def zeros(cls, n_classes: int, m: int, device: torch.device) -> "Moments":
        """Fresh moments (m1 = 0, m2 = 1)."""
        half = m // 2 + 1
        return cls(torch.zeros(2, n_classes, m, half, dtype=torch.complex64, device=device),
                   torch.ones(n_classes, m, half, device=device))


def half_gradients(data: torch.Tensor, weight: torch.Tensor, refs_padded: torch.Tensor
                   ) -> torch.Tensor:
    """``g_h = (data_h - weight_h F) / max(1, weight_h)``.

    ``data`` ``(2, K, m, m//2+1)`` complex sums of ``w c x / sigma2``, ``weight`` the same
    shape (real), ``refs_padded`` ``(K, m, m//2+1)``; returns ``(2, K, m, m//2+1)``.
    """
    grad = data - weight * refs_padded[None]
    return grad / weight.clamp_min(1.0)


def update_moments(moments: Moments, grads: torch.Tensor, inside: torch.Tensor,
                   active: torch.Tensor) -> None:
    """Adam-like moment update inside the window for the ``active`` ``(K,)`` classes.

    ``grads`` ``(2, K, m, m//2+1)`` half-set gradients, ``inside`` ``(m, m//2+1)`` the window.
    A first moment that is still all zero (new run, replaced class) starts at the gradient.
    """
    m1 = moments.m1
    g = torch.where(inside, grads, torch.zeros_like(grads))
    fresh = (m1.abs().sum(dim=(-2, -1)) == 0)[..., None, None]  # (2, K, 1, 1)
    new_m1 = torch.where(fresh, g, torch.where(inside, BETA1 * m1 + (1 - BETA1) * g, m1))
    g1, g2 = grads[0], grads[1]
    rel = (g2 - g1).abs() ** 2 / (((g1 + g2) / 2).abs() ** 2 + EPS)
    new_m2 = torch.where(inside, BETA2 * moments.m2 + (1 - BETA2) * rel, moments.m2)
    act = active.to(m1.device)[:, None, None]
    moments.m1 = torch.where(act[None], new_m1, m1)
    moments.m2 = torch.where(act, new_m2, moments.m2)


def preconditioned_gradient(moments: Moments) -> torch.Tensor:
    """``G = ((m1_1 + m1_2) / 2) / (sqrt(m2) + eps)``: ``(K, m, m//2+1)`` complex."""
    return (moments.m1[0] + moments.m1[1]) / 2 / (torch.sqrt(moments.m2) + EPS)


def gradient_step(refs: torch.Tensor, moments: Moments, steps: torch.Tensor, tau2_fudge: float,
                  pad: int, radius: int, skip: torch.Tensor) -> torch.Tensor:
    """FSC-regularised reference update (RELION ``reconstructGrad`` with pseudo half-sets).

    Parameters
    ----------
    refs
        ``(K, n, n)`` current references.
    steps
        ``(K,)`` per-class step sizes eta_k.
    skip
        ``(K,)`` bool: classes left unchanged (empty or just replaced).

    Returns
    -------
    ``(K, n, n)`` updated references.
    """
    n = refs.shape[-1]
    f = padded_ft(refs, pad).to(torch.complex64)
    m = f.shape[-2]
    shells = shell_index_2d(m, oversampling=pad, device=refs.device)
    inside = shells <= radius
    g = preconditioned_gradient(moments)
    power = shell_sums(f.abs().double(), shells, radius + 1, mean=True)
    noise = shell_sums((moments.m1[0] - moments.m1[1]).abs().double(), shells, radius + 1, mean=True)
    snr = torch.where(noise > 0, 2.0 * tau2_fudge * power / noise.clamp_min(1e-300), torch.zeros_like(noise))
    fsc = (snr / (1.0 + snr)).clamp(0.0, 1.0).float()[:, shells.clamp(max=radius)]
    step = steps.float().to(refs.device)[:, None, None]
    new = f + step * (fsc * g - (1.0 - fsc) * f)
    new = torch.where(inside, new, torch.zeros_like(new))
    out = images_from_padded(new, n)
    return torch.where(skip[:, None, None].to(refs.device), refs, out)


def _gradient_source(grad_error: torch.Tensor, pdf_class: torch.Tensor) -> torch.Tensor:
    """RELION-4: ``mean |G_k|^2 * pdf_k`` (favours classes with large amplitudes, e.g. ice blobs)."""
    return grad_error * pdf_class


def _largest_source(grad_error: torch.Tensor, pdf_class: torch.Tensor) -> torch.Tensor:
    """vitrify's default: the most populated class is split (classes with a gradient only)."""
    return torch.where(grad_error > 0, pdf_class.to(grad_error.dtype), torch.zeros_like(grad_error))


#: ``"worst"`` picks the inactive class as ``"largest"`` does but refills it from the worst-fitting
#: particles (:mod:`vitrify.ml.optimiser`), not from a copy
REPLACEMENT_SOURCES = {"largest": _largest_source, "gradient": _gradient_source, "worst": _largest_source}


def choose_replacement(grad_error: torch.Tensor, pdf_class: torch.Tensor, threshold: float,
                       source: str = "largest") -> tuple[int, int] | None:
    """Inactive-class replacement: ``(a, b)`` = (class to drop, class to copy) or None.

    ``a = argmin pdf`` if ``pdf_a < threshold / n_active``; ``b`` = argmax of the
    :data:`REPLACEMENT_SOURCES` score: ``"largest"`` (default) the most populated class,
    ``"gradient"`` RELION-4's ``mean |G_k|^2 * pdf_k``. ``grad_error`` ``(K,)`` is ``mean |G_k|^2``.
    """
    if threshold <= 0:
        return None
    err = REPLACEMENT_SOURCES[source](grad_error, pdf_class)
    b = int(torch.argmax(err))
    a = int(torch.argmin(pdf_class))
    n_active = int((pdf_class > 0).sum())
    if n_active == 0 or float(err[b]) <= 0:
        return None
    if float(pdf_class[a]) < threshold / n_active:
        return a, b
    return None

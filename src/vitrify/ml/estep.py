"""The 2D expectation step: one real GEMM per particle block, posterior, M-step sums.

For a particle ``x`` (packed window pixels), CTF ``c``, noise ``sigma2`` and half-plane
weight ``h``, the log-likelihood of template ``P_r`` (class x psi) at shift ``t`` is

    L = Re<h c x s_t / sigma2, P_r> - 1/2 <h c^2 / sigma2, |P_r|^2> - 1/2 <h |x|^2 / sigma2>

(see ``shared/design/estep.md``). Term 1 is a real GEMM over ``[Re | Im]``-stacked
pixels; term 2 a GEMM ``T`` times smaller; term 3 a constant per particle. Shifts are
phase ramps: the particle's previous offset is folded into ``x`` first, then the grid
of ``T`` offset steps is one ``(T, P)`` table shared by all particles.

Posterior: log priors (class fraction, Gaussian offset prior) are added, the per-particle
maximum subtracted, weights below ``exp(-87)`` zeroed, and only the smallest set of
hypotheses holding ``adaptive_fraction`` of the mass (at most ``max_significant``) is
kept (RELION's significance rule). The M-step sums are accumulated densely in the
template frame: ``data_r = sum w * h c x s / sigma2`` (a second GEMM) and
``weight_r = sum w * h c^2 / sigma2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NEG_CLAMP = -87.0


@dataclass(frozen=True)
class Hypotheses:
    """The search grid shared by all particles of a pass.

    Attributes
    ----------
    templates
        ``(R, P)`` complex64, R = K * n_psi rotated class templates (class-major).
    log_prior_class
        ``(R,)`` float32, log class fraction of each template's class.
    shifts_px
        ``(T, 2)`` float32 (x, y) offset steps added to each particle's previous offset.
    n_classes, n_psi
        Shape of R.
    sigma_offset_px
        Standard deviation of the Gaussian offset prior (centred on 0), pixels.
    """

    templates: torch.Tensor
    log_prior_class: torch.Tensor
    shifts_px: torch.Tensor
    n_classes: int
    n_psi: int
    sigma_offset_px: float


@dataclass
class BlockResult:
    """Per-particle outcome of a block (``B`` particles); tensors on the engine's device."""

    best_class: torch.Tensor      # (B,) long
    best_psi_index: torch.Tensor  # (B,) long
    best_offset_px: torch.Tensor  # (B, 2) float32 absolute (x, y)
    pmax: torch.Tensor            # (B,) float32
    n_significant: torch.Tensor   # (B,) long
    log_likelihood: torch.Tensor  # (B,) float64


@dataclass
class EStepSums:
    """M-step sums of one E-step pass, per half-set ``H`` (1 for EM, 2 for VDAM).

    ``data`` ``(H, R, P)`` complex, ``weight`` ``(H, R, P)`` float32 (template frame);
    ``class_weight`` ``(K,)``, ``sigma2`` ``(G, S)`` and ``group_count`` ``(G,)`` float64
    (G optics groups, S = window radius + 1 shells), ``offset_sq`` (weighted sum of squared
    offsets, px^2), ``shell_of`` ``(P,)`` long (shell of each window pixel) and ``n_particles``.
    """

    data: torch.Tensor
    weight: torch.Tensor
    class_weight: torch.Tensor
    sigma2: torch.Tensor
    group_count: torch.Tensor
    offset_sq: torch.Tensor
    shell_of: torch.Tensor
    n_particles: int = 0

    @classmethod
    def zeros(cls, halves: int, r: int, k: int, groups: int, shell_of: torch.Tensor,
              n_shells: int) -> "EStepSums":
        """Empty sums for R templates, P = len(shell_of) pixels, K classes, G groups, S shells."""
        device, p = shell_of.device, shell_of.shape[0]
        f64 = dict(device=device, dtype=torch.float64)
        return cls(data=torch.zeros(halves, r, p, device=device, dtype=torch.complex64),
                   weight=torch.zeros(halves, r, p, device=device),
                   class_weight=torch.zeros(k, **f64), sigma2=torch.zeros(groups, n_shells, **f64),
                   group_count=torch.zeros(groups, **f64), offset_sq=torch.zeros((), **f64),
                   shell_of=shell_of)


def phase_table(shifts_px: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor, n: int) -> torch.Tensor:
    """Phase ramps translating an image by ``+shift``: ``(T, 2)`` x ``(P,)`` -> ``(T, P)`` complex64.

    A real-space translation by ``(ox, oy)`` multiplies the transform by
    ``exp(-2 pi i (kx ox + ky oy) / n)`` (RELION: the image is shifted by +origin).
    """
    arg = (shifts_px[:, :1].double() * kx[None].double() + shifts_px[:, 1:].double() * ky[None].double())
    arg = arg * (-2.0 * math.pi / n)
    return torch.polar(torch.ones_like(arg), arg).to(torch.complex64)


def stack_real(z: torch.Tensor) -> torch.Tensor:
    """``(..., P)`` complex -> ``(..., 2P)`` float32 ``[Re | Im]``."""
    return torch.cat([z.real, z.imag], dim=-1).float()


def score_block(y_shifted: torch.Tensor, q: torch.Tensor, templates_stacked: torch.Tensor,
                template_power: torch.Tensor) -> torch.Tensor:
    """Scores ``(B, T, R)`` without the per-particle constant or priors.

    Parameters
    ----------
    y_shifted
        ``(B, T, 2P)`` float32, stacked ``h c x s_t / sigma2``.
    q
        ``(B, P)`` float32, ``h c^2 / sigma2``.
    templates_stacked
        ``(2P, R)`` float32.
    template_power
        ``(P, R)`` float32, ``|P_r|^2``.
    """
    b, t, p2 = y_shifted.shape
    scores = torch.mm(y_shifted.reshape(b * t, p2), templates_stacked).reshape(b, t, -1)
    bias = torch.mm(q, template_power)  # (B, R)
    return scores.sub_(0.5 * bias[:, None, :])


def significant_weights(log_w: torch.Tensor, fraction: float, max_significant: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised, truncated posterior weights from log-weights ``(B, H)``.

    Returns ``(weights (B, H) float32 summing to 1, log-normaliser (B,) float64,
    pmax (B,), n_significant (B,) long)``. Weights below ``exp(-87)`` of the maximum are
    zero; of the rest the smallest set holding ``fraction`` of the mass (capped at
    ``max_significant`` if > 0) is kept.
    """
    top = log_w.max(dim=1, keepdim=True).values
    rel = log_w - top
    w = torch.where(rel > NEG_CLAMP, torch.exp(rel.clamp_min(NEG_CLAMP)), torch.zeros_like(rel))
    total = w.sum(dim=1, dtype=torch.float64)
    log_norm = top.squeeze(1).double() + torch.log(total)
    cap = w.shape[1] if max_significant <= 0 else min(int(max_significant), w.shape[1])
    thresh, n_sig = _count_significant(w, total, fraction, cap)
    w = torch.where(w >= thresh, w, torch.zeros_like(w))
    kept = w.sum(dim=1, keepdim=True)
    pmax = (1.0 / total).float()  # the max weight is exp(0) = 1
    return w / kept, log_norm, pmax, n_sig


def _count_significant(w: torch.Tensor, total: torch.Tensor, fraction: float, cap: int,
                       first: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight threshold ``(B, 1)`` and number ``(B,)`` of the significant weights.

    A top-``first`` pass settles most particles; only those whose ``first`` largest weights
    hold less than ``fraction`` of the mass are sorted further (up to ``cap``).
    """
    k0 = min(first, cap)
    top = torch.topk(w, k0, dim=1).values
    csum = torch.cumsum(top.double(), dim=1)
    need = (csum < fraction * total[:, None]).sum(dim=1) + 1
    if k0 < cap:
        broad = torch.nonzero(need > k0).flatten()
        if broad.numel():
            full = torch.topk(w[broad], cap, dim=1).values
            c2 = torch.cumsum(full.double(), dim=1)
            need_b = (c2 < fraction * total[broad, None]).sum(dim=1) + 1
            n_sig = need.clamp(max=k0).clone()
            n_sig[broad] = need_b.clamp(max=cap)
            thresh = top[:, -1:].clone()
            thresh[broad] = full.gather(1, (n_sig[broad] - 1)[:, None])
            small = torch.nonzero(need <= k0).flatten()
            thresh[small] = top[small].gather(1, (n_sig[small] - 1)[:, None])
            return thresh, n_sig
    n_sig = need.clamp(max=k0)
    return top.gather(1, (n_sig - 1)[:, None]), n_sig


def run_block(x: torch.Tensor, ctf: torch.Tensor, prev_offset_px: torch.Tensor, half: torch.Tensor,
              group: int, inv_sigma2: torch.Tensor, hw: torch.Tensor, kx: torch.Tensor,
              ky: torch.Tensor, n: int, hyp: Hypotheses, stacked: torch.Tensor,
              power: torch.Tensor, table: torch.Tensor, sums: EStepSums, fraction: float,
              max_significant: int) -> BlockResult:
    """E-step of one block of ``B`` particles of one optics group, accumulating into ``sums``.

    Parameters
    ----------
    x
        ``(B, P)`` complex64 particle transforms (window prefix).
    ctf
        ``(B, P)`` float32.
    prev_offset_px
        ``(B, 2)`` float32 previous (x, y) offsets.
    half
        ``(B,)`` long half-set (0 or 1; all 0 when ``sums`` has one half).
    inv_sigma2, hw, kx, ky
        ``(P,)`` window-prefix spectra: 1/sigma2 of the group, half weights, frequencies.
    stacked, power
        ``(2P, R)`` stacked templates and ``(P, R)`` their power.
    table
        ``(T, P)`` complex64 phase table of ``hyp.shifts_px``.
    """
    b, p = x.shape
    t = table.shape[0]
    y = x * (ctf * hw * inv_sigma2)
    y = y * phase_table(prev_offset_px, kx, ky, n)  # fold the previous offset in
    q = ctf * ctf * hw * inv_sigma2
    ys = stack_real(y[:, None, :] * table[None])  # (B, T, 2P)
    scores = score_block(ys, q, stacked, power)
    offsets = prev_offset_px[:, None, :] + hyp.shifts_px[None]  # (B, T, 2)
    log_prior_off = -(offsets * offsets).sum(-1) / (2.0 * hyp.sigma_offset_px ** 2)
    scores += log_prior_off[:, :, None] + hyp.log_prior_class[None, None, :]
    w, log_norm, pmax, n_sig = significant_weights(scores.reshape(b, -1), fraction, max_significant)
    best = torch.argmax(w, dim=1)
    best_t, best_r = best // scores.shape[2], best % scores.shape[2]
    w = w.reshape(b, t, -1)
    const = 0.5 * (x.real.double() ** 2 + x.imag.double() ** 2).mul(hw * inv_sigma2).sum(1)
    _accumulate(sums, w, ys, q, x, hw, inv_sigma2, offsets, half, group, hyp, power, stacked)
    return BlockResult(best_class=best_r // hyp.n_psi, best_psi_index=best_r % hyp.n_psi,
                       best_offset_px=offsets[torch.arange(b, device=x.device), best_t],
                       pmax=pmax, n_significant=n_sig, log_likelihood=log_norm - const)


def _weighted_template_sums(w: torch.Tensor, ys: torch.Tensor, dense_fraction: float = 0.05
                            ) -> torch.Tensor:
    """``w^T ys``: ``(M, R)`` weights x ``(M, 2P)`` rows -> ``(R, 2P)``.

    Truncated posteriors are sparse (RELION's significance rule; at most ``maxsig`` per
    particle in VDAM): below ``dense_fraction`` non-zeros the sum runs
    over the non-zeros only (sparse x dense product), else one dense GEMM.
    """
    sparse = w.t().to_sparse()
    if sparse.values().numel() > dense_fraction * w.numel():
        return torch.mm(w.t(), ys)
    return torch.sparse.mm(sparse, ys)


def _accumulate(sums: EStepSums, w: torch.Tensor, ys: torch.Tensor, q: torch.Tensor,
                x: torch.Tensor, hw: torch.Tensor, inv_sigma2: torch.Tensor, offsets: torch.Tensor,
                half: torch.Tensor, group: int, hyp: Hypotheses, power: torch.Tensor,
                stacked: torch.Tensor) -> None:
    """Add a block's weighted sums (template-frame data and weights, sigma2, classes, offsets)."""
    b, t, r = w.shape
    p = q.shape[1]
    w_r = w.sum(dim=1)  # (B, R)
    sigma2 = 1.0 / inv_sigma2
    cross = torch.zeros(p, device=x.device, dtype=torch.float64)
    for h in range(sums.data.shape[0]):
        rows = half == h
        if not bool(rows.any()):
            continue
        acc = _weighted_template_sums(w[rows].reshape(-1, r), ys[rows].reshape(-1, 2 * p))
        sums.data[h] += torch.complex(acc[:, :p], acc[:, p:])
        sums.weight[h] += torch.mm(w_r[rows].t(), q[rows])
        # sum_r Re(acc_r conj P_r), per pixel, for the sigma2 cross term
        cross += (acc * stacked.t()).reshape(r, 2, p).sum(dim=(0, 1)).double()
    sums.class_weight += w_r.reshape(b, hyp.n_classes, hyp.n_psi).sum(dim=(0, 2)).double()
    power_term = (torch.mm(w_r, power.t()) * q).sum(0).double()  # sum_b q * sum_r w |P|^2
    data_term = (x.real.double() ** 2 + x.imag.double() ** 2).mul(hw).sum(0)
    resid = data_term + (power_term - 2.0 * cross) * sigma2.double()
    sums.sigma2[group].index_add_(0, sums.shell_of[:p], resid)
    sums.group_count[group] += b
    sums.offset_sq += (w.sum(2).double() * (offsets.double() ** 2).sum(-1)).sum()
    sums.n_particles += b

"""Adaptive oversampling: the fine pass over the children of significant coarse poses.

RELION's ``--oversampling 1`` in 2D: every significant coarse pose (class k, psi_i, shift t)
has two psi children ``psi_i -+ step/4`` and four shift children ``t + (-+s/4, -+s/4)``;
the 8 children are scored in the *current* window (the coarse pass may use a smaller
one), their posterior is normalised per particle, truncated by the same significance
rule, and only the kept children enter the M-step sums, in the fine template frame.

Fine frame layout: psi index ``f = 2 i + j`` (``psi_i + (j - 1/2) step/2``), template
``r_f = 2 r + j`` for coarse template ``r = k n_psi + i``; shift index ``4 t + j``.
Scores are sampled dense x dense products (SDDMM) of the shifted particles and the fine
templates, evaluated at the children of the significant coarse poses only; sums are sparse x
dense products over the unique (particle, fine shift) rows.
"""

from __future__ import annotations

import math
import warnings

import torch

from vitrify.ml.estep import (NEG_CLAMP, BlockResult, EStepSums, Frame, PassGrid, add_model_terms,
                              count_significant, offset_log_prior, stack_real)

_SHIFT_CHILDREN = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]])


def fine_psi(psi_deg: torch.Tensor) -> torch.Tensor:
    """Fine psi grid ``(2 n,)`` from a uniform coarse grid ``(n,)``: children ``psi -+ step/4``."""
    step = 360.0 / psi_deg.shape[0]
    return torch.stack([psi_deg - step / 4, psi_deg + step / 4], -1).reshape(-1)


def fine_shifts(shifts_px: torch.Tensor, step_px: float) -> torch.Tensor:
    """Fine shifts ``(4 T, 2)`` from coarse ``(T, 2)``: children ``t + (-+step/4, -+step/4)``."""
    kids = _SHIFT_CHILDREN.to(shifts_px.device, shifts_px.dtype) * (step_px / 4.0)
    return (shifts_px[:, None, :] + kids[None]).reshape(-1, 2)


def _fine_scores(y: torch.Tensor, q: torch.Tensor, bi: torch.Tensor, ti: torch.Tensor, ri: torch.Tensor,
                 f: Frame, budget_bytes: int) -> torch.Tensor:
    """Scores ``(M, 4, 2)`` of the children of coarse poses ``(bi, ti, ri)`` (no priors/constant).

    Poses arrive sorted by (particle, shift, template), so the poses sharing a (particle,
    coarse shift) form runs. The 4 shifted copies of a particle are built once per run,
    and only the needed dot products are computed, by sampled dense x dense products over
    a CSR pattern: row (run, shift child j) holds the columns ``2 r + i`` of the run's poses.
    Nothing of size ``M x 2P`` is gathered.
    """
    m, p, c = bi.shape[0], f.n_pixels, f.n_children
    out = torch.empty(m, 4, c, device=y.device)
    jt = torch.arange(4, device=y.device)
    n_t = f.table.shape[0] // 4
    chunk = max(1, int(budget_bytes // (16 * p)))
    for s in range(0, m, chunk):
        b, t, r = bi[s:s + chunk], ti[s:s + chunk], ri[s:s + chunk]
        runs, inv, counts = torch.unique_consecutive(b * n_t + t, return_inverse=True, return_counts=True)
        shifted = stack_real(y[runs // n_t][:, None, :] * f.table[4 * (runs % n_t)[:, None] + jt])  # (U, 4, 2P)
        cols = (c * r[:, None] + torch.arange(c, device=y.device)).reshape(-1)  # (m * c,) pose order
        first = torch.cumsum(counts, 0) - counts  # first pose of each run
        # entry of (pose, j, i) in row-major CSR order: run block of 4 c n_u, row j of c n_u entries
        local = torch.arange(b.shape[0], device=y.device) - first[inv]
        pos = (4 * c * first[inv] + c * local)[:, None, None] + (c * counts[inv])[:, None, None] * jt[None, :, None] \
            + torch.arange(c, device=y.device)[None, None, :]  # (m, 4, c)
        col_csr = torch.empty(4 * c * b.shape[0], dtype=torch.long, device=y.device)
        col_csr[pos.reshape(-1)] = cols.reshape(-1, 1, c).expand(-1, 4, c).reshape(-1)
        dots = _sampled(shifted.reshape(-1, 2 * p), f.rows, (c * counts).repeat_interleave(4), col_csr)
        bias = _sampled(q[runs // n_t], f.power, c * counts, cols)  # (m * c,) pose order
        out[s:s + chunk] = dots[pos].sub_(0.5 * bias.reshape(-1, 1, c))
    return out


def _sampled(a: torch.Tensor, b: torch.Tensor, row_lengths: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Values ``a[i] . b[j]`` ``(E,)`` at the CSR pattern (``row_lengths`` ``(len(a),)``, ``cols`` ``(E,)``)."""
    crow = torch.zeros(a.shape[0] + 1, dtype=torch.long, device=a.device)
    torch.cumsum(row_lengths, 0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse CSR support is labelled beta
        pattern = torch.sparse_csr_tensor(crow, cols, torch.zeros(cols.shape[0], dtype=a.dtype, device=a.device),
                                          (a.shape[0], b.shape[0]), check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, a, b.t(), beta=0.0).values()


def fine_pass(y: torch.Tensor, q: torch.Tensor, w: torch.Tensor, prev_offset_px: torch.Tensor,
              half: torch.Tensor, grid: PassGrid, sums: EStepSums) -> BlockResult:
    """Fine pass of ``B`` particles.

    Parameters
    ----------
    y, q
        ``(B, P)`` prepared particles and CTF weights in the current window.
    w
        ``(B, T, R)`` truncated coarse posterior (non-zero = significant).
    prev_offset_px
        ``(B, 2)`` previous offsets; ``half`` ``(B,)`` half-set.

    Returns
    -------
    :class:`BlockResult` whose ``log_likelihood`` lacks the per-particle constant
    (``n_significant`` is left empty: the caller keeps the coarse count).
    """
    f = grid.fine
    c = f.n_children
    b, t, r = w.shape
    bi, ti, ri = torch.nonzero(w > 0, as_tuple=True)  # sorted by particle
    scores = _fine_scores(y, q, bi, ti, ri, f, grid.budget_bytes)
    sums.clock.lap("fine_scores", scores)
    dev = y.device
    tf = (4 * ti[:, None] + torch.arange(4, device=dev))  # (M, 4)
    rf = (c * ri[:, None] + torch.arange(c, device=dev))  # (M, c)
    offsets = prev_offset_px[bi][:, None, :] + f.shifts_px[tf]  # (M, 4, 2)
    scores += offset_log_prior(offsets, grid.sigma_offset_px)[:, :, None]
    scores += f.log_prior_class[rf][:, None, :] - math.log(4.0 * c)
    m = bi.shape[0]
    eb = bi.repeat_interleave(4 * c)
    etf = tf[:, :, None].expand(m, 4, c).reshape(-1)
    erf = rf[:, None, :].expand(m, 4, c).reshape(-1)
    if grid.posterior_power != 1.0:  # tempered posterior, as in the coarse pass
        scores *= grid.posterior_power
    wf, log_norm, pmax, best = _posterior(scores.reshape(-1), eb, b, grid.fraction)
    keep = torch.nonzero(wf > 0).flatten()
    sums.n_hypotheses += m * 4 * c
    sums.n_fine_hypotheses += m * 4 * c
    sums.clock.lap("fine_posterior", wf)
    accumulate_sparse(sums, f, eb[keep], etf[keep], erf[keep], wf[keep], y, q, prev_offset_px, half,
                      grid.n_classes)
    sums.clock.lap("fine_accumulate", y)
    return BlockResult(best_class=erf[best] // f.n_psi, best_psi_deg=f.psi_deg[erf[best] % f.n_psi],
                       best_offset_px=prev_offset_px + f.shifts_px[etf[best]], pmax=pmax,
                       n_significant=None, log_likelihood=log_norm,
                       n_fine=torch.bincount(bi, minlength=b) * 4 * c)


def _posterior(s: torch.Tensor, eb: torch.Tensor, b: int, fraction: float
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-particle normalised, truncated weights of flat entries ``s`` ``(E,)`` of particles ``eb``.

    Returns weights ``(E,)``, log-normaliser ``(B,)`` float64, pmax ``(B,)`` and the entry
    index ``(B,)`` of each particle's best child.
    """
    top = torch.full((b,), -torch.inf, device=s.device).scatter_reduce_(0, eb, s, "amax")
    rel = s - top[eb]
    w = torch.where(rel > NEG_CLAMP, torch.exp(rel.clamp_min(NEG_CLAMP)), torch.zeros_like(rel))
    total = torch.zeros(b, dtype=torch.float64, device=s.device).index_add_(0, eb, w.double())
    counts = torch.bincount(eb, minlength=b)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(s.shape[0], device=s.device) - start[eb]
    padded = torch.zeros(b, int(counts.max()), device=s.device)
    padded[eb, pos] = w
    thresh, _ = count_significant(padded, total, fraction, padded.shape[1])
    w = torch.where(w >= thresh[eb, 0], w, torch.zeros_like(w))
    kept = torch.zeros(b, device=s.device).index_add_(0, eb, w)
    best = start + padded.argmax(dim=1)
    return w / kept[eb], top.double() + torch.log(total), (1.0 / total).float(), best


def accumulate_sparse(sums: EStepSums, f: Frame, eb: torch.Tensor, etf: torch.Tensor, erf: torch.Tensor,
                      w: torch.Tensor, y: torch.Tensor, q: torch.Tensor, prev_offset_px: torch.Tensor,
                      half: torch.Tensor, n_classes: int) -> None:
    """Add fine-frame sums of weighted children ``(particle eb, shift etf, template erf, weight w)``."""
    n_t = f.table.shape[0]
    fs = sums.frames["fine"]
    uniq, inv = torch.unique(eb * n_t + etf, return_inverse=True)
    rows = stack_real(y[uniq // n_t] * f.table[uniq % n_t])  # (U, 2P)
    touched, tr = torch.unique(erf, return_inverse=True)  # only templates that received weight
    n_r = touched.shape[0]
    frame = Frame(f.rows[touched], f.power[touched], f.table, f.shifts_px, f.log_prior_class, f.psi_deg, f.n_psi,
                  f.n_children)
    eh = half[eb]
    for h in range(fs.data.shape[0]):
        sel = torch.nonzero(eh == h).flatten()
        if not sel.numel():
            continue
        wd = torch.sparse_coo_tensor(torch.stack([tr[sel], inv[sel]]), w[sel], (n_r, rows.shape[0]),
                                     check_invariants=False)
        acc = torch.sparse.mm(wd.coalesce(), rows)
        wb = torch.sparse_coo_tensor(torch.stack([tr[sel], eb[sel]]), w[sel], (n_r, q.shape[0]),
                                     check_invariants=False)
        wq = torch.sparse.mm(wb.coalesce(), q)
        fs.data[h].index_add_(0, touched, acc)
        fs.weight[h].index_add_(0, touched, wq)
        add_model_terms(sums, frame, acc, wq)
    sums.class_weight.index_add_(0, erf // f.n_psi, w.double())
    offsets = prev_offset_px[eb] + f.shifts_px[etf]
    sums.offset_sq += (w.double() * (offsets.double() ** 2).sum(-1)).sum()

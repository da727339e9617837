"""One particle block through the E-step: the coarse pass, the fine pass of the particles that
need one, and their M-step sums.

The coarse pass's pieces live in :mod:`vitrify.ml.estep`, the fine pass in
:mod:`vitrify.ml.finepass` (which builds on estep); this module joins them, so neither of the
two imports the other's caller.
"""

from __future__ import annotations

import torch

from vitrify.ml.estep import (Batch, BlockResult, EStepSums, PassGrid, accumulate_dense, add_data_term,
                              offset_log_prior, prepare, score_block, shifted_stack, truncated_posterior)
from vitrify.ml.finepass import fine_pass


def run_block(batch: Batch, grid: PassGrid, sums: EStepSums) -> BlockResult:
    """E-step of one block, accumulating into ``sums`` (coarse pass, then the fine pass if any)."""
    clock = sums.clock
    clock.start()
    y, q = prepare(batch)
    b = y.shape[0]
    c = grid.coarse
    pc = c.n_pixels
    ys = shifted_stack(y[:, :pc].contiguous(), c.table)  # (B, T, 2Pc)
    clock.lap("pack", ys)
    scores = score_block(ys, q[:, :pc], c.rows, c.power)
    clock.lap("gemm", scores)
    t, r = scores.shape[1], scores.shape[2]
    offsets = batch.prev_offset_px[:, None, :] + c.shifts_px[None]  # (B, T, 2)
    scores.add_(offset_log_prior(offsets, grid.sigma_offset_px)[:, :, None]).add_(c.log_prior_class[None, None, :])
    if batch.allowed is not None:  # classes a particle may not take
        scores.view(b, scores.shape[1], grid.n_classes, -1).masked_fill_(~batch.allowed[:, None, :, None], -1e30)
    if grid.posterior_power != 1.0:  # tempered posterior
        scores.mul_(grid.posterior_power)
    w, log_norm, pmax, n_sig, best = truncated_posterior(scores.reshape(b, -1), grid.fraction,
                                                         grid.max_significant)
    del scores
    sums.n_hypotheses += b * t * r
    const = 0.5 * (batch.x.real.double() ** 2 + batch.x.imag.double() ** 2).mul(
        batch.hw * batch.inv_sigma2).sum(1)
    best_t, best_r = best // r, best % r
    res = BlockResult(best_class=best_r // c.n_psi, best_psi_deg=c.psi_deg[best_r % c.n_psi],
                      best_offset_px=offsets[torch.arange(b, device=y.device), best_t],
                      pmax=pmax, n_significant=n_sig, log_likelihood=log_norm - const,
                      n_fine=torch.zeros(b, dtype=torch.long, device=y.device))
    w = w.reshape(b, t, r)
    clock.lap("posterior", w)
    fine = (n_sig <= grid.fine_cap) if grid.fine is not None else torch.zeros_like(n_sig, dtype=torch.bool)
    coarse_rows = torch.nonzero(~fine).flatten()
    if coarse_rows.numel():
        full = ys if pc == y.shape[1] else None
        accumulate_dense(sums, grid.coarse_full, w[coarse_rows], y[coarse_rows], q[coarse_rows],
                         offsets[coarse_rows], batch.half[coarse_rows],
                         None if full is None else full[coarse_rows], grid.n_classes)
        clock.lap("accumulate", y)
    fine_rows = torch.nonzero(fine).flatten()
    if fine_rows.numel():
        sub = fine_pass(y[fine_rows], q[fine_rows], w[fine_rows], batch.prev_offset_px[fine_rows],
                        batch.half[fine_rows], grid, sums)
        for name in ("best_class", "best_psi_deg", "best_offset_px", "pmax", "n_fine"):
            getattr(res, name)[fine_rows] = getattr(sub, name)
        res.log_likelihood[fine_rows] = sub.log_likelihood - const[fine_rows]
    add_data_term(sums, batch)
    clock.lap("accumulate", y)
    return res

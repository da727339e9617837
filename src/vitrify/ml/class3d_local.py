"""Local angular searches of 3D classification (RELION ``--sigma_ang``), K classes.

Each particle is searched around its previous pose in every class with the local search of
auto-refinement (:func:`vitrify.ml.local_search.local_block`: a rotation stencil within 3 sigma under
a Gaussian prior on the angle, then the best coarse pose's 27 children x 9 offset children). The
class posterior of a particle is its per-class evidence (the log-sum of its fine posterior in that
class) times the class fraction, normalised over the K classes; each class's back-projection is
weighted by it. The particle keeps the pose of its most probable class.
"""

from __future__ import annotations

import torch

from vitrify.core.euler import euler_to_matrix, matrix_to_euler
from vitrify.ml.estep import EStepSums, phase_table
from vitrify.ml.local_search import insert_templates, local_block, local_grid_of, read_templates
from vitrify.ml.slices import fold_plane0, volume_grids
from vitrify.ml.vdam3d import reference_tau2


def local_class_estep(ref, indices: torch.Tensor, halves: int, sigma_deg: float, half_of: torch.Tensor | None = None):
    """Local E-step of ``particles[indices]`` against the K classes of ``ref`` (a
    :class:`vitrify.ml.class3d.Classifier3D`): ``(sums, data, weight)`` as :meth:`Refiner3D.estep`
    returns them (grids ``(H, K, g, g, g//2+1)``); poses, classes and pmax are updated in place."""
    model, parts, win = ref.model, ref.particles, ref.window
    dev = parts.ft.device
    w = win.to(dev)
    grids = volume_grids(model.refs)
    model.tau2 = reference_tau2(grids, ref.shells, model.current_radius, model.box_px)
    k, g = model.n_classes, grids.shape[-3]
    radius, n = model.current_radius, model.box_px
    lg = local_grid_of(ref, sigma_deg)
    p, pc = lg.n_pixels, lg.n_coarse_pixels
    acc = torch.zeros(halves, k, g * g * (g // 2 + 1), 3, device=dev)
    f64 = dict(device=dev, dtype=torch.float64)
    sums = EStepSums(frames={}, class_weight=torch.zeros(k, **f64),
                     sigma2=torch.zeros(parts.n_groups, radius + 1, **f64),
                     group_count=torch.zeros(parts.n_groups, **f64), offset_sq=torch.zeros((), **f64),
                     shell_of=w.shell[:p])
    inv_sigma2 = 1.0 / model.sigma2.to(dev).clamp_min(1e-30)
    log_pdf = torch.log(model.pdf_class.to(dev).clamp_min(1e-30))
    indices = indices.to(dev)
    halves_of = (half_of.to(dev) if half_of is not None else
                 (indices % 2 if halves == 2 else torch.zeros_like(indices)))
    per = 8 * k * (lg.coarse.rotations.shape[0] * pc + 27 * p + 12 * p)
    bsize = max(1, int(ref.settings.budget_bytes // per))
    for start in range(0, indices.numel(), bsize):
        idx = indices[start:start + bsize]
        half = halves_of[idx] if half_of is not None else halves_of[start:start + bsize]
        _block(ref, grids, idx, half, inv_sigma2, log_pdf, w, p, n, lg, acc, sums)
    data = torch.complex(acc[..., 0], acc[..., 1]).reshape(halves, k, g, g, g // 2 + 1)
    weight = acc[..., 2].reshape(halves, k, g, g, g // 2 + 1)
    return sums, fold_plane0(data), fold_plane0(weight)


def _block(ref, grids, idx, half, inv_sigma2, log_pdf, w, p, n, lg, acc, sums: EStepSums) -> None:
    """One block of particles through the K local searches, the class posterior and the insertion."""
    parts = ref.particles
    x, ctf, groups = parts.ft[idx, :p], parts.ctf[idx, :p], parts.group[idx]
    inv_s2 = inv_sigma2[groups][:, w.shell[:p]].float()
    rots = euler_to_matrix(ref.angles_deg[idx, 0], ref.angles_deg[idx, 1], ref.angles_deg[idx, 2]).float()
    results = [local_block(grids[c], rots, parts.offset_px[idx], x, ctf, inv_s2, w.half_weight[:p], w.kx[:p],
                           w.ky[:p], n, lg) for c in range(grids.shape[0])]
    evidence = torch.stack([r[3].double() for r in results], 1) + log_pdf[None]  # (B, K)
    post = torch.softmax(evidence, 1)
    best_k = post.argmax(1)
    ar = torch.arange(idx.numel(), device=idx.device)
    best_rot = torch.stack([r[0] for r in results], 1)[ar, best_k]
    rot, tilt, psi = matrix_to_euler(best_rot.double())
    ref.angles_deg[idx] = torch.stack([rot, tilt, psi], -1).to(ref.angles_deg)
    parts.offset_px[idx] = torch.stack([r[1] for r in results], 1)[ar, best_k].float()
    parts.pmax[idx] = (torch.stack([r[2] for r in results], 1)[ar, best_k].double() * post[ar, best_k]).float()
    parts.class_index[idx] = best_k
    parts.log_likelihood[idx] = torch.logsumexp(evidence, 1)
    parts.n_significant[idx] = torch.stack([r[4] for r in results], 1)[ar, best_k]
    for c, (_, _, _, _, _, rf, weights, foffs, y, q) in enumerate(results):
        wk = weights * post[:, c, None, None].float()  # (B, 27, 9)
        ftable = phase_table(foffs.reshape(-1, 2), w.kx[:p], w.ky[:p], n).reshape(*foffs.shape[:2], p)
        wd = torch.einsum("bmt,btp->bmp", wk.to(torch.complex64), y[:, None, :] * ftable)
        wm = wk.sum(2)
        for h in torch.unique(half).tolist():
            bi, mi = torch.nonzero((wm > 1e-4) & (half == h)[:, None], as_tuple=True)
            insert_templates(wd[bi, mi], wm[bi, mi, None] * q[bi], rf[bi, mi], w.kx[:p], w.ky[:p],
                             grids.shape[-3], acc[h, c])
        sums.class_weight[c] += float(wk.sum())
        sums.offset_sq += float((wk.sum(1).double() * (foffs.double() ** 2).sum(-1)).sum())
    _noise(grids, results, best_k, x, ctf, groups, w, p, n, sums)
    sums.n_particles += int(idx.numel())


def _noise(grids, results, best_k, x, ctf, groups, w, p, n, sums: EStepSums) -> None:
    """Noise residual per shell at each particle's most probable class, fine rotation and offset."""
    b = x.shape[0]
    ar = torch.arange(b, device=x.device)
    resid = torch.empty(b, p, device=x.device)
    for c in range(grids.shape[0]):
        sel = torch.nonzero(best_k == c).flatten()
        if not sel.numel():
            continue
        rf, weights, foffs = results[c][5][sel], results[c][6][sel], results[c][7][sel]
        flat = weights.reshape(sel.numel(), -1).argmax(1)
        m, t = flat // weights.shape[2], flat % weights.shape[2]
        a = ar[: sel.numel()]
        tmpl = read_templates(grids[c], rf[a, m][:, None], w.kx[:p], w.ky[:p])[:, 0]
        shift = phase_table(foffs[a, t], w.kx[:p], w.ky[:p], n)
        resid[sel] = ((x[sel] * shift - ctf[sel] * tmpl).abs() ** 2 * w.half_weight[:p]).float()
    for gi in torch.unique(groups).tolist():
        sel = groups == gi
        sums.sigma2[gi].index_add_(0, w.shell[:p], resid[sel].sum(0).double())
        sums.group_count[gi] += float(sel.sum())

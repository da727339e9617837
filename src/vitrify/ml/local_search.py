"""Local orientation searches of 3D auto-refinement (RELION's local searches around previous poses).

From the local HEALPix order on, each particle is compared only with orientations near its previous
rotation ``R`` (RELION ``--sigma_ang``): a coarse stencil of rotations ``R exp([v])`` for the integer
lattice vectors ``v`` with ``|v| <= radius`` spaced by the coarse angular step, times the offset grid
around the previous offset, scored in the coarse window under a Gaussian prior on the angle
``exp(-angle^2 / (2 sigma^2))`` and the offset prior; then the best coarse pose's 27 children (half
the step) times 9 offset children (half the offset step) are scored in the current window, and their
posterior (significance rule of :func:`vitrify.ml.estep.truncated_posterior`) weights the back-projection.

Templates are read from the padded volume transform ``(g, g, g//2+1)`` at the window pixels directly
(trilinear, :func:`torch.nn.functional.grid_sample`; Friedel mates through the conjugate) and the
weighted sums are inserted by the adjoint (scatter-add of the 8 trilinear corners, then the ``x = 0``
plane folded, as :func:`vitrify.ml.slices.insert_slices`). The likelihood, the noise residuals and the
per-particle outputs are the global E-step's (:mod:`vitrify.ml.estep`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vitrify.core.euler import matrix_to_euler
from vitrify.core.sampling import angular_step_deg
from vitrify.ml.estep import EStepSums, phase_table, truncated_posterior
from vitrify.ml.slices import PAD, fold_plane0

FINE_CHILDREN = 27
INSERT_FRACTION = 0.01  # fine rotations holding less of a particle's posterior are not back-projected
MAX_INSERTED = 6  # nor those beyond its 6 most probable (data and weight alike: their ratio stays unbiased)
MAX_STENCIL_STEPS = 2.0  # coarse stencil radius (steps): 33 rotations


@dataclass(frozen=True)
class Stencil:
    """Rotation perturbations ``(M, 3, 3)`` and their angles ``(M,)`` in degrees."""

    rotations: torch.Tensor
    angles_deg: torch.Tensor


def axis_angle_matrices(vectors: torch.Tensor) -> torch.Tensor:
    """Rotations ``(..., 3, 3)`` of rotation vectors ``(..., 3)`` (radians; Rodrigues' formula)."""
    theta = vectors.norm(dim=-1, keepdim=True)
    axis = vectors / theta.clamp_min(1e-12)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*vectors.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=vectors.dtype, device=vectors.device).expand_as(k)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    return eye + s * k + (1 - c) * (k @ k)


def lattice_stencil(step_deg: float, radius_steps: float, device=None) -> Stencil:
    """Rotations ``exp([v] step)`` for the integer vectors ``|v| <= radius_steps`` (identity first)."""
    r = int(math.floor(radius_steps + 1e-9))
    ax = torch.arange(-r, r + 1, dtype=torch.float64, device=device)
    v = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    v = v[v.norm(dim=1) <= radius_steps + 1e-9]
    v = v[torch.argsort(v.norm(dim=1), stable=True)]
    vec = v * math.radians(step_deg)
    return Stencil(axis_angle_matrices(vec), torch.rad2deg(vec.norm(dim=1)))


def cube_stencil(step_deg: float, device=None) -> Stencil:
    """The 27 rotations ``exp([v] step)``, ``v`` in {-1, 0, 1}^3 (fine children, half the coarse step)."""
    ax = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, device=device)
    v = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3) * math.radians(step_deg)
    return Stencil(axis_angle_matrices(v), torch.rad2deg(v.norm(dim=1)))


def rotation_angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle (degrees) between rotations ``(..., 3, 3)``."""
    trace = (a * b).sum(dim=(-2, -1))
    return torch.rad2deg(torch.acos(((trace - 1) / 2).clamp(-1.0, 1.0)))


# -- reading and inserting templates ------------------------------------------------------------

def _points(rotations: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded-grid points ``(..., P, 3)`` (x, y, z; x >= 0) of window pixels for rotations ``(..., 3, 3)``
    and whether each was mirrored (read/write the conjugate): ``PAD (kx A[0] + ky A[1])`` (one matmul)."""
    k = torch.stack([kx, ky], -1).float() * PAD  # (P, 2)
    pts = torch.matmul(k, rotations[..., :2, :].float())  # (..., P, 3)
    conj = pts[..., 0] < 0
    return pts * (1.0 - 2.0 * conj.to(pts.dtype))[..., None], conj


def template_volume(grid: torch.Tensor) -> torch.Tensor:
    """``(1, 2, g, g, g//2+1)`` float32 ``[Re, Im]`` of a padded transform ``(g, g, g//2+1)``, centred in y and
    z: what :func:`read_templates` samples (build it once per map, not once per block)."""
    return torch.fft.fftshift(torch.stack([grid.real, grid.imag]), dim=(1, 2))[None].float().contiguous()


def read_templates(grid: torch.Tensor, rotations: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    """Templates ``(B, M, P)`` complex64 of a padded transform ``(g, g, g//2+1)`` (or its
    :func:`template_volume`) at rotations ``(B, M, 3, 3)``."""
    vol = template_volume(grid) if grid.is_complex() else grid
    g, half = vol.shape[2], vol.shape[4]
    pts, conj = _points(rotations, kx, ky)
    b, m, p = pts.shape[:3]
    scale = torch.tensor([2.0 / (half - 1), 2.0 / (g - 1), 2.0 / (g - 1)], device=pts.device)
    shift = torch.tensor([-1.0, g // 2 * 2.0 / (g - 1) - 1.0, g // 2 * 2.0 / (g - 1) - 1.0], device=pts.device)
    norm = torch.addcmul(shift, pts, scale)
    out = F.grid_sample(vol, norm.reshape(1, -1, 1, 1, 3), mode="bilinear", padding_mode="zeros",
                        align_corners=True).reshape(2, b, m, p)
    sign = 1.0 - 2.0 * conj.to(out.dtype)
    return torch.complex(out[0], out[1] * sign)


_CORNERS = ((0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1))


def insert_templates(data: torch.Tensor, weight: torch.Tensor, rotations: torch.Tensor, kx: torch.Tensor,
                     ky: torch.Tensor, g: int, acc: torch.Tensor) -> None:
    """Adjoint of :func:`read_templates`: add ``data`` ``(L, P)`` complex and ``weight`` ``(L, P)`` real at
    rotations ``(L, 3, 3)`` into ``acc`` ``(g * g * (g//2+1), 3)`` (Re, Im, weight; fold the x = 0 plane after)."""
    half = g // 2 + 1
    pts, conj = _points(rotations, kx, ky)
    sign = 1.0 - 2.0 * conj.to(torch.float32)
    src = torch.stack([data.real, data.imag * sign, weight.float()], -1).reshape(-1, 3)
    pts = pts.reshape(-1, 3)
    base = torch.floor(pts)
    frac = pts - base
    base = base.long()
    fw = (1 - frac, frac)  # per axis: weight of the lower and the upper corner
    wrap = (lambda v: v & (g - 1)) if g & (g - 1) == 0 else (lambda v: torch.remainder(v, g))
    ys = (wrap(base[:, 1]) * half, wrap(base[:, 1] + 1) * half)
    zs = (wrap(base[:, 2]) * (g * half), wrap(base[:, 2] + 1) * (g * half))
    xs = (base[:, 0].clamp(max=half - 1), (base[:, 0] + 1).clamp(max=half - 1))
    wx = (fw[0][:, 0], fw[1][:, 0] * (base[:, 0] + 1 < half).float())
    wyz = {(by, bz): fw[by][:, 1] * fw[bz][:, 2] for by in (0, 1) for bz in (0, 1)}
    for bx, by, bz in _CORNERS:
        acc.index_add_(0, zs[bz] + ys[by] + xs[bx], src * (wx[bx] * wyz[by, bz])[:, None])


# -- one block --------------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalGrid:
    """What every block of a local pass shares (current window ``P``, coarse window ``Pc`` pixels)."""

    coarse: Stencil
    fine: Stencil
    shifts_px: torch.Tensor       # (T, 2) coarse offset steps
    fine_shifts_px: torch.Tensor  # (9, 2) offset children
    sigma_deg: float
    sigma_offset_px: float
    n_pixels: int
    n_coarse_pixels: int


def _shifted(y: torch.Tensor, centres_px: torch.Tensor, shifts_px: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor,
             n: int) -> torch.Tensor:
    """``y`` ``(B, P)`` translated by ``centres_px`` ``(B, 2)`` + ``shifts_px`` ``(T, 2)``: ``(B, T, P)`` complex64
    (the phase ramp of a sum is the product of the ramps: one ``(B, P)`` and one shared ``(T, P)`` table)."""
    return (y * phase_table(centres_px, kx, ky, n))[:, None, :] * phase_table(shifts_px, kx, ky, n)[None]


def _scores_shifted(ys: torch.Tensor, q: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
    """``Re<ys_t, P_m> - 1/2 <q, |P_m|^2>``: ``(B, T, M)`` from translated ``ys`` ``(B, T, P)``, ``q`` ``(B, P)``
    and templates ``(B, M, P)`` (batched real GEMMs over ``[Re | Im]`` rows)."""
    rows = torch.cat([templates.real, templates.imag], -1).transpose(1, 2).contiguous()  # (B, 2P, M)
    cross = torch.bmm(torch.cat([ys.real, ys.imag], -1), rows)
    power = torch.bmm((templates.real ** 2 + templates.imag ** 2), q[:, :, None])[..., 0]  # (B, M)
    return cross - 0.5 * power[:, None, :]


def local_block(grid: torch.Tensor, prev_rot: torch.Tensor, prev_off: torch.Tensor, x: torch.Tensor,
                ctf: torch.Tensor, inv_sigma2: torch.Tensor, hw: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor,
                n: int, lg: LocalGrid):
    """Local search of ``B`` particles: best rotations ``(B, 3, 3)``, offsets ``(B, 2)``, pmax, log-likelihood,
    significant count, the fine rotations ``(B, 27, 3, 3)``, weights ``(B, 27, 9)`` and fine offsets ``(B, 9, 2)``.

    ``grid`` padded transform ``(g, g, g//2+1)`` or its :func:`template_volume`; ``x``, ``ctf`` ``(B, P)``
    window pixels; ``inv_sigma2``, ``hw``, ``kx``, ``ky`` ``(P,)``.
    """
    vol = template_volume(grid) if grid.is_complex() else grid
    pc = lg.n_coarse_pixels
    y = x * ctf * hw * inv_sigma2
    q = ctf * ctf * hw * inv_sigma2
    rc = prev_rot[:, None] @ lg.coarse.rotations.to(prev_rot)[None]  # (B, Mc, 3, 3)
    tc = read_templates(vol, rc, kx[:pc], ky[:pc])
    offs = prev_off[:, None, :] + lg.shifts_px[None]  # (B, T, 2)
    s = _scores_shifted(_shifted(y[:, :pc], prev_off, lg.shifts_px, kx[:pc], ky[:pc], n), q[:, :pc], tc)
    s = s - (lg.coarse.angles_deg.to(s) ** 2 / (2 * lg.sigma_deg ** 2))[None, None, :] \
        - ((offs ** 2).sum(-1) / (2 * lg.sigma_offset_px ** 2))[..., None]
    b, t, m = s.shape
    best = s.reshape(b, -1).argmax(1)
    best_t, best_m = best // m, best % m
    ar = torch.arange(b)
    centre = rc[ar, best_m]  # (B, 3, 3)
    rf = centre[:, None] @ lg.fine.rotations.to(centre)[None]  # (B, 27, 3, 3)
    tf = read_templates(vol, rf, kx, ky)
    best_off = offs[ar, best_t]
    foffs = best_off[:, None, :] + lg.fine_shifts_px[None]  # (B, 9, 2)
    sf = _scores_shifted(_shifted(y, best_off, lg.fine_shifts_px, kx, ky, n), q, tf)  # (B, 9, 27)
    prior = rotation_angle_deg(rf, prev_rot[:, None].to(rf)) ** 2 / (2 * lg.sigma_deg ** 2)
    sf = sf - prior[:, None, :].float() - ((foffs ** 2).sum(-1) / (2 * lg.sigma_offset_px ** 2))[..., None]
    w, log_norm, pmax, n_sig, top = truncated_posterior(sf.reshape(b, -1), 0.999, -1)
    top_t, top_m = top // FINE_CHILDREN, top % FINE_CHILDREN
    return (rf[ar, top_m], foffs[ar, top_t], pmax, log_norm, n_sig, rf, w.reshape(b, 9, FINE_CHILDREN).transpose(1, 2),
            foffs, y, q)


def local_grid_of(ref, sigma_deg: float) -> LocalGrid:
    """The local grid of an engine ``ref`` (:class:`~vitrify.ml.inimodel.Refiner3D`): its HEALPix order,
    current and coarse windows, offset sampling and offset prior, with angular prior ``sigma_deg``."""
    from vitrify.ml.inimodel import coarse_radius_3d

    model, win, order = ref.model, ref.window, ref.orientations.order
    radius = model.current_radius
    coarse = coarse_radius_3d(model.box_px, angular_step_deg(order), ref.settings.particle_diameter_px)
    step = ref.sampling.offset_step_px if ref.sampling.offset_step_px > 0 else 1.0
    range_px = float(ref.sampling.shifts_px.abs().max()) if ref.sampling.shifts_px.numel() else 0.0
    return local_grid(order, sigma_deg, range_px, step, max(model.sigma2_offset_px, 1e-6) ** 0.5,
                      win.pixels_within(radius), win.pixels_within(min(radius, coarse)), ref.particles.ft.device)


def local_grid(order: int, sigma_deg: float, offset_range_px: float, offset_step_px: float, sigma_offset_px: float,
               n_pixels: int, n_coarse_pixels: int, device) -> LocalGrid:
    """Stencils and offset grids of a local pass at HEALPix ``order`` (coarse step ``angular_step_deg``)."""
    from vitrify.ml.expectation import make_sampling

    step = angular_step_deg(order)
    coarse = lattice_stencil(step, min(3.0 * sigma_deg / step, MAX_STENCIL_STEPS), device)
    fine = cube_stencil(step / 2.0, device)
    shifts = make_sampling(30.0, offset_range_px, offset_step_px, device).shifts_px
    ax = torch.tensor([-0.5, 0.0, 0.5], device=device) * offset_step_px
    fine_sh = torch.stack(torch.meshgrid(ax, ax, indexing="ij"), -1).reshape(-1, 2).flip(-1)
    return LocalGrid(coarse, fine, shifts, fine_sh, sigma_deg, sigma_offset_px, n_pixels, n_coarse_pixels)


def local_estep(ref, grids: torch.Tensor, sigma_deg: float, budget_bytes: int = 64 * 2 ** 20):
    """Local E-step of one half (a :class:`vitrify.ml.inimodel.Refiner3D`, K = 1) against its map's padded
    transform ``grids`` ``(1, g, g, g//2+1)``: updates the particles' poses in place and returns
    ``(sums, data, weight)`` as :meth:`Refiner3D.estep` does (grids ``(1, 1, g, g, g//2+1)``)."""
    from vitrify.core.euler import euler_to_matrix

    model, parts, win = ref.model, ref.particles, ref.window
    dev = parts.ft.device
    w = win.to(dev)
    radius, n = model.current_radius, model.box_px
    lg = local_grid_of(ref, sigma_deg)
    p, pc = lg.n_pixels, lg.n_coarse_pixels
    grid = template_volume(grids[0])
    g = grid.shape[2]
    acc = torch.zeros(g * g * (g // 2 + 1), 3, device=dev)
    sums = _empty_sums(parts.n_groups, radius, w.shell[:p], dev)
    inv_sigma2 = 1.0 / model.sigma2.to(dev).clamp_min(1e-30)
    rots = euler_to_matrix(ref.angles_deg[:, 0], ref.angles_deg[:, 1], ref.angles_deg[:, 2]).float().to(dev)
    per = 8 * (lg.coarse.rotations.shape[0] * pc + FINE_CHILDREN * p + 12 * p)
    bsize = max(1, int(budget_bytes // per))
    for start in range(0, parts.n_particles, bsize):
        idx = torch.arange(start, min(start + bsize, parts.n_particles), device=dev)
        _block(ref, grid, rots, idx, inv_sigma2, w, p, n, lg, acc, sums)
    data = torch.complex(acc[:, 0], acc[:, 1]).reshape(1, 1, g, g, g // 2 + 1)
    weight = acc[:, 2].reshape(1, 1, g, g, g // 2 + 1)
    return sums, fold_plane0(data), fold_plane0(weight)


def _empty_sums(groups: int, radius: int, shell_of: torch.Tensor, device) -> EStepSums:
    f64 = dict(device=device, dtype=torch.float64)
    return EStepSums(frames={}, class_weight=torch.zeros(1, **f64), sigma2=torch.zeros(groups, radius + 1, **f64),
                     group_count=torch.zeros(groups, **f64), offset_sq=torch.zeros((), **f64), shell_of=shell_of)


def _block(ref, grid, rots, idx, inv_sigma2, w, p, n, lg: LocalGrid, acc, sums: EStepSums) -> None:
    """One block: search, per-particle outputs, noise residuals and the weighted back-projection."""
    parts = ref.particles
    x, ctf = parts.ft[idx, :p], parts.ctf[idx, :p]
    groups = parts.group[idx]
    inv_s2 = inv_sigma2[groups][:, w.shell[:p]].float()
    res = local_block(grid, rots[idx], parts.offset_px[idx], x, ctf, inv_s2, w.half_weight[:p], w.kx[:p],
                      w.ky[:p], n, lg)
    best_rot, best_off, pmax, log_norm, n_sig, rf, weights, foffs, y, q = res
    rot, tilt, psi = matrix_to_euler(best_rot.double())
    ref.angles_deg[idx] = torch.stack([rot, tilt, psi], -1).to(ref.angles_deg)
    parts.offset_px[idx] = best_off.float()
    parts.pmax[idx] = pmax.float()
    parts.log_likelihood[idx] = log_norm
    parts.n_significant[idx] = n_sig
    wm = weights.sum(2)  # (B, 27)
    top = torch.topk(wm, MAX_INSERTED, dim=1)
    keep = torch.zeros_like(wm, dtype=torch.bool).scatter_(1, top.indices, top.values >= INSERT_FRACTION)
    bi, mi = torch.nonzero(keep, as_tuple=True)
    ys = _shifted(y, foffs[:, 0] - lg.fine_shifts_px[0], lg.fine_shifts_px, w.kx[:p], w.ky[:p], n)  # (B, 9, P)
    wd = torch.bmm(weights.contiguous().to(torch.complex64), ys)  # (B, 27, P)
    insert_templates(wd[bi, mi], wm[bi, mi, None] * q[bi], rf[bi, mi], w.kx[:p], w.ky[:p], grid.shape[2], acc)
    _noise_terms(ref, grid, rf, weights, foffs, x, ctf, groups, w, p, n, sums)
    sums.class_weight += float(weights.sum())
    sums.offset_sq += float((weights.sum(1).double() * (foffs.double() ** 2).sum(-1)).sum())
    sums.n_particles += int(idx.numel())


def _noise_terms(ref, grid, rf, weights, foffs, x, ctf, groups, w, p, n, sums: EStepSums) -> None:
    """``sum hw |x s - c P|^2`` per shell at the most probable fine pose (RELION sums over the
    significant ones; the best carries nearly all the weight at the end of a refinement)."""
    b = x.shape[0]
    ar = torch.arange(b, device=x.device)
    flat = weights.reshape(b, -1).argmax(1)
    m, t = flat // weights.shape[2], flat % weights.shape[2]
    tmpl = read_templates(grid, rf[ar, m][:, None], w.kx[:p], w.ky[:p])[:, 0]
    shift = phase_table(foffs[ar, t], w.kx[:p], w.ky[:p], n)
    resid = (x * shift - ctf * tmpl).abs() ** 2 * w.half_weight[:p]
    for gi in torch.unique(groups).tolist():
        sel = groups == gi
        sums.sigma2[gi].index_add_(0, w.shell[:p], resid[sel].sum(0).double())
        sums.group_count[gi] += float(sel.sum())


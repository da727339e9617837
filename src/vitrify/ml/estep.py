"""The 2D expectation step of one particle block: coarse GEMM pass, posterior, M-step sums.

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
kept (RELION's significance rule).

Adaptive oversampling (RELION ``--oversampling 1``): the coarse pass runs inside the
coarse window (a prefix of the current one); particles whose significant set is small
(``<= fine_cap``) go through :mod:`vitrify.ml.finepass` (children of the significant
coarse poses at half the psi and offset steps, current window), the others keep their
coarse weights. M-step sums are kept per template frame (coarse, fine) in the current
window: ``data_r = sum w h c x s / sigma2`` and ``weight_r = sum w h c^2 / sigma2``.
:func:`vitrify.ml.block.run_block` runs both passes on one block of particles.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

NEG_CLAMP = -87.0


@dataclass
class StageClock:
    """Optional per-stage wall-clock accounting (benchmarks); a no-op unless ``enabled``.

    ``lap(name, ref)`` charges the time since the previous lap to ``name`` (synchronising
    the device of ``ref`` first when it is a GPU tensor).
    """

    enabled: bool = False
    seconds: dict = field(default_factory=dict)
    _last: float = 0.0

    def start(self) -> None:
        """Reset the lap origin."""
        self._last = time.perf_counter()

    def lap(self, name: str, ref: torch.Tensor | None = None) -> None:
        """Charge the time since the last lap to ``name``."""
        if not self.enabled:
            return
        if ref is not None and ref.is_cuda:
            torch.cuda.synchronize(ref.device)
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now


@dataclass(frozen=True)
class Hypotheses:
    """The coarse search grid shared by all particles of a pass.

    Attributes
    ----------
    templates
        ``(R, P)`` complex64, R = K * n_psi rotated class templates (class-major), current window.
    log_prior_class
        ``(R,)`` float32, log class fraction of each template's class.
    shifts_px
        ``(T, 2)`` float32 (x, y) offset steps added to each particle's previous offset.
    psi_deg
        ``(n_psi,)`` in-plane angles of the grid.
    n_classes, n_psi
        Shape of R.
    sigma_offset_px
        Standard deviation of the Gaussian offset prior (centred on 0), pixels.
    """

    templates: torch.Tensor
    log_prior_class: torch.Tensor
    shifts_px: torch.Tensor
    psi_deg: torch.Tensor
    n_classes: int
    n_psi: int
    sigma_offset_px: float


@dataclass(frozen=True)
class Frame:
    """Scoring/accumulation arrays of one template frame in a window of ``P`` pixels.

    ``rows`` ``(R, 2P)`` float32 ``[Re | Im]`` templates, ``power`` ``(R, P)`` ``|P_r|^2``,
    ``table`` ``(T, P)`` complex64 phase table of ``shifts_px`` ``(T, 2)``, ``log_prior_class``
    ``(R,)``, ``psi_deg`` ``(n_psi,)``; ``R = n_classes * n_psi``. In 3D ``psi_deg`` holds the
    orientation index of each template of a class (as float32) and ``n_psi`` the number of
    orientations. ``n_children``: fine templates per coarse template (2 psi children in 2D;
    8 = 4 HEALPix directions x 2 psi in 3D), fine template ``c r + j`` for coarse ``r``.
    """

    rows: torch.Tensor
    power: torch.Tensor
    table: torch.Tensor
    shifts_px: torch.Tensor
    log_prior_class: torch.Tensor
    psi_deg: torch.Tensor
    n_psi: int
    n_children: int = 2

    @property
    def n_pixels(self) -> int:
        """P."""
        return int(self.power.shape[1])


@dataclass(frozen=True)
class PassGrid:
    """What every block of a pass shares.

    ``coarse`` scores inside the coarse window (``p_coarse`` pixels); ``coarse_full`` is the
    same grid in the current window (accumulation); ``fine`` the oversampled grid or None;
    ``fine_cap`` the largest coarse significant set refined by the fine pass.
    """

    coarse: Frame
    coarse_full: Frame
    fine: Frame | None
    n_classes: int
    sigma_offset_px: float
    fraction: float
    max_significant: int
    fine_cap: int
    budget_bytes: int
    posterior_power: float = 1.0


@dataclass
class Batch:
    """One block of ``B`` particles of one optics group (current-window pixels ``P``).

    ``x`` ``(B, P)`` complex64, ``ctf`` ``(B, P)``, ``prev_offset_px`` ``(B, 2)``, ``half`` ``(B,)``
    long, ``inv_sigma2`` / ``hw`` / ``kx`` / ``ky`` ``(P,)`` spectra, half weights, frequencies;
    ``allowed`` ``(B, K)`` bool restricts the classes of each particle in the coarse pass (the fine
    pass only refines significant coarse poses, so the restriction holds there too).
    """

    x: torch.Tensor
    ctf: torch.Tensor
    prev_offset_px: torch.Tensor
    half: torch.Tensor
    group: int
    inv_sigma2: torch.Tensor
    hw: torch.Tensor
    kx: torch.Tensor
    ky: torch.Tensor
    box_px: int
    allowed: torch.Tensor | None = None  # (B, K) bool: the classes each particle may take (None: all)


@dataclass
class BlockResult:
    """Per-particle outcome of a block (``B`` particles); tensors on the engine's device."""

    best_class: torch.Tensor      # (B,) long
    best_psi_deg: torch.Tensor    # (B,) float32
    best_offset_px: torch.Tensor  # (B, 2) float32 absolute (x, y)
    pmax: torch.Tensor            # (B,) float32
    n_significant: torch.Tensor   # (B,) long, coarse significant samples
    log_likelihood: torch.Tensor  # (B,) float64
    n_fine: torch.Tensor = None   # (B,) long, fine hypotheses evaluated


@dataclass
class FrameSums:
    """Template-frame sums ``data`` ``(H, R, 2P)`` float32 stacked ``[Re | Im]`` (the layout of the
    GEMM rows, so blocks add without complex conversions) and ``weight`` ``(H, R, P)`` float32."""

    data: torch.Tensor
    weight: torch.Tensor
    psi_deg: torch.Tensor


@dataclass
class EStepSums:
    """M-step sums of one E-step pass, per half-set ``H`` (1 for EM, 2 for VDAM).

    ``frames`` maps "coarse" (and "fine" with oversampling) to :class:`FrameSums`;
    ``class_weight`` ``(K,)``, ``sigma2`` ``(G, S)`` and ``group_count`` ``(G,)`` float64
    (G optics groups, S = window radius + 1 shells), ``offset_sq`` (weighted sum of squared
    offsets, px^2), ``shell_of`` ``(P,)`` long (shell of each window pixel), ``n_particles``
    and ``n_hypotheses`` (coarse + fine likelihood evaluations).
    """

    frames: dict[str, FrameSums]
    class_weight: torch.Tensor
    sigma2: torch.Tensor
    group_count: torch.Tensor
    offset_sq: torch.Tensor
    shell_of: torch.Tensor
    n_particles: int = 0
    n_hypotheses: int = 0
    n_fine_hypotheses: int = 0
    pending_model_term: torch.Tensor | None = None
    clock: StageClock = field(default_factory=StageClock)

    @classmethod
    def zeros(cls, halves: int, grid: PassGrid, groups: int, shell_of: torch.Tensor,
              n_shells: int) -> "EStepSums":
        """Empty sums for the frames of ``grid``, P = len(shell_of) pixels, G groups, S shells."""
        device, p = shell_of.device, shell_of.shape[0]
        f64 = dict(device=device, dtype=torch.float64)

        def frame(f: Frame) -> FrameSums:
            r = f.rows.shape[0]
            return FrameSums(torch.zeros(halves, r, 2 * p, device=device),
                             torch.zeros(halves, r, p, device=device), f.psi_deg)

        frames = {"coarse": frame(grid.coarse_full)}
        if grid.fine is not None:
            frames["fine"] = frame(grid.fine)
        return cls(frames=frames, class_weight=torch.zeros(grid.n_classes, **f64),
                   sigma2=torch.zeros(groups, n_shells, **f64), group_count=torch.zeros(groups, **f64),
                   offset_sq=torch.zeros((), **f64), shell_of=shell_of)


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


def shifted_stack(y: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``stack_real(y[:, None] * table[None])`` without the complex temporary.

    ``y`` ``(B, P)`` complex64, ``table`` ``(T, P)`` complex64 -> ``(B, T, 2P)`` float32, written
    in place with four real multiply(-add) passes.
    """
    b, p = y.shape
    out = torch.empty(b, table.shape[0], 2 * p, device=y.device, dtype=torch.float32)
    yr, yi = y.real[:, None, :], y.imag[:, None, :]
    tr, ti = table.real[None], table.imag[None]
    re, im = out[..., :p], out[..., p:]
    torch.mul(yr, tr, out=re)
    re.addcmul_(yi, ti, value=-1.0)
    torch.mul(yr, ti, out=im)
    im.addcmul_(yi, tr)
    return out


def make_frame(templates: torch.Tensor, n_pixels: int, shifts_px: torch.Tensor, kx: torch.Tensor,
               ky: torch.Tensor, n: int, log_prior_class: torch.Tensor, psi_deg: torch.Tensor,
               n_children: int = 2) -> Frame:
    """A :class:`Frame` from ``(R, P')`` complex templates cut to their first ``n_pixels`` pixels."""
    t = templates[:, :n_pixels]
    return Frame(rows=stack_real(t).contiguous(), power=(t.real ** 2 + t.imag ** 2).float().contiguous(),
                 table=phase_table(shifts_px, kx[:n_pixels], ky[:n_pixels], n), shifts_px=shifts_px,
                 log_prior_class=log_prior_class, psi_deg=psi_deg, n_psi=int(psi_deg.shape[0]),
                 n_children=n_children)


def score_block(y_shifted: torch.Tensor, q: torch.Tensor, rows: torch.Tensor,
                power: torch.Tensor) -> torch.Tensor:
    """Scores ``(B, T, R)`` without the per-particle constant or priors.

    ``y_shifted`` ``(B, T, 2P)`` stacked ``h c x s_t / sigma2``; ``q`` ``(B, P)`` ``h c^2 / sigma2``;
    ``rows`` ``(R, 2P)`` stacked templates; ``power`` ``(R, P)`` their ``|P_r|^2``.
    """
    b, t, p2 = y_shifted.shape
    scores = torch.mm(y_shifted.reshape(b * t, p2), rows.t()).reshape(b, t, -1)
    bias = torch.mm(q, power.t())  # (B, R)
    return scores.sub_(0.5 * bias[:, None, :])


def significant_weights(log_w: torch.Tensor, fraction: float, max_significant: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised, truncated posterior weights from log-weights ``(B, H)``.

    Returns ``(weights (B, H) float32 summing to 1, log-normaliser (B,) float64,
    pmax (B,), n_significant (B,) long)``. Weights below ``exp(-87)`` of the maximum are
    zero; of the rest the smallest set holding ``fraction`` of the mass (capped at
    ``max_significant`` if > 0) is kept.
    """
    return truncated_posterior(log_w, fraction, max_significant)[:4]


def truncated_posterior(log_w: torch.Tensor, fraction: float, max_significant: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`significant_weights` plus the index ``(B,)`` of each particle's best hypothesis.

    Five passes over ``(B, H)`` (max with its index, exp, sum, top-k, threshold): the
    posterior is as costly as a quarter of the GEMM, so every pass counts.
    """
    top, best = log_w.max(dim=1, keepdim=True)
    # clamped before exp: underflowing exp takes a slow path (10x); clamped values are dropped below
    w = log_w.sub(top).clamp_min_(NEG_CLAMP).exp_()
    total = w.sum(dim=1).double()  # pairwise float32 sum: relative error ~1e-7
    cap = w.shape[1] if max_significant <= 0 else min(int(max_significant), w.shape[1])
    floor = torch.nextafter(w.new_tensor(math.exp(NEG_CLAMP)), w.new_tensor(1.0))  # above exp(-87)
    if fraction >= 1.0 and cap >= w.shape[1]:  # keep everything (no rounding of the float32 total)
        thresh, n_sig = floor, (w >= floor).sum(dim=1)
    else:
        thresh, n_sig = count_significant(w, total, fraction, cap)
    w = w.masked_fill_(w < torch.maximum(thresh, floor), 0.0)
    w = w.div_(w.sum(dim=1, keepdim=True))
    pmax = (1.0 / total).float()  # the max weight is exp(0) = 1
    return w, top.squeeze(1).double() + torch.log(total), pmax, n_sig, best.squeeze(1)


def count_significant(w: torch.Tensor, total: torch.Tensor, fraction: float, cap: int,
                      first: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight threshold ``(B, 1)`` and number ``(B,)`` of the significant weights of ``w`` ``(B, H)``.

    A top-``first`` pass settles most particles (sharp posteriors need a handful of poses);
    those whose ``k`` largest weights hold less than ``fraction`` of the mass are sorted
    further with 8x larger ``k``, up to ``cap`` (top-k costs grow with k: k = 250 is ~2.5x k = 32).
    """
    k = min(first, cap)
    top = torch.topk(w, k, dim=1).values
    need = (torch.cumsum(top.double(), dim=1) < fraction * total[:, None]).sum(dim=1) + 1
    n_sig = need.clamp(max=k)
    thresh = top.gather(1, (n_sig - 1)[:, None])
    rows = torch.nonzero(need > k).flatten()
    while k < cap and rows.numel():
        k = 8 * k if 16 * k <= cap else cap  # near the cap: sort to the cap at once
        top = torch.topk(w[rows], k, dim=1).values
        need = (torch.cumsum(top.double(), dim=1) < fraction * total[rows, None]).sum(dim=1) + 1
        n_sig[rows] = need.clamp(max=k)
        thresh[rows] = top.gather(1, (n_sig[rows] - 1)[:, None])
        rows = rows[need > k]
    return thresh, n_sig


def offset_log_prior(offsets_px: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Gaussian offset prior (centred on 0) of ``(..., 2)`` offsets -> ``(...)``."""
    return -(offsets_px * offsets_px).sum(-1) / (2.0 * sigma_px ** 2)


def prepare(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = h c x s_prev / sigma2`` and ``q = h c^2 / sigma2``, both ``(B, P)``."""
    y = batch.x * (batch.ctf * batch.hw * batch.inv_sigma2)
    y = y * phase_table(batch.prev_offset_px, batch.kx, batch.ky, batch.box_px)
    return y, batch.ctf * batch.ctf * batch.hw * batch.inv_sigma2


def _template_sums(w: torch.Tensor, rows: torch.Tensor, dense_fraction: float = 0.05) -> torch.Tensor:
    """``w^T rows``: ``(M, R)`` weights x ``(M, 2P)`` rows -> ``(R, 2P)``, sparse when ``w`` is."""
    if int((w != 0).sum()) > dense_fraction * w.numel():
        return torch.mm(w.t(), rows)
    return torch.sparse.mm(w.t().to_sparse(), rows)


def accumulate_dense(sums: EStepSums, frame: Frame, w: torch.Tensor, y: torch.Tensor, q: torch.Tensor,
                     offsets: torch.Tensor, half: torch.Tensor, ys: torch.Tensor | None,
                     n_classes: int) -> None:
    """Add coarse-frame sums of ``B`` particles with weights ``w`` ``(B, T, R)`` (current window).

    ``ys`` ``(B, T, 2P)`` are the shifted particles in the current window if already computed.
    Only the templates that received weight are summed when they are fewer than half of ``R``
    (a sharp posterior touches a few; the ``(R, 2P)`` passes would dominate small blocks).
    """
    b, t, r = w.shape
    p = q.shape[1]
    if ys is None:
        ys = shifted_stack(y, frame.table)
    w_r = w.sum(dim=1)  # (B, R)
    touched = torch.nonzero(w_r.sum(dim=0) > 0).flatten()
    if touched.numel() < r // 2:
        w, w_r = w[:, :, touched], w_r[:, touched]
        frame = Frame(frame.rows[touched], frame.power[touched], frame.table, frame.shifts_px,
                      frame.log_prior_class, frame.psi_deg, frame.n_psi)
    else:
        touched = torch.arange(r, device=w.device)
    rt = touched.numel()
    fs = sums.frames["coarse"]
    for h in range(fs.data.shape[0]):
        sel = torch.nonzero(half == h).flatten()
        if not sel.numel():
            continue
        acc = _template_sums(w[sel].reshape(-1, rt), ys[sel].reshape(-1, 2 * p))
        wq = torch.mm(w_r[sel].t(), q[sel])
        fs.data[h].index_add_(0, touched, acc)
        fs.weight[h].index_add_(0, touched, wq)
        add_model_terms(sums, frame, acc, wq)
    sums.class_weight.index_add_(0, touched // (r // n_classes), w_r.sum(dim=0).double())
    sums.offset_sq += (w.sum(2).double() * (offsets.double() ** 2).sum(-1)).sum()


def add_model_terms(sums: EStepSums, frame: Frame, acc: torch.Tensor, wq: torch.Tensor) -> None:
    """sigma2 residual terms per pixel: ``sum w (|cP|^2 - 2 Re(c x s conj P)) h / sigma2``.

    ``acc`` ``(R, 2P)`` = ``sum w y_shifted``, ``wq`` ``(R, P)`` = ``sum w q``; kept in
    ``sums.pending_model_term`` ``(P,)`` until :func:`add_data_term` scales it by sigma2.
    """
    p = wq.shape[1]
    cross = (acc * frame.rows).reshape(-1, 2, p).sum(dim=(0, 1)).double()
    power = (wq * frame.power).sum(0).double()
    term = power - 2.0 * cross
    prev = sums.pending_model_term
    sums.pending_model_term = term if prev is None else prev + term


def add_data_term(sums: EStepSums, batch: Batch) -> None:
    """Finish a block's sigma2 sums: ``sum h |x|^2`` plus the model terms times sigma2, per shell."""
    p = batch.x.shape[1]
    data = (batch.x.real.double() ** 2 + batch.x.imag.double() ** 2).mul(batch.hw).sum(0)
    model = sums.pending_model_term if sums.pending_model_term is not None else torch.zeros_like(data)
    sums.pending_model_term = None
    resid = data + model / batch.inv_sigma2.double()
    sums.sigma2[batch.group].index_add_(0, sums.shell_of[:p], resid)
    sums.group_count[batch.group] += batch.x.shape[0]
    sums.n_particles += batch.x.shape[0]

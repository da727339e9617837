"""E-step micro-benchmark (``shared/design/estep.md`` section 7): stages, rates, efficiency, accuracy.

Usage::

    .venv/bin/python benchmarks/estep.py [--workloads tiny,2d,2d-relion] [--n 0] [--repeats 3]
        [--threads 0] [--json out.jsonl]

Per workload, synthetic particles are made from the engine's own templates (random class,
psi, shift, a CTF and white noise at SNR 0.05), so the true pose is known. The E-step
(:func:`vitrify.ml.expectation.expectation`, the code the jobs run) is timed with its
per-stage clock; the best of ``--repeats`` runs is kept. Printed per workload:

* stages (ms per particle): templates, pack (shifted particles), GEMM, posterior, coarse
  accumulate, fine scores / posterior / accumulate, finalize (insertion into class grids);
  the rotation tables are built once before timing (``cold_tables_s``), as the job keeps them
  across iterations;
* hypotheses/s and pixel-hypotheses/s;
* ``F``: sgemm GFLOP/s for the run's own GEMM shape, measured in the same run (median of 5,
  before and after the workload; the mean is used) and copy GB/s;
* efficiency = 4 * sum(P * H) / (F * t_E), t_E = every E-step stage except the M-step
  accumulation and finalize (target >= 0.6 on CPU); the same over the whole pass; peak ratio
  against a nominal 192 GFLOP/s for 2 AVX2 cores;
* work ratio = hypotheses evaluated / RELION's coarse + fine count for the same sampling
  (coarse grid + 8 children per significant coarse pose; target <= 1.2), and the same ratio
  for a one-pass search of the fine grid (what oversampling saves);
* accuracy gate: 8 particles against a float64 direct sum over the whole grid
  (max |delta log-likelihood| < 1e-3 in fp32), coarse pass and fine pass; class recovery.

One JSON line per workload goes to ``--json`` when given. Workloads: ``tiny`` (32 px, K 4,
12 psi, 9 shifts, 64 particles), ``2d`` (the brief's case: 64 px, K 50, 60 psi, 81 shifts,
window radius 24, one pass; N 256, extrapolated to 10,000), ``2d-relion`` (RELION's GUI
grid: K 20, psi 12 deg, offsets 5 px step 2, coarse radius 24, current radius 31, fine pass).
3D workloads of the plan need the 3D engine, which does not exist yet.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from vitrify.core.ctf import CtfParams, ctf_2d
from vitrify.core.device import tune_host_allocator
from vitrify.ml.estep import EStepSums
from vitrify.ml.expectation import (EStepSettings, TemplateCache, build_pass_grid, coarse_radius, expectation,
                                    make_sampling)
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.mstep import sums_to_grids
from vitrify.ml.starts import lowpass
from vitrify.ml.window import make_window, pack

NOMINAL_PEAK_GFLOPS = 192.0


@dataclass(frozen=True)
class Workload:
    """One benchmark case."""

    box_px: int
    n_classes: int
    psi_step_deg: float
    offset_range_px: float
    offset_step_px: float
    radius: int
    n_particles: int
    oversampling: int
    diameter_px: float
    extrapolate_to: int = 0


WORKLOADS = {
    "tiny": Workload(32, 4, 30.0, 1.5, 1.0, 10, 64, 1, 20.0),
    "2d": Workload(64, 50, 6.0, 5.0, 1.0, 24, 256, 0, 38.4, 10000),
    "2d-relion": Workload(64, 20, 12.0, 5.0, 2.0, 31, 512, 1, 38.4, 10000),
}


def make_case(w: Workload, seed: int = 0):
    """Model (random smooth references, flat noise) and particles drawn from the model."""
    g = torch.Generator().manual_seed(seed)
    n = w.box_px
    refs = lowpass(torch.randn(w.n_classes, n, n, generator=g), n // 6)
    c = torch.arange(n, dtype=torch.float32) - n // 2
    disc = ((c[:, None] ** 2 + c[None, :] ** 2) <= (w.diameter_px / 2) ** 2).float()
    refs = refs * disc
    refs = refs / refs.flatten(1).std(1)[:, None, None]
    win = make_window(n)
    zeros = torch.zeros(w.n_classes, n // 2 + 1, dtype=torch.float64)
    model = MlModel(refs=refs, pdf_class=torch.full((w.n_classes,), 1.0 / w.n_classes, dtype=torch.float64),
                    sigma2=torch.ones(1, n // 2 + 1, dtype=torch.float64), tau2=zeros, data_vs_prior=zeros,
                    sigma2_offset_px=9.0, tau2_fudge=2.0, current_radius=w.radius, pixel_size_angst=3.0)
    sampling = make_sampling(w.psi_step_deg, w.offset_range_px, w.offset_step_px)
    # truth: a random template (class, psi) of a fine grid and a random shift, CTF, noise
    settings = EStepSettings(oversampling=1)
    grid = build_pass_grid(model, sampling, win, settings, TemplateCache())
    f = grid.fine
    p = f.n_pixels
    r_true = torch.randint(0, f.rows.shape[0], (w.n_particles,), generator=g)
    shift = (torch.rand(w.n_particles, 2, generator=g) * 2 - 1) * w.offset_range_px * 0.6
    templates = f.rows[r_true, :p] + 1j * f.rows[r_true, p:]
    defocus = 8000 + torch.rand(w.n_particles, generator=g) * 20000
    ctf_grid = ctf_2d(n, CtfParams(pixel_size_angst=3.0, defocus_u_angst=defocus, defocus_v_angst=defocus + 300,
                                   defocus_angle_deg=torch.zeros(w.n_particles)))
    ctf_full = pack(ctf_grid, win)
    kx, ky = win.kx[:p], win.ky[:p]
    # particle = reference shifted by -shift, so its refined offset is +shift
    phase = torch.exp(2j * math.pi * (shift[:, :1] * kx + shift[:, 1:] * ky) / n)
    signal = ctf_full[:, :p] * templates * phase
    snr = 0.05
    sigma2 = float((signal.abs() ** 2).mean()) / (2 * snr)
    noise = torch.complex(torch.randn(signal.shape, generator=g), torch.randn(signal.shape, generator=g))
    ft = torch.zeros(w.n_particles, win.size, dtype=torch.complex64)
    ft[:, :p] = signal + noise * math.sqrt(sigma2)
    model.sigma2.fill_(sigma2)
    parts = ParticleSet(ft=ft, ctf=ctf_full.float(), group=torch.zeros(w.n_particles, dtype=torch.long),
                        n_groups=1, offset_px=torch.zeros(w.n_particles, 2))
    return model, parts, sampling, win, r_true // f.n_psi


def sgemm_gflops(m: int, k: int, n: int, reps: int = 5) -> float:
    """Median GFLOP/s of ``(m, k) @ (k, n)`` float32."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        rates.append(2.0 * m * k * n / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def copy_gbps(mb: int = 256) -> float:
    """Copy bandwidth (read + write) of a ``mb`` MiB tensor, GB/s."""
    x = torch.empty(mb * 2 ** 18)
    x.clone()
    t0 = time.perf_counter()
    x.clone()
    return 2 * x.numel() * 4 / (time.perf_counter() - t0) / 1e9


def direct_log_likelihood(model, parts, idx, frame, win, fine: bool) -> torch.Tensor:
    """float64 ``log sum exp(-|x s - c P|^2 / (2 sigma2) + log priors)`` over a whole frame grid.

    Fine frames carry ``log(1/8)`` per child (each child holds an eighth of a coarse cell).
    """
    p = frame.n_pixels
    n = win.box_px
    templates = (frame.rows[:, :p] + 1j * frame.rows[:, p:]).to(torch.complex128)
    hw = win.half_weight[:p].double()
    inv_s2 = 1.0 / float(model.sigma2[0, 1])
    kx, ky = win.kx[:p].double(), win.ky[:p].double()
    out = []
    for i in idx.tolist():
        off = parts.offset_px[i].double()[None] + frame.shifts_px.double()  # (T, 2)
        ph = torch.exp(-2j * math.pi * (off[:, :1] * kx + off[:, 1:] * ky) / n)
        xs = parts.ft[i, :p].to(torch.complex128)[None] * ph  # (T, P)
        c = parts.ctf[i, :p].double()
        terms = []
        for r0 in range(0, templates.shape[0], 64):
            d = xs[:, None, :] - c * templates[r0:r0 + 64][None]
            d2 = (d.real ** 2 + d.imag ** 2).mul(hw).sum(-1) * inv_s2 / 2
            prior = -(off ** 2).sum(-1)[:, None] / (2 * model.sigma2_offset_px)
            terms.append(-d2 + prior + frame.log_prior_class[r0:r0 + 64].double()[None])
        total = torch.cat(terms, 1)
        out.append(torch.logsumexp(total.reshape(-1), 0) - (math.log(8.0) if fine else 0.0))
    return torch.stack(out)


def accuracy_gate(w: Workload, model, parts, sampling, win) -> dict:
    """Max |delta LL| of 8 particles: coarse one-pass, and fine pass (nothing truncated) when the
    workload oversamples."""
    idx = torch.arange(min(8, parts.n_particles))
    out = {"fine": float("nan")}
    for name, ovs in (("coarse", 0), ("fine", 1))[: 1 + w.oversampling]:
        settings = EStepSettings(adaptive_fraction=1.0, max_significant=0, oversampling=ovs, fine_cap=10 ** 9)
        parts.offset_px.zero_()
        expectation(model, parts, idx, sampling, win, settings, TemplateCache())
        grid = build_pass_grid(model, sampling, win, settings, TemplateCache())
        frame = grid.fine if ovs else grid.coarse
        parts.offset_px.zero_()
        ref = direct_log_likelihood(model, parts, idx, frame, win, fine=bool(ovs))
        out[name] = float((ref - parts.log_likelihood[idx]).abs().max())
    return out


def run_workload(name: str, w: Workload, repeats: int) -> dict:
    """Build one workload, check its float32 accuracy gate, time its E-step ``repeats`` times; one table row."""
    model, parts, sampling, win, true_class = make_case(w)
    gate = accuracy_gate(w, model, parts, sampling, win)
    cr = coarse_radius(w.box_px, w.psi_step_deg, w.diameter_px, w.oversampling)
    settings = EStepSettings(max_significant=5 * w.n_classes, halves=2, oversampling=w.oversampling,
                             coarse_radius=cr, profile=True)
    grid = build_pass_grid(model, sampling, win, settings, TemplateCache())
    t, r, pc = grid.coarse.table.shape[0], grid.coarse.rows.shape[0], grid.coarse.n_pixels
    pf = grid.coarse_full.n_pixels
    from vitrify.ml.expectation import block_size

    bsz = min(block_size(t, r, pf, settings.budget_bytes), w.n_particles)
    f_before = sgemm_gflops(bsz * t, 2 * pc, r)
    # the job keeps its rotation tables (and their sparse matrices) across iterations: build them
    # once, cold, and time the passes with the warm cache
    cache = TemplateCache()
    t_cold = time.perf_counter()
    build_pass_grid(model, sampling, win, settings, cache)
    for frame in (grid.coarse_full, grid.fine):
        if frame is not None:
            cache.table(frame.psi_deg, win, pf, model.pad).matrices
    t_cold = time.perf_counter() - t_cold
    best = None
    for _ in range(repeats):
        parts.offset_px.zero_()
        t0 = time.perf_counter()
        sums = expectation(model, parts, torch.arange(w.n_particles), sampling, win, settings, cache)
        t1 = time.perf_counter()
        sums_to_grids(sums, lambda psi: cache.table(psi, win, pf, model.pad), model.n_classes)
        t2 = time.perf_counter()
        stages = dict(sums.clock.seconds)
        stages["finalize"] = t2 - t1
        if best is None or t2 - t0 < best[0]:
            best = (t2 - t0, stages, sums, t1 - t0)
    f_after = sgemm_gflops(bsz * t, 2 * pc, r)
    total, stages, sums, _ = best
    row = summarise(name, w, stages, total, sums, parts, true_class, pc, pf, t, r, (f_before + f_after) / 2, gate)
    row["cold_tables_s"] = t_cold
    return row


def summarise(name, w, stages, total, sums: EStepSums, parts, true_class, pc, pf, t, r, gflops, gate) -> dict:
    """One table row: stage seconds, hypotheses per second, GEMM rate and the accuracy figures."""
    n = w.n_particles
    h_coarse = n * t * r
    h_fine = sums.n_fine_hypotheses
    flops = 4.0 * (pc * h_coarse + pf * h_fine)
    m_step = stages.get("accumulate", 0) + stages.get("fine_accumulate", 0) + stages.get("finalize", 0)
    t_e = sum(stages.values()) - m_step
    n_sig = int(parts.n_significant.sum())
    relion = h_coarse + 8 * n_sig if w.oversampling else h_coarse
    dense_fine = 8 * h_coarse
    return {
        "workload": name, "n": n, "box": w.box_px, "K": w.n_classes, "psi": int(round(360 / w.psi_step_deg)),
        "shifts": t, "P_coarse": pc, "P_fine": pf, "oversampling": w.oversampling,
        "stages_ms_per_particle": {k: 1e3 * v / n for k, v in stages.items()},
        "total_s": total, "hypotheses": h_coarse + h_fine, "fine_hypotheses": h_fine,
        "hyp_per_s": (h_coarse + h_fine) / t_e, "pixel_hyp_per_s": (pc * h_coarse + pf * h_fine) / t_e,
        "sgemm_gflops": gflops, "efficiency": flops / (gflops * 1e9 * t_e),
        "pass_efficiency": flops / (gflops * 1e9 * total), "peak_ratio": flops / (NOMINAL_PEAK_GFLOPS * 1e9 * t_e),
        "work_ratio": (h_coarse + h_fine) / relion,
        "work_ratio_dense_fine": dense_fine / relion if w.oversampling else None,
        "gate_coarse_max_dLL": gate["coarse"], "gate_fine_max_dLL": gate["fine"],
        "class_recovered": float((parts.class_index == true_class).float().mean()),
        "extrapolated_s": total / n * w.extrapolate_to if w.extrapolate_to else None,
    }


def print_table(rows: list[dict]) -> None:
    """Print the rows as a Markdown table (stage seconds, totals and rates)."""
    stages = ["templates", "pack", "gemm", "posterior", "accumulate", "fine_scores", "fine_posterior",
              "fine_accumulate", "finalize"]
    print("\n| workload | N | P c/f | " + " | ".join(stages) + " | total s | Mhyp/s | sgemm GF/s | "
          "efficiency (pass) | peak ratio | work ratio (dense fine) | max dLL coarse / fine | class ok | "
          "cold tables s |")
    print("|" + "---|" * (len(stages) + 13))
    for r in rows:
        ms = r["stages_ms_per_particle"]
        dense = "" if r["work_ratio_dense_fine"] is None else f" ({r['work_ratio_dense_fine']:.2f})"
        extra = "" if r["extrapolated_s"] is None else f" (10k: {r['extrapolated_s']:.0f})"
        print(f"| {r['workload']} | {r['n']} | {r['P_coarse']}/{r['P_fine']} | "
              + " | ".join(f"{ms.get(s, 0.0):.2f}" for s in stages)
              + f" | {r['total_s']:.2f}{extra} | {r['hyp_per_s'] / 1e6:.1f} | {r['sgemm_gflops']:.0f} | "
              f"{r['efficiency']:.2f} ({r['pass_efficiency']:.2f}) | {r['peak_ratio']:.2f} | "
              f"{r['work_ratio']:.2f}{dense} | {r['gate_coarse_max_dLL']:.1e} / {r['gate_fine_max_dLL']:.1e} | "
              f"{r['class_recovered']:.2f} | {r['cold_tables_s']:.2f} |")
    print("stages in ms per particle; efficiency = 4 sum(P H) / (sgemm rate x E-step time without the "
          "M-step sums); targets: efficiency >= 0.6 (CPU), work ratio <= 1.2, max dLL < 1e-3")


def main() -> None:
    """Parse the arguments, run the chosen workloads and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default="tiny,2d,2d-relion")
    p.add_argument("--n", type=int, default=0, help="particles per workload (0: the workload's own)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default="")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    tune_host_allocator()  # as the jobs do
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}, copy {copy_gbps():.1f} GB/s")
    rows = []
    for name in args.workloads.split(","):
        w = WORKLOADS[name]
        if args.n > 0:
            w = Workload(**{**w.__dict__, "n_particles": args.n})
        row = run_workload(name, w, args.repeats)
        row["load"] = os.getloadavg()[0]
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    print_table(rows)


if __name__ == "__main__":
    main()

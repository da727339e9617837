"""2D classification (RELION ``relion.class2d``): EM or VDAM on a particles.star.

``run(options, job_dir)`` validates the input (before any compute), loads the particles
lazily into the engine's packed layout, builds the Gaussian-blob starting model (or reads
a written iteration with ``continue_from``), iterates with :class:`vitrify.ml.optimiser.
Classifier2D` and writes RELION-4 files at RELION's cadence (every iteration for EM;
every ``grad_write_iter`` iterations and the last for VDAM; always iteration 0).

Under ``torchrun --nproc-per-node N`` (``WORLD_SIZE`` > 1) the job runs data-parallel: each rank
joins the torch.distributed group (gloo on CPU, NCCL on GPU, one GPU per local rank), reads only
its shard of the particles (:func:`vitrify.ml.optimiser.shard_rows`; the starting model from the
first particles, read by every rank), computes the E-step of the selected particles it holds, the
sums are all-reduced (:class:`vitrify.ml.optimiser.Ranks`), and when files are due rank 0 gathers
every particle's assignment and alone writes them. One process without torchrun stays the
default.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
import torch

from vitrify.io.errors import InputError
from vitrify.io.star import portable_image_names, portable_name
from vitrify.jobs._class2d_data import (InputParticles, check_memory, check_rows, diameter_in_px, load_particles,
                                        read_reference_stack, start_rows, validate_input)
from vitrify.jobs._ranks import join_ranks as _join_ranks
from vitrify.jobs._class2d_output import (
    data_table,
    iteration_paths,
    model_blocks,
    overall_accuracy,
    write_gallery,
    write_moments,
    write_state,
    write_tables,
)
from vitrify.jobs.base import JobAborted, check_abort, job_logger
from vitrify.jobs.options.class2d import (ALGORITHMS, DEFAULT_ITER, Options, job_star_from_options,
                                         options_from_job_star)
from vitrify.ml.accuracy import N_TRIAL, expected_accuracy
from vitrify.ml.expectation import make_sampling
from vitrify.ml.model import ParticleSet
from vitrify.ml.optimiser import Classifier2D, EngineSettings, IterationInfo, Ranks
from vitrify.ml.starts import initial_model
from vitrify.ml.window import make_window

#: the job runs data-parallel on torch.distributed ranks (torchrun; a queue template's N copies)
RUNS_ON_RANKS = True


def _settings(options: Options, diameter_px: float, device: torch.device) -> EngineSettings:
    budget = options.memory_budget_mb or (1024 if device.type == "cuda" else 64)
    return EngineSettings(algorithm=options.algorithm, nr_iter=options.iterations,
                          tau2_fudge=options.tau2_fudge, particle_diameter_px=diameter_px,
                          max_significant=options.max_significant,
                          class_inactivity_threshold=options.class_inactivity_threshold,
                          replacement_source=options.replacement_source,
                          seed=options.seed, budget_bytes=budget * 2 ** 20, oversampling=options.oversampling,
                          ini_subset=options.ini_subset, fin_subset=options.fin_subset,
                          posterior_power=options.posterior_power, outlier_z=options.outlier_z)


class _Follower:
    """What a rank other than 0 does after each iteration: its part of the gathers and abort checks."""

    def __init__(self, options: Options, job_dir: Path, clf: Classifier2D) -> None:
        self.options, self.job_dir, self.clf = options, job_dir, clf

    def due(self, info: IterationInfo) -> bool:
        last = info.iteration == self.options.iterations
        return (self.options.algorithm == "em" or last or info.iteration == 0
                or info.iteration % self.options.grad_write_iter == 0)

    def __call__(self, info: IterationInfo) -> None:
        if self.due(info):
            self.write(info.iteration)
        self.check_abort()

    def write(self, it: int) -> None:
        self.clf.all_particles()  # sends this rank's assignments to rank 0

    def check_abort(self) -> None:
        """Raise :class:`JobAborted` on every rank when rank 0 saw an abort request."""
        ranks = self.clf.ranks
        asked = ranks.rank == 0 and _abort_requested(self.job_dir)
        if ranks.any(asked, self.clf.particles.ft.device):
            raise JobAborted(f"abort requested in {self.job_dir}")


def _abort_requested(job_dir: Path) -> bool:
    try:
        check_abort(job_dir)
    except JobAborted:
        return True
    return False


class _Writer(_Follower):
    """Rank 0 (or the one process): writes an iteration's files at RELION's cadence."""

    def __init__(self, options: Options, job_dir: Path, inp: InputParticles, clf: Classifier2D,
                 window, diameter_px: float) -> None:
        super().__init__(options, job_dir, clf)
        self.inp, self.window, self.diameter_px = inp, window, diameter_px
        self.image_names = portable_image_names(inp.star.data["rlnImageName"], inp.base_dir, job_dir)
        optics = inp.star.optics
        self.group_names = [str(v) for v in optics.get("rlnOpticsGroupName", optics["rlnOpticsGroup"])]
        counts = np.bincount(inp.group_index, minlength=len(self.group_names))
        self.group_counts = [int(c) for c in counts]
        self.log = job_logger(job_dir)
        self.reduced = self.gathered = 0

    def check_abort(self) -> None:
        """Abort on request (under ranks, every rank with rank 0)."""
        if self.clf.ranks is None:
            check_abort(self.job_dir)
        else:
            super().check_abort()

    def __call__(self, info: IterationInfo) -> None:
        model = self.clf.model
        self.log.info("iteration %d: %d particles, radius %d (%.1f A), T %.2f, step %.3f, LL %.4g, "
                      "pmax %.3f, replaced %s", info.iteration, info.n_particles, model.current_radius,
                      model.resolution_angst(model.current_radius), info.tau2_fudge, info.stepsize,
                      model.log_likelihood, model.ave_pmax, info.replaced)
        super().__call__(info)  # files, abort check
        ranks = self.clf.ranks
        if ranks is not None:
            self.log.info("iteration %d: %d bytes all-reduced by each of %d ranks", info.iteration,
                          ranks.reduced_bytes - self.reduced, ranks.world)
            self.reduced = ranks.reduced_bytes

    def write(self, it: int) -> dict[str, Path]:
        opt, model, clf = self.options, self.clf.model, self.clf
        particles = clf.all_particles()  # under ranks: gathered from every rank
        if clf.ranks is not None:
            self.log.info("iteration %d: %d bytes of particle assignments gathered to rank 0", it,
                          clf.ranks.gathered_bytes - self.gathered)
            self.gathered = clf.ranks.gathered_bytes
        paths = iteration_paths(self.job_dir, opt.root, it)
        model.class_accuracy_psi_deg, model.class_accuracy_offset_px = expected_accuracy(
            model, self._trial_particles(it), clf.window, seed=opt.seed + it)
        grad = opt.algorithm == "vdam"
        pix = model.pixel_size_angst
        write_gallery(paths["classes_png"], model.refs, model.pdf_class)
        from vitrify.io.mrc import write_mrc

        write_mrc(paths["classes"], model.refs.cpu().numpy(), pix)
        if grad and clf.moments is not None:
            write_moments(paths, clf.moments, pix)
        write_state(paths["vitrify_state"], it, model, particles, opt)
        star = model_blocks(model, paths, self._name, grad, self.group_names, self.group_counts)
        data = data_table(self.inp.star.data, particles, pix, self.image_names)
        write_tables(paths, self.inp.star.optics, data, star, self._optimiser(paths, it),
                     self._sampling())
        return paths

    def _trial_particles(self, it: int) -> ParticleSet:
        """The particles :func:`expected_accuracy` draws (under ranks, read again by rank 0 in the
        order that makes its draw pick them as one process would)."""
        clf = self.clf
        if clf.ranks is None:
            return clf.particles
        seed = self.options.seed + it
        rows = torch.randperm(clf.n_total, generator=torch.Generator().manual_seed(seed))[:N_TRIAL]
        again = torch.randperm(rows.numel(), generator=torch.Generator().manual_seed(seed))
        o = self.options
        return load_particles(self.inp, self.window, self.diameter_px, o.do_ctf, o.ctf_intact_first_peak,
                              clf.particles.ft.device, rows[torch.argsort(again)].numpy())

    def _name(self, path: Path) -> str:
        """How this job's STAR files name ``path`` (project-relative in a project, else absolute)."""
        return portable_name(path, self.job_dir)

    def _sampling(self) -> dict:
        o, pix = self.options, self.clf.model.pixel_size_angst
        n_psi = len(self.clf.sampling.psi_deg)
        return {"rlnIs3DSampling": 0, "rlnIs3DTranslationalSampling": 0, "rlnPsiStep": 360.0 / n_psi,
                "rlnOffsetRange": o.offset_range_px * pix, "rlnOffsetStep": o.offset_step_px * pix,
                "rlnHelicalOffsetStep": -1.0, "rlnSamplingPerturbInstance": 0.0,
                "rlnSamplingPerturbFactor": 0.0, "rlnPsiStepOriginal": 360.0 / n_psi,
                "rlnOffsetRangeOriginal": o.offset_range_px * pix,
                "rlnOffsetStepOriginal": o.offset_step_px * pix}

    def _optimiser(self, paths: dict[str, Path], it: int) -> dict:
        o, clf = self.options, self.clf
        sched = clf.schedule
        grad = o.algorithm == "vdam"
        ini, fin = sched.subsets()
        acc_rot, acc_trans = overall_accuracy(clf.model)
        return {
            "rlnOutputRootName": self._name(self.job_dir / o.root),
            "rlnModelStarFile": self._name(paths["model"]),
            "rlnExperimentalDataStarFile": self._name(paths["data"]),
            "rlnOrientSamplingStarFile": self._name(paths["sampling"]), "rlnCurrentIteration": it,
            "rlnNumberOfIterations": o.iterations, "rlnDoSplitRandomHalves": 0,
            "rlnAdaptiveOversampleOrder": o.oversampling,
            "rlnAdaptiveOversampleFraction": clf.settings.adaptive_fraction,
            "rlnRandomSeed": o.seed, "rlnParticleDiameter": self._diameter_angst(), "rlnWidthMaskEdge": 5,
            "rlnDoZeroMask": 1, "rlnDoSolventFlattening": 1, "rlnSolventMaskName": "None",
            "rlnTauSpectrumName": "None", "rlnMaximumCoarseImageSize": -1, "rlnHighresLimitExpectation": -1.0,
            "rlnIncrementImageSize": clf.settings.incr_size, "rlnDoMapEstimation": 1,
            "rlnDoGradientRefine": int(grad), "rlnDoStochasticGradientDescent": 0,
            "rlnGradEmIters": clf.settings.grad_em_iters, "rlnGradHasConverged": 0,
            "rlnGradCurrentStepsize": sched.stepsize_at(it) if grad else 0.0, "rlnGradSubsetOrder": 0,
            "rlnSgdInitialIterationsFraction": sched.ini_frac, "rlnSgdFinalIterationsFraction": sched.fin_frac,
            "rlnSgdInitialSubsetSize": ini, "rlnSgdFinalSubsetSize": fin, "rlnSgdMuFactor": clf.settings.mu,
            "rlnSgdClassInactivityThreshold": o.class_inactivity_threshold,
            "rlnSgdWriteEverySubset": o.grad_write_iter, "rlnSgdStepsize": sched.stepsize,
            "rlnSgdStepsizeScheme": f"{sched.stepsize_start}-step", "rlnTau2FudgeScheme": "step",
            "rlnTau2FudgeArg": o.tau2_fudge, "rlnMaximumSignificantPoses": clf.settings.max_significant,
            "rlnDoAutoRefine": 0, "rlnDoAutoSampling": 0, "rlnOverallAccuracyRotations": acc_rot,
            "rlnOverallAccuracyTranslationsAngst": acc_trans, "rlnHasConverged": 0, "rlnDoCorrectNorm": 0,
            "rlnDoCorrectScale": 0, "rlnDoCorrectCtf": int(o.do_ctf),
            "rlnDoIgnoreCtfUntilFirstPeak": int(o.ctf_intact_first_peak), "rlnCtfDataArePhaseFlipped": 0,
            "rlnDoCenterClasses": 0, "rlnRefsAreCtfCorrected": 1, "rlnFixSigmaNoiseEstimates": 0,
        }

    def _diameter_angst(self) -> float:
        return self.clf.settings.particle_diameter_px * self.clf.model.pixel_size_angst


def run(options: Options, job_dir: str | Path) -> Path:
    """Run 2D classification into ``job_dir``; returns the last iteration's data.star."""
    from vitrify.core.device import resolve_device, tune_host_allocator
    from vitrify.core.threads import configure_threads
    from vitrify.jobs._class2d_continue import resume_state

    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(options.device)
    configure_threads(options.threads)  # run_job did so already; here for direct calls of run()
    torch.set_flush_denormal(True)
    tune_host_allocator()
    state = resume_state(options, device) if options.continue_from else None
    options = state.options if state else options
    alone = int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1  # ranks check their shard's stacks
    inp = validate_input(options.input_star, options.n_classes, options.do_ctf, check_stacks=alone)  # before compute
    diameter_px = diameter_in_px(options.particle_diameter_angst, inp)
    user_refs = (read_reference_stack(options.reference_stack, inp, options.n_classes)
                 if options.reference_stack and not state else None)
    ranks, device = _join_ranks(device, inp.n_particles)
    try:
        return _classify(options, job_dir, inp, diameter_px, device, state, ranks, user_refs)
    finally:
        if ranks is not None:
            import torch.distributed as dist

            dist.destroy_process_group()


def _classify(options: Options, job_dir: Path, inp: InputParticles, diameter_px: float, device: torch.device,
              state, ranks: Ranks | None, user_refs: torch.Tensor | None = None) -> Path:
    """Load this rank's particles, start (``user_refs`` ``(K, n, n)`` or blobs) or resume, iterate."""
    start_row, stop_row = (0, inp.n_particles) if ranks is None else ranks.rows
    here = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1) if ranks is not None else 1
    check_memory(inp, device, stop_row - start_row, here)
    window = make_window(inp.box_px)
    load = partial(load_particles, inp, window, diameter_px, options.do_ctf, options.ctf_intact_first_peak,
                   device)
    particles = load(None) if ranks is None else _load_shard(load, inp, ranks)
    sampling = make_sampling(options.psi_step_deg, options.offset_range_px, options.offset_step_px, device)
    if state:
        model, moments, start = state.model, state.moments, state.iteration + 1
        state.apply_to(particles, slice(start_row, stop_row))
    else:
        first = particles if ranks is None else load(start_rows(inp.group_index))
        model = initial_model(first, window, options.n_classes, diameter_px, inp.pixel_size_angst,
                              1.0 if options.algorithm == "vdam" else options.tau2_fudge, options.seed,
                              sigma_offset_px=max(options.offset_range_px, 1.0) / 2.0, user_refs=user_refs)
        moments, start = None, 1
        del first
    clf = Classifier2D(_settings(options, diameter_px, device), model, particles, window, sampling, moments,
                       ranks)
    if ranks is not None and ranks.rank > 0:  # rank 0 writes; the others send it their assignments
        follower = _Follower(options, job_dir, clf)
        if start == 1:
            follower.write(0)
        clf.run(start, follower)
        _report_memory(clf, None)
        return iteration_paths(job_dir, options.root, options.iterations)["data"]
    writer = _Writer(options, job_dir, inp, clf, window, diameter_px)
    if start == 1:
        writer.write(0)
    clf.run(start, writer)
    _report_memory(clf, writer.log)
    return iteration_paths(job_dir, options.root, options.iterations)["data"]


def _load_shard(load, inp: InputParticles, ranks: Ranks) -> ParticleSet:
    """Check and read this rank's shard; a rank that cannot read its particles (a NaN image, a bad stack)
    stops every rank with its message, so that none waits for it (and rank 0 reports it)."""
    rows = np.arange(*ranks.rows)
    try:
        check_rows(inp, rows)
        particles, error = load(rows), ""
    except InputError as err:
        particles, error = None, str(err)
    for rank, text in enumerate(ranks.all_gather_text(error)):
        if text:
            raise InputError(text if rank == ranks.rank else f"{text} (read by rank {rank})")
    return particles


def _report_memory(clf: Classifier2D, log) -> None:
    """Log (``log`` of rank 0) how many particles each rank held and its peak memory (a collective)."""
    import resource

    dev = clf.particles.ft.device
    mine = [clf.particles.n_particles, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0]
    rows = [mine] if clf.ranks is None else clf.ranks.all_gather_values(mine, dev)
    for rank, (held, rss, gpu) in enumerate(rows if log is not None else []):
        log.info("rank %d of %d held %d of %d particles; peak resident memory %.1f MiB%s", rank, len(rows),
                 held, clf.n_total, rss / 2 ** 20, f", GPU {gpu / 2 ** 20:.1f} MiB" if gpu else "")


__all__ = ["ALGORITHMS", "DEFAULT_ITER", "Options", "job_star_from_options", "options_from_job_star", "run"]

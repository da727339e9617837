"""2D classification (RELION ``relion.class2d``): EM or VDAM on a particles.star.

``run(options, job_dir)`` validates the input (before any compute), loads the particles
lazily into the engine's packed layout, builds the Gaussian-blob starting model (or reads
a written iteration with ``continue_from``), iterates with :class:`vitrify.ml.optimiser.
Classifier2D` and writes RELION-4 files at RELION's cadence (every iteration for EM;
every ``grad_write_iter`` iterations and the last for VDAM; always iteration 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vitrify.io.errors import InputError
from vitrify.jobs._class2d_data import InputParticles, check_memory, load_particles, validate_input
from vitrify.jobs._class2d_output import (data_table, iteration_paths, model_blocks, overall_accuracy,
                                          write_gallery, write_moments, write_tables)
from vitrify.jobs.base import check_abort, job_logger
from vitrify.ml.accuracy import expected_accuracy
from vitrify.ml.expectation import make_sampling
from vitrify.ml.optimiser import Classifier2D, EngineSettings, IterationInfo
from vitrify.ml.starts import initial_model
from vitrify.ml.vdam import REPLACEMENT_SOURCES
from vitrify.ml.window import make_window

ALGORITHMS = ("vdam", "em")
DEFAULT_ITER = {"vdam": 200, "em": 25}


@dataclass(frozen=True)
class Options:
    """Options of a Class2D job (CLI flags and RELION job.star values map onto these)."""

    input_star: str = ""
    n_classes: int = 50
    particle_diameter_angst: float = 0.0
    algorithm: str = "vdam"
    nr_iter: int = -1
    psi_step_deg: float = 12.0
    offset_range_px: float = 5.0
    offset_step_px: float = 2.0
    tau2_fudge: float = 2.0
    do_ctf: bool = True
    ctf_intact_first_peak: bool = False
    class_inactivity_threshold: float = 0.1
    replacement_source: str = "largest"
    grad_write_iter: int = 10
    ini_subset: int = -1
    fin_subset: int = -1
    max_significant: int = -1
    oversampling: int = 1
    seed: int = 1
    threads: int = 0
    device: str = "auto"
    memory_budget_mb: int = 0
    continue_from: str = ""
    root: str = "run"

    def __post_init__(self) -> None:
        def bad(field, message, expected):
            raise InputError(message, field=field, expected=expected)

        if self.algorithm not in ALGORITHMS:
            bad("--algorithm", f"unknown algorithm {self.algorithm!r}", " | ".join(ALGORITHMS))
        if self.replacement_source not in REPLACEMENT_SOURCES:
            bad("--replace-from", f"unknown replacement source {self.replacement_source!r}",
                " | ".join(REPLACEMENT_SOURCES))
        if not self.continue_from and not self.input_star:
            bad("--i", "no input particles", "a particles.star file")
        if self.n_classes < 1:
            bad("--K", f"{self.n_classes} classes", "at least 1")
        if not self.continue_from and not self.particle_diameter_angst > 0:
            bad("--particle-diameter", "particle diameter must be given", "a diameter in Å > 0")
        if self.psi_step_deg <= 0 or self.psi_step_deg > 180:
            bad("--psi-step", f"psi step {self.psi_step_deg}", "0 < step <= 180 degrees")
        if self.offset_range_px < 0 or self.offset_step_px <= 0:
            bad("--offset-range/--offset-step", "negative range or non-positive step", "range >= 0, step > 0")
        if self.tau2_fudge <= 0:
            bad("--tau2-fudge", f"T = {self.tau2_fudge}", "T > 0")
        if self.algorithm == "vdam" and self.seed == 0:
            bad("--seed", "seed 0 is not allowed with VDAM (RELION)", "a non-zero seed")
        if self.nr_iter == 0 or self.nr_iter < -1:
            bad("--iter", f"{self.nr_iter} iterations", "a positive number")
        if self.oversampling not in (0, 1):
            bad("--oversampling", f"oversampling {self.oversampling}", "0 (coarse pass only) or 1")
        if self.grad_write_iter < 1:
            bad("--grad-write-iter", f"{self.grad_write_iter}", "at least 1")

    @property
    def iterations(self) -> int:
        """Requested iterations (RELION defaults: 200 VDAM mini-batches, 25 EM iterations)."""
        return self.nr_iter if self.nr_iter > 0 else DEFAULT_ITER[self.algorithm]


def _yes(value: str) -> bool:
    return str(value).strip().lower() in ("yes", "true", "1", "y")


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION class2d ``job.star`` values (``fn_img``, ``nr_classes``, ``do_grad`` ...).

    RELION's GUI passes twice its psi and offset steps; so do we (``psi_sampling`` 6 -> 12 degrees).
    """
    grad = _yes(values.get("do_grad", "Yes"))
    iters_key = "nr_iter_grad" if grad else "nr_iter"
    device = "cuda" if _yes(values.get("use_gpu", "No")) else "cpu"
    return Options(
        input_star=values.get("fn_img", ""),
        n_classes=int(float(values.get("nr_classes", 50))),
        particle_diameter_angst=float(values.get("particle_diameter", 0) or 0),
        algorithm="vdam" if grad else "em",
        nr_iter=int(float(values.get(iters_key, values.get("nr_iter", DEFAULT_ITER["vdam" if grad else "em"])))),
        psi_step_deg=2.0 * float(values.get("psi_sampling", 6)),
        offset_range_px=float(values.get("offset_range", 5)),
        offset_step_px=2.0 * float(values.get("offset_step", 1)),
        tau2_fudge=float(values.get("tau_fudge", 2)),
        do_ctf=_yes(values.get("do_ctf_correction", "Yes")),
        ctf_intact_first_peak=_yes(values.get("ctf_intact_first_peak", "No")),
        threads=int(float(values.get("nr_threads", 1) or 1)),
        device=device,
        continue_from=values.get("fn_cont", ""),
    )


def _settings(options: Options, diameter_px: float, device: torch.device) -> EngineSettings:
    budget = options.memory_budget_mb or (1024 if device.type == "cuda" else 64)
    return EngineSettings(algorithm=options.algorithm, nr_iter=options.iterations,
                          tau2_fudge=options.tau2_fudge, particle_diameter_px=diameter_px,
                          max_significant=options.max_significant,
                          class_inactivity_threshold=options.class_inactivity_threshold,
                          replacement_source=options.replacement_source,
                          seed=options.seed, budget_bytes=budget * 2 ** 20, oversampling=options.oversampling,
                          ini_subset=options.ini_subset, fin_subset=options.fin_subset)


def _relative(path: Path) -> str:
    """Path relative to the project directory (cwd) when inside it, else absolute."""
    try:
        return os.path.relpath(path.resolve(), Path.cwd().resolve()) if path.resolve().is_relative_to(
            Path.cwd().resolve()) else str(path.resolve())
    except ValueError:
        return str(path.resolve())


class _Writer:
    """Writes an iteration's files at RELION's cadence."""

    def __init__(self, options: Options, job_dir: Path, inp: InputParticles, clf: Classifier2D) -> None:
        self.options, self.job_dir, self.inp, self.clf = options, job_dir, inp, clf
        optics = inp.star.optics
        self.group_names = [str(v) for v in optics.get("rlnOpticsGroupName", optics["rlnOpticsGroup"])]
        counts = torch.bincount(clf.particles.group.cpu(), minlength=len(self.group_names))
        self.group_counts = [int(c) for c in counts]
        self.log = job_logger(job_dir)

    def due(self, info: IterationInfo) -> bool:
        last = info.iteration == self.options.iterations
        return (self.options.algorithm == "em" or last or info.iteration == 0
                or info.iteration % self.options.grad_write_iter == 0)

    def __call__(self, info: IterationInfo) -> None:
        model = self.clf.model
        self.log.info("iteration %d: %d particles, radius %d (%.1f A), T %.2f, step %.3f, LL %.4g, "
                      "pmax %.3f, replaced %s", info.iteration, info.n_particles, model.current_radius,
                      model.resolution_angst(model.current_radius), info.tau2_fudge, info.stepsize,
                      model.log_likelihood, model.ave_pmax, info.replaced)
        if self.due(info):
            self.write(info.iteration)
        check_abort(self.job_dir)

    def write(self, it: int) -> dict[str, Path]:
        opt, model, clf = self.options, self.clf.model, self.clf
        paths = iteration_paths(self.job_dir, opt.root, it)
        model.class_accuracy_psi_deg, model.class_accuracy_offset_px = expected_accuracy(
            model, clf.particles, clf.window, seed=opt.seed + it)
        grad = opt.algorithm == "vdam"
        pix = model.pixel_size_angst
        write_gallery(paths["classes_png"], model.refs, model.pdf_class)
        from vitrify.io.mrc import write_mrc

        write_mrc(paths["classes"], model.refs.cpu().numpy(), pix)
        if grad and clf.moments is not None:
            write_moments(paths, clf.moments, pix)
        star = model_blocks(model, paths, _relative, grad, self.group_names, self.group_counts)
        data = data_table(self.inp.star.data, clf.particles, pix)
        write_tables(paths, self.inp.star.optics, data, star, self._optimiser(paths, it),
                     self._sampling())
        return paths

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
            "rlnOutputRootName": _relative(self.job_dir / o.root),
            "rlnModelStarFile": _relative(paths["model"]), "rlnExperimentalDataStarFile": _relative(paths["data"]),
            "rlnOrientSamplingStarFile": _relative(paths["sampling"]), "rlnCurrentIteration": it,
            "rlnNumberOfIterations": o.iterations, "rlnDoSplitRandomHalves": 0,
            "rlnAdaptiveOversampleOrder": o.oversampling, "rlnAdaptiveOversampleFraction": clf.settings.adaptive_fraction,
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
    from vitrify.jobs._class2d_continue import resume_state

    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(options.device)
    if options.threads > 0:
        torch.set_num_threads(options.threads)
    torch.set_flush_denormal(True)
    tune_host_allocator()
    state = resume_state(options, device) if options.continue_from else None
    options = state.options if state else options
    inp = validate_input(options.input_star, options.n_classes, options.do_ctf)  # before compute
    diameter_px = options.particle_diameter_angst / inp.pixel_size_angst
    if diameter_px > inp.box_px:
        raise InputError(f"particle diameter {options.particle_diameter_angst} Å is {diameter_px:.0f} px",
                         field="--particle-diameter", expected=f"at most the box, {inp.box_px} px")
    check_memory(inp, device)
    window = make_window(inp.box_px)
    particles = load_particles(inp, window, diameter_px, options.do_ctf, options.ctf_intact_first_peak, device)
    sampling = make_sampling(options.psi_step_deg, options.offset_range_px, options.offset_step_px, device)
    if state:
        model, moments, start = state.model, state.moments, state.iteration + 1
        state.apply_to(particles)
    else:
        model = initial_model(particles, window, options.n_classes, diameter_px, inp.pixel_size_angst,
                              1.0 if options.algorithm == "vdam" else options.tau2_fudge, options.seed,
                              sigma_offset_px=max(options.offset_range_px, 1.0) / 2.0)
        moments, start = None, 1
    clf = Classifier2D(_settings(options, diameter_px, device), model, particles, window, sampling, moments)
    writer = _Writer(options, job_dir, inp, clf)
    if start == 1:
        writer.write(0)
    clf.run(start, writer)
    return iteration_paths(job_dir, options.root, options.iterations)["data"]


__all__ = ["Options", "options_from_job_star", "run"]


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION Class2D job.star values for ``options`` (inverse of :func:`options_from_job_star`:
    half the psi and offset steps, as RELION's GUI; settings RELION lacks as ``vitrify_*`` rows,
    see :mod:`vitrify.jobs.jobstar_values`)."""
    from vitrify.jobs.jobstar_values import number_text as num, with_extras, yes_no

    grad = options.algorithm == "vdam"
    values = {"fn_img": options.input_star, "nr_classes": num(options.n_classes),
              "particle_diameter": num(options.particle_diameter_angst), "do_grad": yes_no(grad),
              "nr_iter_grad" if grad else "nr_iter": num(options.iterations),
              "psi_sampling": num(options.psi_step_deg / 2), "offset_range": num(options.offset_range_px),
              "offset_step": num(options.offset_step_px / 2), "tau_fudge": num(options.tau2_fudge),
              "do_ctf_correction": yes_no(options.do_ctf), "ctf_intact_first_peak": yes_no(options.ctf_intact_first_peak),
              "nr_threads": num(max(options.threads, 1)), "use_gpu": yes_no(options.device == "cuda"),
              "fn_cont": options.continue_from}
    return with_extras(options, values, options_from_job_star)


__all__ += ["job_star_from_options"]

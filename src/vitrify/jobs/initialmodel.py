"""3D initial model (RELION ``relion.initialmodel``): VDAM (or EM) from Gaussian blobs, no reference.

``run(options, job_dir)`` validates the input before any compute (particles.star and its stacks,
CTF columns, point group, mini-batch size, an optional start map's box and pixel size), loads the
particles into the engine's packed layout, builds the blob start, iterates with
:class:`vitrify.ml.inimodel.Refiner3D` and writes RELION-4 files at RELION's cadence (iteration 0,
every ``grad_write_iter`` and the last). It ends with ``initial_model.mrc``: the largest class (or
``choose_class``); for a point group other than C1 refined in C1 (``run_c1``, RELION's default) its
symmetry axes are found, the map is turned into RELION's standard orientation and symmetrised, as
``relion_align_symmetry --apply_sym --select_largest_class`` does.

Under ``torchrun --nproc-per-node N`` it runs data-parallel (:mod:`vitrify.jobs._ranks`): each rank
reads its shard of the particles (and the first rows for the blob start), the E-step sums are
all-reduced, rank 0 gathers the assignments and alone writes.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from vitrify._progress import track
from vitrify.io.errors import InputError
from vitrify.io.star import portable_image_names, portable_name
from vitrify.jobs._class2d_data import (InputParticles, check_engine3d_inputs, check_memory, load_particles,
                                        start_rows, validate_input)
from vitrify.jobs._initialmodel_continue import resume_3d, state_path, write_state_3d
from vitrify.jobs._initialmodel_output import (data_table_3d, iteration_paths, model_blocks_3d, sampling_block,
                                               write_sections_png, write_volumes)
from vitrify.jobs._ranks import (Follower, join_ranks, leave_ranks, lend_gathered, on_rank0, shard_rows_of)
from vitrify.jobs.base import check_abort, job_logger
from vitrify.jobs.options.initialmodel import (ALGORITHMS, DEFAULT_ITER, Options, job_star_from_options,
                                              options_from_job_star)
from vitrify.ml.expectation import make_sampling
from vitrify.ml.inimodel import Iteration3D, Refiner3D, Settings3D
from vitrify.ml.window import make_window

#: the job runs data-parallel on torch.distributed ranks (torchrun; a queue template's N copies)
RUNS_ON_RANKS = True


def _settings(options: Options, diameter_px: float, symmetry: str, device: torch.device) -> Settings3D:
    budget = options.memory_budget_mb or (1024 if device.type == "cuda" else 64)
    return Settings3D(algorithm=options.algorithm, nr_iter=options.iterations, tau2_fudge=options.tau2_fudge,
                      particle_diameter_px=diameter_px, symmetry=symmetry, healpix_order=options.order,
                      max_significant=options.max_significant, fine_cap=options.fine_cap,
                      class_inactivity_threshold=options.class_inactivity_threshold, seed=options.seed,
                      budget_bytes=budget * 2 ** 20, flatten_solvent=options.flatten_solvent,
                      ini_subset=options.ini_subset, fin_subset=options.fin_subset, oversampling=options.oversampling)


def check_inputs(options: Options, inp: InputParticles) -> float:
    """Checks that need the particles (before any compute); returns the diameter in px."""
    diameter_px = check_engine3d_inputs(options, inp)
    if options.reference:
        _check_reference(Path(options.reference), inp)
    return diameter_px


def _check_reference(path: Path, inp: InputParticles) -> None:
    from vitrify.io.mrc import read_mrc_header

    if not path.exists():
        raise InputError("file not found", path=path, field="--ref", expected="an MRC map")
    head = read_mrc_header(path)
    shape, pix = tuple(head["shape"]), float(head.get("pixel_size_angst") or 0.0)
    if shape != (inp.box_px,) * 3:
        raise InputError(f"reference box {shape} differs from the particles' {inp.box_px} px", path=path,
                         field="--ref", expected=f"a {inp.box_px}^3 map (rescale it first)")
    if pix > 0 and abs(pix - inp.pixel_size_angst) > 0.01 * inp.pixel_size_angst:
        raise InputError(f"reference pixel size {pix:.4g} Å differs from the particles' "
                         f"{inp.pixel_size_angst:.4g} Å", path=path, field="--ref",
                         expected="the particles' pixel size (rescale the map first)")


class _Writer:
    """Writes an iteration's files at RELION's cadence and advances the progress bar."""

    def __init__(self, options: Options, job_dir: Path, inp: InputParticles, ref: Refiner3D, done: int = 0) -> None:
        self.options, self.job_dir, self.inp, self.ref = options, job_dir, inp, ref
        self.image_names = portable_image_names(inp.star.data["rlnImageName"], inp.base_dir, job_dir)
        optics = inp.star.optics
        self.group_names = [str(v) for v in optics.get("rlnOpticsGroupName", optics["rlnOpticsGroup"])]
        counts = torch.bincount(ref.particles.group.cpu(), minlength=len(self.group_names))
        self.group_counts = [int(c) for c in counts]
        self.log = job_logger(job_dir)
        left = options.iterations - done
        self.bar = iter(track(range(left), "initial model", total=left))

    def __call__(self, info: Iteration3D) -> None:
        model = self.ref.model
        self.log.info("iteration %d: %d particles, order %d, radius %d (%.1f A), T %.2f, step %.3f, pmax %.3f",
                      info.iteration, info.n_particles, info.healpix_order, model.current_radius,
                      model.resolution_angst(model.current_radius), info.tau2_fudge, info.stepsize, model.ave_pmax)
        next(self.bar, None)
        last = info.iteration == self.options.iterations
        if self.options.algorithm == "em" or last or info.iteration % self.options.grad_write_iter == 0:
            self.write(info.iteration)
        check_abort(self.job_dir)

    def write(self, it: int) -> dict[str, Path]:
        opt, ref, model = self.options, self.ref, self.ref.model
        paths = iteration_paths(self.job_dir, opt.root, it, model.n_classes)
        pix = model.pixel_size_angst
        write_volumes(paths, model.refs, pix)
        write_sections_png(paths["slices_png"], model.refs, model.pdf_class)
        step = ref.orientations.step_deg / (2 if opt.oversampling else 1)
        star = model_blocks_3d(model, paths, self._name, self.group_names, self.group_counts, step)
        data = data_table_3d(self.inp.star.data, ref.particles, ref.angles_deg, pix, self.image_names)
        from vitrify.io.star import write_star, write_star_optics

        write_star(paths["model"], star)
        o = ref.orientations
        write_star(paths["sampling"], {"sampling_general": sampling_block(
            o.order, ref.settings.symmetry, o.step_deg, opt.offset_range_px, opt.offset_step_px, pix)})
        write_star_optics(paths["data"], self.inp.star.optics, data, "particles")
        write_state_3d(state_path(paths["model"]), it, ref, opt)  # before optimiser.star: the last file
        write_star(paths["optimiser"], {"optimiser_general": self._optimiser(paths, it)})
        return paths

    def _name(self, path: Path) -> str:
        return portable_name(path, self.job_dir)

    def _optimiser(self, paths: dict[str, Path], it: int) -> dict:
        o, ref = self.options, self.ref
        sched, grad = ref.schedule, o.algorithm == "vdam"
        ini, fin = sched.subsets()
        return {
            "rlnOutputRootName": self._name(self.job_dir / o.root), "rlnModelStarFile": self._name(paths["model"]),
            "rlnExperimentalDataStarFile": self._name(paths["data"]),
            "rlnOrientSamplingStarFile": self._name(paths["sampling"]), "rlnCurrentIteration": it,
            "rlnNumberOfIterations": o.iterations, "rlnDoSplitRandomHalves": 0,
            "rlnAdaptiveOversampleOrder": o.oversampling, "rlnAdaptiveOversampleFraction": 0.999,
            "rlnRandomSeed": o.seed, "rlnParticleDiameter": o.particle_diameter_angst, "rlnWidthMaskEdge": 5,
            "rlnDoZeroMask": 1, "rlnDoSolventFlattening": int(o.flatten_solvent), "rlnSolventMaskName": "None",
            "rlnTauSpectrumName": "None", "rlnMaximumCoarseImageSize": -1, "rlnHighresLimitExpectation": -1.0,
            "rlnIncrementImageSize": ref.settings.incr_size, "rlnDoMapEstimation": 1,
            "rlnDoGradientRefine": int(grad), "rlnDoStochasticGradientDescent": 0, "rlnGradEmIters": 0,
            "rlnGradHasConverged": 0, "rlnGradCurrentStepsize": sched.stepsize_at(it) if grad else 0.0,
            "rlnGradSubsetOrder": 0, "rlnSgdInitialIterationsFraction": sched.ini_frac,
            "rlnSgdFinalIterationsFraction": sched.fin_frac, "rlnSgdInitialSubsetSize": ini,
            "rlnSgdFinalSubsetSize": fin, "rlnSgdMuFactor": ref.settings.mu,
            "rlnSgdClassInactivityThreshold": o.class_inactivity_threshold,
            "rlnSgdWriteEverySubset": o.grad_write_iter, "rlnSgdStepsize": sched.stepsize,
            "rlnSgdStepsizeScheme": f"{sched.stepsize_start}-step", "rlnTau2FudgeScheme": "step",
            "rlnTau2FudgeArg": o.tau2_fudge, "rlnMaximumSignificantPoses": o.max_significant,
            "rlnDoAutoRefine": 0, "rlnDoAutoSampling": int(o.order < 0), "rlnHasConverged": 0,
            "rlnDoCorrectNorm": 0, "rlnDoCorrectScale": 0, "rlnDoCorrectCtf": int(o.do_ctf),
            "rlnDoIgnoreCtfUntilFirstPeak": int(o.ctf_intact_first_peak), "rlnCtfDataArePhaseFlipped": 0,
            "rlnDoCenterClasses": 0, "rlnRefsAreCtfCorrected": 1, "rlnFixSigmaNoiseEstimates": 0,
        }


def write_initial_model(options: Options, job_dir: Path, ref: Refiner3D) -> Path:
    """``initial_model.mrc``: the chosen class, in the point group's standard orientation when C1 was run."""
    from vitrify.io.mrc import write_mrc
    from vitrify.ml.mapalign import find_symmetry_axes
    from vitrify.ml.vdam3d import symmetrise

    model = ref.model
    k = options.choose_class - 1 if options.choose_class > 0 else int(torch.argmax(model.pdf_class))
    volume = model.refs[k].float()
    log = job_logger(job_dir)
    if options.symmetry.strip().upper() != "C1" and options.run_c1:
        found = find_symmetry_axes(volume.cpu(), options.symmetry)
        log.info("symmetry %s: correlation with the symmetrised map %.3f (as refined: %.3f)", options.symmetry,
                 found.correlation, found.correlation_before)
        volume = symmetrise(found.aligned[None], options.symmetry)[0]
    path = job_dir / "initial_model.mrc"
    write_mrc(path, volume.cpu().numpy(), model.pixel_size_angst)
    return path


def run(options: Options, job_dir: str | Path) -> Path:
    """Run the initial model into ``job_dir``; returns ``initial_model.mrc``."""
    from vitrify.core.device import resolve_device, tune_host_allocator
    from vitrify.core.threads import configure_threads

    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(options.device)
    configure_threads(options.threads)
    torch.set_flush_denormal(True)
    tune_host_allocator()
    resume = resume_3d(options, device) if options.continue_from else None
    options = resume.options if resume else options
    inp = validate_input(options.input_star, options.n_classes, options.do_ctf)  # before compute
    diameter_px = check_inputs(options, inp)
    ranks, device = join_ranks(device, inp.n_particles)
    try:
        return _run(options, job_dir, inp, diameter_px, resume, ranks, device)
    finally:
        leave_ranks(ranks)


def _run(options: Options, job_dir: Path, inp: InputParticles, diameter_px: float, resume, ranks,
         device: torch.device) -> Path:
    """Load this rank's particles, start or resume, iterate; rank 0 (or the one process) writes."""
    from vitrify.ml.starts3d import initial_model3d, reference_model3d

    rows = shard_rows_of(ranks, inp.n_particles)
    check_memory(inp, device, len(rows))
    window = make_window(inp.box_px)
    load = partial(load_particles, inp, window, diameter_px, options.do_ctf, options.ctf_intact_first_peak, device)
    particles = load(rows)
    start_set = particles if ranks is None or resume else load(start_rows(inp.group_index))  # the start's rows
    sampling = make_sampling(30.0, options.offset_range_px, options.offset_step_px, device)
    sigma_offset = max(options.offset_range_px, 1.0) / 2.0
    if resume:
        model = resume.model
    elif options.reference:
        from vitrify.io.mrc import read_mrc

        start = torch.as_tensor(read_mrc(options.reference)[0], device=device)
        model = reference_model3d(start, start_set, window, options.n_classes, diameter_px, inp.pixel_size_angst,
                                  sigma_offset)
    else:
        model = initial_model3d(start_set, window, options.n_classes, diameter_px, inp.pixel_size_angst,
                                options.seed, sigma_offset)
    del start_set
    symmetry = "C1" if options.run_c1 else options.symmetry
    ref = Refiner3D(_settings(options, diameter_px, symmetry, device), model, particles, window, sampling, ranks)
    if ranks is not None and ranks.rank > 0:  # rank 0 writes; the others send it their assignments
        follower = Follower(job_dir, [ref], partial(_due, options))
        if resume:
            resume.apply_to(ref, slice(*ranks.rows))
        else:
            follower.write()
        ref.run(resume.iteration + 1 if resume else 1, follower)
        return job_dir / "initial_model.mrc"
    writer = _Writer(options, job_dir, inp, ref, resume.iteration if resume else 0)
    if ranks is not None:
        writer.group_counts = [int(c) for c in np.bincount(inp.group_index, minlength=len(writer.group_names))]
        lend_gathered(writer, "write", [ref])
    if resume:
        resume.apply_to(ref, slice(None) if ranks is None else slice(*ranks.rows))
    else:
        writer.write(0)
    ref.run(resume.iteration + 1 if resume else 1, on_rank0(writer, job_dir, [ref], writer.log))
    return write_initial_model(options, job_dir, ref)


def _due(options: Options, info: Iteration3D) -> bool:
    """Whether rank 0 writes after iteration ``info`` (_Writer's cadence)."""
    it = info.iteration
    return options.algorithm == "em" or it == options.iterations or it % options.grad_write_iter == 0


__all__ = ["ALGORITHMS", "DEFAULT_ITER", "Options", "job_star_from_options", "options_from_job_star", "run"]

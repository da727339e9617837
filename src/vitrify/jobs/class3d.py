"""3D classification (RELION ``relion.class3d``): K classes from one reference map, EM (or VDAM).

``run(options, job_dir)`` checks every input before any compute (particles.star and its stacks,
CTF columns, point group, fewer particles than classes, the reference, which is rescaled when its
box or pixel size differs, and the solvent mask), loads the particles, low-passes the reference to
``ini_high`` in every class, seeds the classes by a random assignment in the first iteration
(:mod:`vitrify.ml.class3d`) and iterates with the 3D engine of the initial model
(:class:`vitrify.ml.inimodel.Refiner3D`), writing RELION-4 files every iteration
(:mod:`vitrify.jobs._class3d_output`). ``continue_from`` goes on from a written iteration.

Under ``torchrun --nproc-per-node N`` it runs data-parallel (:mod:`vitrify.jobs._ranks`): each rank
reads its shard of the particles (and the first rows for the starting noise spectra), the E-step
sums are all-reduced, rank 0 gathers the assignments and alone writes.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from vitrify.io.errors import InputError
from vitrify.jobs._class2d_data import (InputParticles, check_engine3d_inputs, check_memory, load_particles,
                                        start_rows, validate_input)
from vitrify.jobs._class3d_input import Resume, read_references, read_resume
from vitrify.jobs._class3d_output import Class3DWriter
from vitrify.jobs._refine3d_input import read_solvent_mask
from vitrify.jobs._ranks import (Follower, join_ranks, leave_ranks, lend_gathered, on_rank0, rank_logger,
                                 shard_rows_of)
from vitrify.jobs.options.class3d import DEFAULT_ITER, Options, job_star_from_options, options_from_job_star
from vitrify.ml.class3d import Classifier3D, reference_start
from vitrify.ml.expectation import make_sampling
from vitrify.ml.inimodel import Settings3D
from vitrify.ml.window import make_window

#: the job runs data-parallel on torch.distributed ranks (torchrun; a queue template's N copies)
RUNS_ON_RANKS = True


def _settings(options: Options, diameter_px: float, device: torch.device, has_mask: bool) -> Settings3D:
    budget = options.memory_budget_mb or (1024 if device.type == "cuda" else 64)
    return Settings3D(algorithm=options.algorithm, nr_iter=options.iterations, tau2_fudge=options.tau2_fudge,
                      particle_diameter_px=diameter_px, symmetry=options.symmetry,
                      healpix_order=options.healpix_order, max_significant=options.max_significant,
                      fine_cap=options.fine_cap, class_inactivity_threshold=options.class_inactivity_threshold,
                      seed=options.seed, budget_bytes=budget * 2 ** 20,
                      flatten_solvent=options.flatten_solvent and not has_mask, ini_subset=options.ini_subset,
                      fin_subset=options.fin_subset, oversampling=options.oversampling)


def check_inputs(options: Options, inp: InputParticles) -> float:
    """Checks that need the particles (before any compute); returns the diameter in px."""
    poses = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
    if options.sigma_ang_deg > 0 and not all(c in inp.star.data.columns for c in poses):
        raise InputError(f"local angular searches (--sigma-ang {options.sigma_ang_deg:g}) need the particles' poses",
                         path=options.input_star, field="rlnAngleRot/Tilt/Psi",
                         expected="particles with poses (a refinement's or classification's data.star), or "
                                  "--sigma-ang 0")
    return check_engine3d_inputs(options, inp)


def _start(options: Options, resume: Resume | None, volume: torch.Tensor | None, inp: InputParticles, particles,
           window, diameter_px: float, mask: torch.Tensor | None, device: torch.device, rows: slice = slice(None)):
    """The iteration-0 model (the low-passed reference ``volume`` in every class) or the continued one (the
    particles' assignments of ``rows``)."""
    if resume is not None:
        resume.apply_to(particles, rows)
        return resume.model(device)
    return reference_start(volume.to(device), particles, window, options.n_classes, diameter_px,
                           inp.pixel_size_angst, options.ini_high_angst, max(options.offset_range_px, 1.0) / 2.0,
                           None if mask is None else mask.to(device))


def run(options: Options, job_dir: str | Path) -> Path:
    """Run the classification into ``job_dir``; returns the last ``run_itNNN_model.star``."""
    from vitrify.core.device import resolve_device, tune_host_allocator
    from vitrify.core.threads import configure_threads

    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(options.device)
    configure_threads(options.threads)
    torch.set_flush_denormal(True)
    tune_host_allocator()
    log = rank_logger(job_dir)
    resume = read_resume(options) if options.continue_from else None
    if resume is not None:
        options = resume.options
    inp = validate_input(options.input_star, options.n_classes, options.do_ctf)  # before compute
    diameter_px = check_inputs(options, inp)
    mask = read_solvent_mask(options.solvent_mask, inp) if options.solvent_mask else None
    volume = read_references(options.reference, inp, options.n_classes, log) if resume is None else None
    ranks, device = join_ranks(device, inp.n_particles)
    try:
        return _classify(options, job_dir, inp, diameter_px, mask, volume, resume, ranks, device, log)
    finally:
        leave_ranks(ranks)


def _classify(options: Options, job_dir: Path, inp: InputParticles, diameter_px: float, mask, volume, resume,
              ranks, device: torch.device, log) -> Path:
    """Load this rank's particles, start or resume, iterate; rank 0 (or the one process) writes."""
    rows = shard_rows_of(ranks, inp.n_particles)
    check_memory(inp, device, len(rows))
    window = make_window(inp.box_px)
    load = partial(load_particles, inp, window, diameter_px, options.do_ctf, options.ctf_intact_first_peak, device)
    particles = load(rows)
    start_set = particles if ranks is None or resume is not None else load(start_rows(inp.group_index))
    model = _start(options, resume, volume, inp, start_set, window, diameter_px, mask, device,
                   slice(rows[0], rows[-1] + 1) if len(rows) else slice(0, 0))
    del start_set  # under ranks: the first rows, read by every rank for the starting noise spectra
    sampling = make_sampling(30.0, options.offset_range_px, options.offset_step_px, device)
    start = volume if volume is not None else resume.refs
    seeds = all(torch.equal(start[0], v) for v in start)  # K classes from one reference: random seeds
    ref = Classifier3D(_settings(options, diameter_px, device, mask is not None), model, particles, window,
                       sampling, mask=mask, seed_classes=seeds, sigma_ang_deg=options.sigma_ang_deg, ranks=ranks)
    if options.sigma_ang_deg > 0 and resume is None:
        poses = inp.star.data[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(dtype="float64")[rows]
        ref.angles_deg = torch.tensor(poses, device=ref.angles_deg.device)
    first = 1 if resume is None else resume.iteration + 1
    if ranks is not None and ranks.rank > 0:  # rank 0 writes; the others send it their assignments
        follower = Follower(job_dir, [ref], partial(_due, options))
        if resume is None:
            follower.write()
        else:
            ref.angles_deg = torch.tensor(resume.angles_deg[rows], device=ref.angles_deg.device)
        ref.run(first, follower)
        return job_dir / f"{options.root}_it{options.iterations:03d}_model.star"
    writer = Class3DWriter(options, job_dir, inp, ref, first)
    if ranks is not None:
        writer.group_counts = [int(c) for c in np.bincount(inp.group_index, minlength=len(writer.group_names))]
        lend_gathered(writer, "write", [ref])
    if resume is None:
        writer.write(0)
    else:
        ref.angles_deg = torch.tensor(resume.angles_deg[rows], device=ref.angles_deg.device)
        log.info("continuing from iteration %d of %s", resume.iteration, options.input_star)
    ref.run(first, on_rank0(writer, job_dir, [ref], log))
    return job_dir / f"{options.root}_it{options.iterations:03d}_model.star"


def _due(options: Options, info) -> bool:
    """Whether rank 0 writes after iteration ``info`` (Class3DWriter's cadence)."""
    it = info.iteration
    return options.algorithm == "em" or it == options.iterations or it % options.grad_write_iter == 0


__all__ = ["DEFAULT_ITER", "Options", "job_star_from_options", "options_from_job_star", "run"]

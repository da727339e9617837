"""Refine3D set-up shared by a new run and a continued one: engine settings, masks, the two halves."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import partial

import torch

from vitrify.jobs._class2d_data import InputParticles, check_memory, load_particles, validate_input
from vitrify.jobs._refine3d_input import (check_particles, ini_shell, input_angles, random_subsets, read_reference,
                                          read_solvent_mask)
from vitrify.jobs._ranks import attach_half_ranks, half_shards, join_ranks
from vitrify.jobs.options.refine3d import Options
from vitrify.ml.refine3d import GoldStandard, RefineSettings, RefineState


@dataclass
class Setup:
    """Everything a run needs once the inputs are read."""

    options: Options
    inp: InputParticles
    diameter_px: float
    subsets: torch.Tensor
    index: list
    gold: GoldStandard
    ranks: object = None  # vitrify.ml.optimiser.Ranks under torchrun (each half's engine holds its part)


def engine_settings(options: Options, diameter_px: float, device: torch.device):
    from vitrify.ml.inimodel import Settings3D

    budget = options.memory_budget_mb or (1024 if device.type == "cuda" else 64)
    return Settings3D(algorithm="em", nr_iter=options.max_iter, tau2_fudge=options.tau2_fudge,
                      particle_diameter_px=diameter_px, symmetry=options.symmetry,
                      healpix_order=options.healpix_order, fine_cap=options.fine_cap, seed=max(options.seed, 1),
                      budget_bytes=budget * 2 ** 20, flatten_solvent=False, oversampling=1)


def refine_settings(options: Options, inp: InputParticles, diameter_px: float) -> RefineSettings:
    return RefineSettings(particle_diameter_px=diameter_px, symmetry=options.symmetry,
                          healpix_order=options.healpix_order, local_order=options.local_order,
                          max_order=options.max_order, offset_range_px=options.offset_range_px,
                          offset_step_px=2.0 * options.offset_step_px, tau2_fudge=options.tau2_fudge,
                          max_iter=options.max_iter,
                          join_halves_shell=ini_shell(inp.box_px, inp.pixel_size_angst,
                                                      options.low_resol_join_halves_angst))


def masks(options: Options, inp: InputParticles, diameter_px: float):
    from vitrify.core.masks import soft_spherical_mask

    if not options.solvent_mask:
        return soft_spherical_mask(inp.box_px, diameter_px / 2.0, 5.0), None
    mask = read_solvent_mask(options.solvent_mask, inp)
    return mask, (mask if options.solvent_fsc else None)


def prepare(options: Options, device: torch.device, log) -> Setup:
    """Read and check every input, load the particles and build the two halves (no file written)."""
    from vitrify.core.symmetry import parse_symmetry
    from vitrify.ml.gold import lowpass_to_resolution
    from vitrify.ml.refine3d import correct_greyscale, make_halves, split_halves
    from vitrify.ml.window import make_window

    parse_symmetry(options.symmetry)
    inp = validate_input(options.input_star, 1, options.do_ctf)
    diameter_px = check_particles(inp, options.particle_diameter_angst, options.healpix_order >= options.local_order)
    reference = read_reference(options.reference, inp)
    solvent, fsc_mask = masks(options, inp, diameter_px)
    subsets = split_halves(inp.n_particles, options.seed, random_subsets(inp))
    ranks, device = join_ranks(device, inp.n_particles, [int((subsets == h).sum()) for h in (1, 2)])
    rows, local_subsets, index = half_shards(subsets, ranks)  # this rank's rows (all alone)
    check_memory(inp, device, len(rows), 1 if ranks is None else int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if reference.note:
        log.info(reference.note)
    window = make_window(inp.box_px)
    load = partial(load_particles, inp, window, diameter_px, options.do_ctf, options.ctf_intact_first_peak, device)
    particles = load(rows)
    settings = refine_settings(options, inp, diameter_px)
    shell = ini_shell(inp.box_px, inp.pixel_size_angst, options.ini_high_angst)
    state = RefineState(healpix_order=options.healpix_order, offset_range_px=options.offset_range_px,
                        offset_step_px=settings.offset_step_px,
                        radius=int(min(inp.box_px // 2 - 1, math.floor(shell) + settings.incr_size)))
    # masked first, then low-passed: nothing beyond --ini-high on the box's grid is shared by the halves
    start = lowpass_to_resolution(reference.volume * solvent, options.ini_high_angst, inp.pixel_size_angst)
    halves, local = make_halves(particles, local_subsets, (start.to(device), start.to(device)), window,
                                engine_settings(options, diameter_px, device), state, inp.pixel_size_angst,
                                max(options.offset_range_px, 1.0) / 2.0)
    attach_half_ranks(halves, index, ranks, inp.group_index, load)
    apply_input_angles(halves, [torch.as_tensor(rows)[i.cpu()] for i in local], input_angles(inp))
    for h, ref in enumerate(halves, 1):
        log.info("half %d: %d particles; reference greyscale x %.4g", h, ref.n_total, correct_greyscale(ref))
    gold = GoldStandard(settings, halves, state, solvent.to(device), None if fsc_mask is None else fsc_mask.to(device),
                        local_estep_function())
    return Setup(options, inp, diameter_px, subsets, index, gold, ranks)


def apply_input_angles(halves, index, angles: torch.Tensor | None) -> None:
    if angles is None:
        return
    for ref, idx in zip(halves, index):
        ref.angles_deg.copy_(angles[idx.cpu()].to(ref.angles_deg.device))


def local_estep_function():
    try:
        from vitrify.ml.local_search import local_estep
    except ImportError:  # pragma: no cover - local searches not built yet
        return None
    return local_estep

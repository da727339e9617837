"""3D auto-refinement (RELION ``relion.refine3d``): gold-standard refinement from a reference.

``run(options, job_dir)`` checks everything first (particles.star and its stacks, CTF columns, the
point group, the reference (rescaled to the particles' grid when its box or pixel size differ, said
in run.log), the solvent mask (box, values in [0, 1]), the half-set split (``rlnRandomSubset`` kept),
poses when the search is local from the start), then loads the particles, splits them into two
random halves and refines both independently with :class:`vitrify.ml.refine3d.GoldStandard` from
the reference low-passed to ``--ini-high``. Every iteration writes RELION's ``run_itNNN_*`` files;
the end writes ``run_class001.mrc``, the unfiltered half maps, ``run_model.star`` (with the
gold-standard FSC and the resolution at FSC 0.143), ``run_data.star``, ``run_optimiser.star`` and PNGs
of the FSC and of central sections. ``--continue run_itNNN_optimiser.star`` (or the job directory)
goes on from that iteration's files.

Under ``torchrun --nproc-per-node N`` the refinement runs data-parallel (:mod:`vitrify.jobs._ranks`):
each rank reads its shard of each half set, each half's E-step sums are all-reduced over the ranks
(the halves stay independent), and rank 0 gathers the poses and alone writes.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import torch

from vitrify._progress import track
from vitrify.io.errors import InputError
from vitrify.io.star import portable_image_names, portable_name
from vitrify.jobs._refine3d_setup import Setup, prepare
from vitrify.jobs._refine3d_output import (data_star_table, final_paths, iteration_paths, merged_particles,
                                           model_star, optimiser_block, write_fsc_png, write_map)
from vitrify.jobs._ranks import Follower, lend_gathered, on_rank0, rank_logger
from vitrify.jobs.base import check_abort, job_logger
from vitrify.jobs.options.refine3d import Options, job_star_from_options, options_from_job_star
from vitrify.ml.refine3d import FinalMaps, RefineState

#: ``vitrify pipeline run-job --continue`` continues from this job's own directory (its last optimiser.star)
CONTINUES_FROM_JOB_DIR = True

#: the job runs data-parallel on torch.distributed ranks (torchrun; a queue template's N copies)
RUNS_ON_RANKS = True


class _Writer:
    """Writes each iteration's files and the final ones; logs and advances the progress bar."""

    def __init__(self, setup: Setup, job_dir: Path) -> None:
        self.setup, self.job_dir = setup, job_dir
        inp = setup.inp
        self.image_names = portable_image_names(inp.star.data["rlnImageName"], inp.base_dir, job_dir)
        optics = inp.star.optics
        self.group_names = [str(v) for v in optics.get("rlnOpticsGroupName", optics["rlnOpticsGroup"])]
        self.log = job_logger(job_dir)
        self.bar = iter(track(range(setup.options.max_iter + 1), "refine3d", total=setup.options.max_iter + 1))

    def _rel(self, path: Path) -> str:
        return portable_name(path, self.job_dir)

    def __call__(self, state: RefineState) -> None:
        gold = self.setup.gold
        self.log.info("iteration %d%s: next order %d%s, offsets %.2f/%.2f px, window %d shells, resolution %.2f Å "
                      "(best %.2f), pose changes %.2f° / %.2f px, pmax %.3f / %.3f, cpu %.1f s, peak %.0f MB",
                      state.iteration,
                      " (final)" if state.final else "", state.healpix_order,
                      " local" if state.local(gold.settings) else "", state.offset_range_px, state.offset_step_px,
                      state.radius, state.resolution_angst, state.best_resolution_angst, state.change_deg,
                      state.change_offset_px, gold.halves[0].model.ave_pmax, gold.halves[1].model.ave_pmax,
                      time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        while state.log:
            self.log.info(state.log.pop(0))
        next(self.bar, None)
        self.write_iteration(state.iteration)
        check_abort(self.job_dir)

    def _counts(self, ref) -> list[int]:
        counts = torch.bincount(ref.particles.group.cpu(), minlength=len(self.group_names))
        return [int(c) for c in counts]

    def write_iteration(self, it: int, paths: dict[str, Path] | None = None) -> dict[str, Path]:
        """The halves' maps and models, data.star, sampling.star and optimiser.star (written last)."""
        from vitrify.io.star import write_star, write_star_optics
        from vitrify.jobs._initialmodel_output import sampling_block

        s, gold = self.setup, self.setup.gold
        paths = paths or iteration_paths(self.job_dir, s.options.root, it)
        pix, st = gold.pixel_size_angst, gold.state
        step = gold.halves[0].orientations.step_deg / 2
        for h, ref in enumerate(gold.halves, 1):
            map_path = paths.get(f"half{h}") if f"half{h}_model" in paths else None
            write_map(paths[f"half{h}"], ref.model.refs[0], pix)
            if map_path is not None:
                write_star(paths[f"half{h}_model"], model_star(ref.model, st, map_path, self._rel, self.group_names,
                                                               self._counts(ref), step))
        merged, angles = merged_particles(gold.halves, s.index, s.inp.n_particles)
        data = data_star_table(s.inp.star.data, merged, angles, s.subsets, pix, self.image_names)
        write_star_optics(paths["data"], s.inp.star.optics, data, "particles")
        write_star(paths["sampling"], {"sampling_general": sampling_block(
            st.healpix_order, s.options.symmetry, gold.halves[0].orientations.step_deg, st.offset_range_px,
            st.offset_step_px, pix)})
        paths = {**paths, "root": self.job_dir / s.options.root}
        write_star(paths["optimiser"], {"optimiser_general": optimiser_block(st, s.options, paths, self._rel,
                                                                             s.options.seed)})
        return paths

    def write_final(self, final: FinalMaps) -> Path:
        """run_class001.mrc, unfiltered half maps, run_model/data/optimiser/sampling.star, PNGs."""
        from vitrify.io.star import write_star
        from vitrify.jobs._initialmodel_output import write_sections_png
        from vitrify.jobs._preprocess_io import write_output_nodes

        s, gold = self.setup, self.setup.gold
        paths = final_paths(self.job_dir, s.options.root)
        pix, st = gold.pixel_size_angst, gold.state
        write_map(paths["half1"], final.half1, pix)
        write_map(paths["half2"], final.half2, pix)
        write_map(paths["class001"], final.joined, pix)
        model = gold.halves[0].model
        joined = type(model)(**{**model.__dict__, "refs": final.joined[None]})
        counts = [a + b for a, b in zip(self._counts(gold.halves[0]), self._counts(gold.halves[1]))]
        write_star(paths["model"], model_star(joined, st, paths["class001"], self._rel, self.group_names, counts,
                                              gold.halves[0].orientations.step_deg / 2))
        write_sections_png(paths["slices_png"], final.joined[None], torch.ones(1))
        write_fsc_png(paths["fsc_png"], final.fsc, gold.n, pix, final.resolution_angst,
                      f"gold-standard FSC, {s.inp.n_particles} particles, {s.options.symmetry}")
        self.write_iteration(st.iteration, {"data": paths["data"], "sampling": paths["sampling"],
                                            "optimiser": paths["optimiser"], "half1": paths["half1"],
                                            "half2": paths["half2"], "half1_model": paths["model"],
                                            "half2_model": paths["model"]})
        write_output_nodes(self.job_dir, [(paths["data"], "ParticlesData.star.relion.refine3d"),
                                          (paths["class001"], "DensityMap.mrc.relion.refine3d"),
                                          (paths["half1"], "DensityMap.mrc.relion.halfmap.refine3d"),
                                          (paths["optimiser"], "ProcessData.star.relion.optimiser.refine3d")])
        self.log.info("final resolution %.2f Å (gold-standard FSC 0.143, %s); %s", final.resolution_angst,
                      "solvent mask" if s.options.solvent_mask and s.options.solvent_fsc else "unmasked",
                      paths["class001"].name)
        return paths["class001"]


def run(options: Options, job_dir: str | Path) -> Path:
    """Refine into ``job_dir``; returns ``run_class001.mrc``."""
    from vitrify.core.device import resolve_device, tune_host_allocator
    from vitrify.core.threads import configure_threads

    job_dir = Path(job_dir)
    device = resolve_device(options.device)
    configure_threads(options.threads)
    torch.set_flush_denormal(True)
    tune_host_allocator()
    job_dir.mkdir(parents=True, exist_ok=True)
    if options.continue_from:
        from vitrify.jobs._refine3d_continue import resume

        setup = resume(options, device, rank_logger(job_dir))
    else:
        setup = prepare(options, device, rank_logger(job_dir))
    try:
        return _refine(setup, job_dir)
    finally:
        from vitrify.jobs._ranks import leave_ranks

        leave_ranks(setup.ranks)


def _refine(setup: Setup, job_dir: Path) -> Path:
    """Iterate and write (rank 0 or alone); the other ranks send rank 0 their poses when it writes."""
    gold, ranks = setup.gold, setup.ranks
    if ranks is not None and ranks.rank > 0:
        follower = Follower(job_dir, gold.halves, lambda _state: True)
        if gold.state.iteration == 0:
            follower.write()
        gold.run(follower)
        follower.write()  # the final files
        return final_paths(job_dir, setup.options.root)["class001"]
    writer = _Writer(setup, job_dir)
    lend_gathered(writer, "write_iteration", gold.halves)
    lend_gathered(writer, "write_final", gold.halves)
    if gold.state.iteration == 0:
        writer.write_iteration(0)
    final = gold.run(on_rank0(writer, job_dir, gold.halves, writer.log))
    return writer.write_final(final)


__all__ = ["InputError", "Options", "job_star_from_options", "options_from_job_star", "run"]

"""Class3D output in RELION-4 form (the initial model's files, :mod:`vitrify.jobs._initialmodel_output`).

Per written iteration ``NNN`` (every EM iteration; VDAM: 0, every ``grad_write_iter`` and the last):
``run_itNNN_classKKK.mrc``, ``run_itNNN_model.star`` (``model_classes`` with
``rlnClassDistribution`` and the per-class ``rlnEstimatedResolution``), ``run_itNNN_data.star``
(input rows plus rlnAngleRot/Tilt/Psi, rlnOriginX/YAngst, rlnClassNumber,
rlnMaxValueProbDistribution ...), ``run_itNNN_sampling.star``, ``run_itNNN_slices.png`` (central
sections of every class), ``run_itNNN_vitrify_state.npz`` (exact numbers for ``--continue``) and,
last, ``run_itNNN_optimiser.star``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vitrify._progress import track
from vitrify.io.star import portable_image_names, portable_name, write_star, write_star_optics
from vitrify.jobs._class2d_data import InputParticles
from vitrify.jobs._class2d_output import write_state
from vitrify.jobs._initialmodel_output import (data_table_3d, iteration_paths, model_blocks_3d, sampling_block,
                                               write_sections_png, write_volumes)
from vitrify.jobs.base import check_abort, job_logger
from vitrify.ml.class3d import Classifier3D, class_resolution_angst
from vitrify.ml.inimodel import Iteration3D


class Class3DWriter:
    """Writes an iteration's files, logs one line per iteration and advances the progress bar."""

    def __init__(self, options, job_dir: Path, inp: InputParticles, ref: Classifier3D, first: int = 1) -> None:
        self.options, self.job_dir, self.inp, self.ref = options, job_dir, inp, ref
        self.image_names = portable_image_names(inp.star.data["rlnImageName"], inp.base_dir, job_dir)
        optics = inp.star.optics
        self.group_names = [str(v) for v in optics.get("rlnOpticsGroupName", optics["rlnOpticsGroup"])]
        counts = torch.bincount(ref.particles.group.cpu(), minlength=len(self.group_names))
        self.group_counts = [int(c) for c in counts]
        self.log = job_logger(job_dir)
        total = options.iterations - first + 1
        self.bar = iter(track(range(total), "3D classification", total=total))

    def __call__(self, info: Iteration3D) -> None:
        model = self.ref.model
        res = ", ".join(f"{r:.1f}" for r in class_resolution_angst(model))
        dist = ", ".join(f"{100 * float(p):.1f}" for p in model.pdf_class)
        self.log.info("iteration %d%s: %d particles, order %d, radius %d (%.1f A), pmax %.3f, classes %% [%s], "
                      "resolution A [%s]", info.iteration, " (random class seeds)" if info.extra.get("seeded") else "",
                      info.n_particles, info.healpix_order, model.current_radius,
                      model.resolution_angst(model.current_radius), model.ave_pmax, dist, res)
        next(self.bar, None)
        opt = self.options
        last = info.iteration == opt.iterations
        if opt.algorithm == "em" or last or info.iteration % opt.grad_write_iter == 0:
            self.write(info.iteration)
        check_abort(self.job_dir)

    def write(self, it: int) -> dict[str, Path]:
        """All files of iteration ``it`` (the optimiser file last: it marks the iteration complete)."""
        opt, ref, model = self.options, self.ref, self.ref.model
        paths = iteration_paths(self.job_dir, opt.root, it, model.n_classes)
        pix = model.pixel_size_angst
        write_volumes(paths, model.refs, pix)
        write_sections_png(paths["slices_png"], model.refs, model.pdf_class)
        step = ref.orientations.step_deg / (2 if opt.oversampling else 1)
        star = model_blocks_3d(model, paths, self._name, self.group_names, self.group_counts, step)
        write_star(paths["model"], star)
        o = ref.orientations
        write_star(paths["sampling"], {"sampling_general": sampling_block(
            o.order, ref.settings.symmetry, o.step_deg, opt.offset_range_px, opt.offset_step_px, pix)})
        data = data_table_3d(self.inp.star.data, ref.particles, ref.angles_deg, pix, self.image_names)
        write_star_optics(paths["data"], self.inp.star.optics, data, "particles")
        write_state(Path(str(paths["model"])[: -len("_model.star")] + "_vitrify_state.npz"), it, model,
                    ref.particles, opt)
        write_star(paths["optimiser"], {"optimiser_general": self._optimiser(paths, it)})
        return paths

    def _name(self, path: Path) -> str:
        return portable_name(path, self.job_dir)

    def _optimiser(self, paths: dict[str, Path], it: int) -> dict:
        o, ref = self.options, self.ref
        grad = o.algorithm == "vdam"
        return {
            "rlnOutputRootName": self._name(self.job_dir / o.root), "rlnModelStarFile": self._name(paths["model"]),
            "rlnExperimentalDataStarFile": self._name(paths["data"]),
            "rlnOrientSamplingStarFile": self._name(paths["sampling"]), "rlnCurrentIteration": it,
            "rlnNumberOfIterations": o.iterations, "rlnDoSplitRandomHalves": 0,
            "rlnAdaptiveOversampleOrder": o.oversampling, "rlnAdaptiveOversampleFraction": 0.999,
            "rlnRandomSeed": o.seed, "rlnParticleDiameter": o.particle_diameter_angst, "rlnWidthMaskEdge": 5,
            "rlnDoZeroMask": 1, "rlnDoSolventFlattening": int(o.flatten_solvent or bool(o.solvent_mask)),
            "rlnSolventMaskName": o.solvent_mask or "None", "rlnTauSpectrumName": "None",
            "rlnMaximumCoarseImageSize": -1, "rlnHighresLimitExpectation": -1.0,
            "rlnIncrementImageSize": ref.settings.incr_size, "rlnDoMapEstimation": 1,
            "rlnDoGradientRefine": int(grad), "rlnGradCurrentStepsize": ref.schedule.stepsize_at(it) if grad else 0.0,
            "rlnTau2FudgeArg": o.tau2_fudge, "rlnMaximumSignificantPoses": o.max_significant,
            "rlnDoAutoRefine": 0, "rlnDoAutoSampling": 0, "rlnHasConverged": 0, "rlnDoCorrectNorm": 0,
            "rlnDoCorrectScale": 0, "rlnDoCorrectCtf": int(o.do_ctf),
            "rlnDoIgnoreCtfUntilFirstPeak": int(o.ctf_intact_first_peak), "rlnCtfDataArePhaseFlipped": 0,
            "rlnDoCenterClasses": 0, "rlnRefsAreCtfCorrected": 1, "rlnFixSigmaNoiseEstimates": 0,
        }

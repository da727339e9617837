"""``--continue``: rebuild a Class2D run's state from a written iteration's files.

From ``run_itNNN_optimiser.star`` the files of that iteration are found (names relative to
the project, absolute, or beside the optimiser file); the model comes from ``model.star``
(class fractions, noise spectra, offset prior, T, image size) and ``classes.mrcs``; VDAM
moments from the moment stacks; particle assignments from ``data.star``, which also becomes
the input particle file (as RELION does). The run's settings come from the optimiser and
sampling files; only ``--iter`` and the runtime settings (threads, device, memory) of the
continuing command apply. When vitrify wrote the iteration, ``run_itNNN_vitrify_state.npz``
holds the settings and the numbers the STAR files round, so the continued run goes on exactly
as the uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vitrify.io.errors import InputError
from vitrify.io.mrc import read_mrc
from vitrify.io.star import image_base_dirs, read_star, resolve_image_name
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.vdam import Moments

#: Options fields the continuing command sets (everything else is the continued run's)
RUNTIME_FIELDS = ("threads", "device", "memory_budget_mb")


@dataclass
class ResumeState:
    """What a continued run starts from."""

    options: object
    model: MlModel
    moments: Moments | None
    iteration: int
    class_number: np.ndarray
    psi_deg: np.ndarray
    exact: dict[str, np.ndarray] | None = None  # ParticleSet fields from the state file

    def apply_to(self, particles: ParticleSet, rows: slice = slice(None)) -> None:
        """Copy the stored assignments of ``rows`` (all; a rank's shard) into freshly loaded particles
        (offsets come with the STAR file, or exactly from the state file)."""
        dev = particles.ft.device
        particles.class_index = torch.as_tensor(self.class_number[rows] - 1, dtype=torch.long, device=dev)
        particles.psi_deg = torch.as_tensor(np.mod(self.psi_deg[rows], 360.0), dtype=torch.float32, device=dev)
        for name, values in (self.exact or {}).items():
            setattr(particles, name, torch.as_tensor(values[rows], device=dev))


def _find(path_text: str, near: Path) -> Path:
    """A file named in ``near`` (a STAR file): absolute, relative to a project or to ``near``'s
    folder, or (a moved job directory) ``near``'s folder and the file's own name."""
    given = Path(path_text)
    candidates = [given] if given.is_absolute() else [base / given for base in image_base_dirs(near)]
    candidates.append(near.parent / given.name)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise InputError("file named in it not found", path=near, field=path_text,
                     expected="the files of the same iteration")


def _block(blocks: dict, name: str, path: Path, kind: type = object):
    if name not in blocks:
        raise InputError(f"no block data_{name}", path=path, expected="a RELION Class2D file")
    if not isinstance(blocks[name], kind):
        raise InputError(f"data_{name} is not a {'list block' if kind is dict else 'loop'}", path=path,
                         expected="a RELION Class2D file")
    return blocks[name]


def _model(model_path: Path, device: torch.device) -> MlModel:
    blocks = read_star(model_path)
    gen = _block(blocks, "model_general", model_path, dict)
    classes = _block(blocks, "model_classes", model_path)
    n = int(gen["rlnOriginalImageSize"])
    k = int(gen["rlnNrClasses"])
    refs = []
    for name in classes["rlnReferenceImage"].astype(str):
        index0, stack_name = resolve_image_name(name, "")
        data, _ = read_mrc(_find(str(stack_name), model_path))
        refs.append(data.reshape(-1, n, n)[index0])
    groups = int(gen["rlnNrOpticsGroups"])
    sigma2 = torch.zeros(groups, n // 2 + 1, dtype=torch.float64)
    for g in range(groups):
        table = _block(blocks, f"model_optics_group_{g + 1}", model_path)
        index = torch.tensor(np.array(table["rlnSpectralIndex"], dtype=np.int64))
        sigma2[g, index] = torch.tensor(np.array(table["rlnSigma2Noise"], dtype=np.float64))
    pix = float(gen["rlnPixelSize"])
    zeros = torch.zeros(k, n // 2 + 1, dtype=torch.float64)
    return MlModel(refs=torch.as_tensor(np.stack(refs), dtype=torch.float32, device=device),
                   pdf_class=torch.tensor(np.array(classes["rlnClassDistribution"], dtype=np.float64)),
                   sigma2=sigma2, tau2=zeros, data_vs_prior=zeros.clone(),
                   sigma2_offset_px=(float(gen["rlnSigmaOffsetsAngst"]) / pix) ** 2,
                   tau2_fudge=float(gen["rlnTau2FudgeFactor"]),
                   current_radius=min(n // 2 - 1, int(gen["rlnCurrentImageSize"]) // 2 - 1),
                   pixel_size_angst=pix, pad=round(float(gen["rlnPaddingFactor"])))


def _moments(model_path: Path, model: MlModel, device: torch.device) -> Moments | None:
    from vitrify.jobs._class2d_output import real_to_complex

    stem = str(model_path)[: -len("_model.star")]
    p1, p2 = Path(stem + "_1moment.mrcs"), Path(stem + "_2moment.mrcs")
    if not (p1.exists() and p2.exists()):
        return None
    m1 = real_to_complex(read_mrc(p1)[0])
    m2 = real_to_complex(read_mrc(p2)[0]).real
    k = model.n_classes
    return Moments(m1.reshape(2, k, *m1.shape[1:]).to(device), m2.contiguous().to(device))


def _read_exact(model_path: Path, it: int, n_particles: int) -> dict | None:
    """The state file of the iteration (None when absent or not of this iteration and data)."""
    path = Path(str(model_path)[: -len("_model.star")] + "_vitrify_state.npz")
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            state = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the state file ({err})", path=path) from None
    if int(state["iteration"]) != it or len(state["particles_psi_deg"]) != n_particles:
        return None
    return state


def _restore_model(model: MlModel, state: dict) -> None:
    from vitrify.jobs._class2d_output import STATE_MODEL_ARRAYS, STATE_MODEL_SCALARS

    for name in STATE_MODEL_ARRAYS:
        setattr(model, name, torch.as_tensor(state[f"model_{name}"], device=getattr(model, name).device))
    for name in STATE_MODEL_SCALARS:
        setattr(model, name, state[f"model_{name}"].item())


def _options_from_files(options, opt: dict, sampling: dict, pix: float):
    """The continued run's settings as its optimiser and sampling files record them."""
    n_psi = max(1, round(360.0 / float(sampling.get("rlnPsiStep", options.psi_step_deg))))
    values = {"psi_step_deg": 360.0 / n_psi,
              "offset_range_px": float(sampling.get("rlnOffsetRange", options.offset_range_px * pix)) / pix,
              "offset_step_px": float(sampling.get("rlnOffsetStep", options.offset_step_px * pix)) / pix,
              "tau2_fudge": float(opt.get("rlnTau2FudgeArg", options.tau2_fudge)),
              "do_ctf": bool(int(opt.get("rlnDoCorrectCtf", int(options.do_ctf)))),
              "ctf_intact_first_peak": bool(int(opt.get("rlnDoIgnoreCtfUntilFirstPeak", 0))),
              "class_inactivity_threshold": float(opt.get("rlnSgdClassInactivityThreshold",
                                                          options.class_inactivity_threshold)),
              "grad_write_iter": int(opt.get("rlnSgdWriteEverySubset", options.grad_write_iter)),
              "max_significant": int(opt.get("rlnMaximumSignificantPoses", options.max_significant)),
              "ini_subset": int(opt.get("rlnSgdInitialSubsetSize", options.ini_subset)),
              "fin_subset": int(opt.get("rlnSgdFinalSubsetSize", options.fin_subset)),
              "seed": int(opt["rlnRandomSeed"]),
              "oversampling": int(opt.get("rlnAdaptiveOversampleOrder", options.oversampling)),
              "particle_diameter_angst": float(opt["rlnParticleDiameter"])}
    return replace(options, **values)


def _options_from_state(options, state: dict):
    """The continued run's own options (kept as JSON in the state file), with this command's
    runtime settings."""
    stored = json.loads(str(state["options_json"]))
    names = {f.name for f in dataclasses.fields(options) if f.init} - set(RUNTIME_FIELDS)
    return replace(options, **{k: v for k, v in stored.items() if k in names})


def resume_state(options, device: torch.device) -> ResumeState:
    """Read the iteration named by ``options.continue_from`` (a ``run_itNNN_optimiser.star``).

    A file of the iteration that lacks a value or holds text where a number belongs is an
    :class:`InputError` naming it (never a KeyError or ValueError traceback).
    """
    path = Path(options.continue_from)
    if not path.exists():
        raise InputError("file not found", path=path, field="--continue", expected="a run_itNNN_optimiser.star")
    reading = _Reading(path)
    try:
        return _resume(options, path, device, reading)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        what = f"missing value {err.args[0]}" if isinstance(err, KeyError) else str(err)
        raise InputError(f"unreadable Class2D file ({what})", path=reading.path,
                         expected="a run_itNNN_optimiser.star and the files of its iteration") from None


class _Reading:
    """The file being read (named by the error message when it is malformed)."""

    def __init__(self, path: Path) -> None:
        self.path = path


def _resume(options, path: Path, device: torch.device, reading: _Reading) -> ResumeState:
    opt = _block(read_star(path), "optimiser_general", path, dict)
    it = int(opt["rlnCurrentIteration"])
    model_path = _find(str(opt["rlnModelStarFile"]), path)
    data_path = _find(str(opt["rlnExperimentalDataStarFile"]), path)
    reading.path = model_path
    model = _model(model_path, device)
    reading.path = data_path
    data = _block(read_star(data_path), "particles", data_path, pd.DataFrame)
    class_number, psi_deg = data["rlnClassNumber"].to_numpy(np.int64), data["rlnAnglePsi"].to_numpy(np.float64)
    reading.path = path
    exact = _read_exact(model_path, it, len(data))
    nr_iter = options.nr_iter if options.nr_iter > 0 else int(opt["rlnNumberOfIterations"])
    if nr_iter <= it:
        raise InputError(f"iteration {it} already reached {nr_iter} iterations", field="--iter",
                         expected=f"more than {it}")
    if exact is not None and "options_json" in exact:
        new = _options_from_state(options, exact)
        _restore_model(model, exact)
    else:
        sampling = read_star(_find(str(opt.get("rlnOrientSamplingStarFile", "")), path)).get(
            "sampling_general", {}) if opt.get("rlnOrientSamplingStarFile") else {}
        new = _options_from_files(options, opt, sampling, model.pixel_size_angst)
    algorithm = "vdam" if int(opt.get("rlnDoGradientRefine", 0)) else "em"
    new = replace(new, input_star=str(data_path), n_classes=model.n_classes, algorithm=algorithm,
                  nr_iter=nr_iter, continue_from="")
    moments = _moments(model_path, model, device) if algorithm == "vdam" else None
    if algorithm == "vdam" and moments is None:
        raise InputError("VDAM moments (_1moment.mrcs/_2moment.mrcs) not found", path=model_path)
    particles = {name[len("particles_"):]: v for name, v in (exact or {}).items() if name.startswith("particles_")}
    return ResumeState(new, model, moments, it, class_number, psi_deg, particles or None)

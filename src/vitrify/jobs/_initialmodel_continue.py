"""``--continue`` for the initial model: a run's state saved beside each written iteration, and read back.

Beside RELION's files, every written iteration ``NNN`` has ``run_itNNN_vitrify_state.npz``: the run's
options (JSON), the model numbers that ``model.star`` rounds (class fractions, noise and reference
spectra, SSNR, offset prior, T, window), the particles' exact assignments (orientation indices,
Euler angles, offsets, pmax, significant samples, likelihoods), the HEALPix order in use and the
VDAM moments (only the voxels that differ from a fresh start, as index and value arrays). The class
volumes come from ``run_itNNN_classKKK.mrc`` (float32, exact). Mini-batches are drawn with the seed
``seed + iteration``, so a continued run goes on exactly as the uninterrupted one would. Only
``--iter`` (the new total) and the runtime settings (threads, device, memory) of the continuing
command apply; iterations written by RELION (no state file) cannot be continued.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vitrify.io.atomic import atomic_path
from vitrify.io.errors import InputError
from vitrify.io.mrc import read_mrc
from vitrify.io.star import read_star
from vitrify.jobs._class2d_continue import RUNTIME_FIELDS, _find
from vitrify.ml.model import MlModel

STATE_SUFFIX = "_vitrify_state.npz"
MODEL_ARRAYS = ("pdf_class", "sigma2", "tau2", "data_vs_prior")
MODEL_SCALARS = ("sigma2_offset_px", "tau2_fudge", "current_radius", "pixel_size_angst", "log_likelihood",
                 "ave_pmax")
PARTICLE_FIELDS = ("offset_px", "class_index", "psi_deg", "pmax", "n_significant", "log_likelihood")


def state_path(model_star: Path) -> Path:
    """``run_itNNN_vitrify_state.npz`` beside ``run_itNNN_model.star``."""
    return Path(str(model_star)[: -len("_model.star")] + STATE_SUFFIX)


def write_state_3d(path: Path, it: int, ref, options: object) -> None:
    """The exact state of :class:`vitrify.ml.inimodel.Refiner3D` ``ref`` after iteration ``it``."""
    model, parts = ref.model, ref.particles
    arrays = {"iteration": np.asarray(it), "options_json": np.asarray(json.dumps(dataclasses.asdict(options))),
              "healpix_order": np.asarray(ref.orientations.order),
              "angles_deg": ref.angles_deg.detach().cpu().numpy()}
    arrays.update({f"model_{k}": getattr(model, k).detach().cpu().numpy() for k in MODEL_ARRAYS})
    arrays.update({f"model_{k}": np.asarray(getattr(model, k)) for k in MODEL_SCALARS})
    arrays.update({f"particles_{k}": getattr(parts, k).detach().cpu().numpy() for k in PARTICLE_FIELDS})
    if ref.moments is not None:
        m1, m2 = ref.moments.m1, ref.moments.m2
        used = (torch.view_as_real(m1) != 0).any(-1).any(0) | (m2 != 1)  # (K, m, size)
        idx = torch.nonzero(used.reshape(-1)).flatten()
        arrays.update({"moments_shape": np.asarray(m1.shape), "moments_index": idx.cpu().numpy(),
                       "moments_m1": m1.reshape(2, -1)[:, idx].cpu().numpy(),
                       "moments_m2": m2.reshape(-1)[idx].cpu().numpy()})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


@dataclass
class Resume3D:
    """What a continued initial model starts from (after iteration ``iteration``)."""

    options: object
    iteration: int
    model: MlModel
    state: dict

    def apply_to(self, ref, rows: slice = slice(None)) -> None:
        """Put the stored particles' assignments, orientations and moments into ``ref`` (a new Refiner3D;
        under ranks: of its ``rows``)."""
        from vitrify.ml.orient3d import make_orientations
        from vitrify.ml.vdam import Moments

        st, dev = self.state, ref.model.refs.device
        order = int(st["healpix_order"])
        if order != ref.orientations.order:
            ref.orientations = make_orientations(order, ref.settings.symmetry, dev)
        ref.angles_deg = torch.as_tensor(st["angles_deg"][rows], device=dev)
        for name in PARTICLE_FIELDS:
            setattr(ref.particles, name, torch.as_tensor(st[f"particles_{name}"][rows], device=dev))
        if ref.moments is not None and "moments_index" in st:
            shape = tuple(int(v) for v in st["moments_shape"])
            m1 = torch.zeros(2, int(np.prod(shape[1:])), dtype=torch.complex64, device=dev)
            m2 = torch.ones(int(np.prod(shape[1:])), device=dev)
            idx = torch.as_tensor(st["moments_index"], device=dev)
            m1[:, idx] = torch.as_tensor(st["moments_m1"], device=dev)
            m2[idx] = torch.as_tensor(st["moments_m2"], device=dev)
            ref.moments = Moments(m1.reshape(shape), m2.reshape(shape[1:]))


def resume_3d(options, device: torch.device) -> Resume3D:
    """Read the iteration named by ``options.continue_from`` (a ``run_itNNN_optimiser.star``)."""
    path = Path(options.continue_from)
    if not path.exists():
        raise InputError("file not found", path=path, field="--continue", expected="a run_itNNN_optimiser.star")
    try:
        opt = read_star(path)["optimiser_general"]
        it = int(opt["rlnCurrentIteration"])
        model_path = _find(str(opt["rlnModelStarFile"]), path)
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(f"unreadable optimiser file ({err})", path=path,
                         expected="a run_itNNN_optimiser.star written by vitrify initialmodel") from None
    npz = state_path(model_path)
    if not npz.exists():
        raise InputError("no vitrify state file beside it", path=npz, field="--continue",
                         expected="an iteration written by vitrify initialmodel")
    try:
        with np.load(npz, allow_pickle=False) as data:
            state = {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the state file ({err})", path=npz) from None
    stored = json.loads(str(state["options_json"]))
    names = {f.name for f in dataclasses.fields(options) if f.init} - set(RUNTIME_FIELDS) - {"nr_iter",
                                                                                            "continue_from"}
    new = replace(options, **{k: v for k, v in stored.items() if k in names})
    nr_iter = options.nr_iter if options.nr_iter > 0 else int(stored["nr_iter"])
    new = replace(new, nr_iter=nr_iter, continue_from="")
    if new.iterations <= it:
        raise InputError(f"iteration {it} already reached {new.iterations} iterations", field="--iter",
                         expected=f"more than {it}")
    if not Path(new.input_star).exists():  # moved input: the iteration's data.star has the same rows
        new = replace(new, input_star=str(_find(str(opt["rlnExperimentalDataStarFile"]), path)))
    return Resume3D(new, it, _model(model_path, state, device), state)


def _model(model_path: Path, state: dict, device: torch.device) -> MlModel:
    """Class volumes from the iteration's MRC files, every other number from the state file."""
    classes = read_star(model_path)["model_classes"]
    refs = [read_mrc(_find(str(name), model_path))[0] for name in classes["rlnReferenceImage"].astype(str)]
    values = {k: torch.as_tensor(state[f"model_{k}"]) for k in MODEL_ARRAYS}
    values.update({k: state[f"model_{k}"].item() for k in MODEL_SCALARS})
    return MlModel(refs=torch.as_tensor(np.stack(refs), dtype=torch.float32, device=device), pad=2, **values)

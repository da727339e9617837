"""Class3D inputs: the references (each read as refine3d reads its one: rescaled when its box or pixel
size differs), and the state of a written iteration
for ``--continue``.

Everything is checked before any compute; a wrong file is one :class:`InputError` line naming the
file, the option and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vitrify.io.errors import InputError
from vitrify.io.mrc import read_mrc
from vitrify.io.star import read_star
from vitrify.jobs._class2d_continue import RUNTIME_FIELDS, _block, _find
from vitrify.jobs._class2d_data import InputParticles
from vitrify.jobs._class2d_output import STATE_MODEL_ARRAYS, STATE_MODEL_SCALARS, STATE_PARTICLE_FIELDS
from vitrify.jobs._refine3d_input import read_reference as read_refine3d_reference
from vitrify.ml.model import MlModel, ParticleSet


def read_references(path: str | Path, inp: InputParticles, n_classes: int, log) -> torch.Tensor:
    """``(R, n, n, n)``: one map (R 1), or K maps listed (``rlnReferenceImage``) in a STAR file, as
    RELION's ``--ref`` takes them; each on the particles' grid (see :func:`read_reference`)."""
    path = Path(path)
    if path.suffix.lower() != ".star":
        return read_reference(path, inp, log)[None]
    if not path.exists():
        raise InputError("file not found", path=path, field="--ref", expected="an MRC map or a STAR file of maps")
    tables = [t for t in read_star(path).values() if hasattr(t, "columns") and "rlnReferenceImage" in t.columns]
    if not tables:
        raise InputError("no rlnReferenceImage column", path=path, field="--ref", expected="a STAR file of maps")
    names = tables[0]["rlnReferenceImage"].astype(str).tolist()
    if len(names) != n_classes:
        raise InputError(f"{len(names)} references for {n_classes} classes", path=path, field="--K",
                         expected=f"--K {len(names)} (one class per reference)")
    found = [_find(name, path) if not Path(name).exists() else Path(name) for name in names]
    return torch.stack([read_reference(p, inp, log) for p in found])


def read_reference(path: str | Path, inp: InputParticles, log) -> torch.Tensor:
    """The reference ``(n, n, n)`` on the particles' grid (refine3d's reader: another box or pixel size is
    rescaled by Fourier resampling, then centre crop or zero padding); ``log`` says what was done."""
    reference = read_refine3d_reference(path, inp)
    if reference.note:
        log.info(reference.note)
    return reference.volume


@dataclass
class Resume:
    """What a continued run starts from: its options, iteration, class maps and exact state."""

    options: object
    iteration: int
    refs: torch.Tensor
    state: dict
    angles_deg: np.ndarray

    def model(self, device: torch.device) -> MlModel:
        """The model of the written iteration (the exact numbers of the state file)."""
        s = self.state
        arrays = {name: torch.as_tensor(s[f"model_{name}"]) for name in STATE_MODEL_ARRAYS}
        scalars = {name: s[f"model_{name}"].item() for name in STATE_MODEL_SCALARS}
        return MlModel(refs=self.refs.to(device), pixel_size_angst=float(s["pixel_size_angst"]), pad=2,
                       **arrays, **scalars)

    def apply_to(self, particles: ParticleSet, rows: slice = slice(None)) -> None:
        """The particles' assignments of the written iteration (under ranks: of this rank's ``rows``)."""
        dev = particles.ft.device
        for name in STATE_PARTICLE_FIELDS:
            setattr(particles, name, torch.as_tensor(self.state[f"particles_{name}"][rows], device=dev))


def read_resume(options) -> Resume:
    """The iteration named by ``options.continue_from`` (a ``run_itNNN_optimiser.star`` vitrify wrote)."""
    path = Path(options.continue_from)
    if not path.exists():
        raise InputError("file not found", path=path, field="--continue", expected="a run_itNNN_optimiser.star")
    try:
        return _read_resume(options, path)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise InputError(f"unreadable Class3D iteration ({err})", path=path, field="--continue",
                         expected="a run_itNNN_optimiser.star and the files of its iteration") from None


def _read_resume(options, path: Path) -> Resume:
    opt = _block(read_star(path), "optimiser_general", path, dict)
    it = int(opt["rlnCurrentIteration"])
    model_path = _find(str(opt["rlnModelStarFile"]), path)
    state_path = Path(str(model_path)[: -len("_model.star")] + "_vitrify_state.npz")
    if not state_path.exists():
        raise InputError("no vitrify state file beside the iteration", path=state_path, field="--continue",
                         expected="an iteration written by vitrify class3d")
    with np.load(state_path, allow_pickle=False) as npz:
        state = {name: npz[name] for name in npz.files}
    stored = json.loads(str(state["options_json"]))
    names = {f.name for f in dataclasses.fields(options) if f.init} - set(RUNTIME_FIELDS) - {"nr_iter", "continue_from"}
    new = replace(options, **{k: v for k, v in stored.items() if k in names}, continue_from="")
    if options.nr_iter <= 0:
        new = replace(new, nr_iter=int(stored.get("nr_iter", -1)))
    if new.iterations <= it:
        raise InputError(f"iteration {it} already reached {new.iterations} iterations", field="--iter",
                         expected=f"more than {it}")
    blocks = read_star(model_path)
    classes = _block(blocks, "model_classes", model_path)
    gen = _block(blocks, "model_general", model_path, dict)
    refs = [read_mrc(_find(str(name), model_path))[0] for name in classes["rlnReferenceImage"].astype(str)]
    state["pixel_size_angst"] = np.asarray(float(gen["rlnPixelSize"]))
    data = _block(read_star(_find(str(opt["rlnExperimentalDataStarFile"]), path)), "particles", path)
    angles = data[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(np.float64)
    return Resume(new, it, torch.as_tensor(np.stack(refs), dtype=torch.float32), state, angles)

"""Class3D inputs: the reference (rescaled when its box or pixel size differs), the solvent mask,
and the state of a written iteration for ``--continue``.

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
from vitrify.ml.model import MlModel, ParticleSet


def _read_map(path: Path, field: str) -> tuple[np.ndarray, float]:
    if not path.exists():
        raise InputError("file not found", path=path, field=field, expected="an MRC map")
    try:
        data, pixel = read_mrc(path)
    except InputError:
        raise
    except Exception as err:  # a damaged file: name it
        raise InputError(f"cannot read the map ({err})", path=path, field=field, expected="an MRC map") from None
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise InputError(f"map of shape {data.shape}", path=path, field=field, expected="a cubic 3D map")
    if not np.isfinite(data).all():
        raise InputError("the map holds NaN or infinite values", path=path, field=field, expected="finite values")
    return data, float(pixel or 0.0)


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
    """The reference ``(n, n, n)`` on the particles' grid; another box or pixel size is rescaled
    (Fourier resampling, then centre crop or zero padding) and ``log`` says so."""
    from vitrify.ml.class3d import fit_reference

    path = Path(path)
    data, pixel = _read_map(path, "--ref")
    n, box, pix = data.shape[0], inp.box_px, inp.pixel_size_angst
    if pixel <= 0:
        pixel = pix
        log.info("reference %s has no pixel size in its header: taken as the particles' %.4g A", path, pix)
    volume = torch.as_tensor(data, dtype=torch.float32)
    if n == box and abs(pixel - pix) <= 0.01 * pix:
        return volume
    out = fit_reference(volume, pixel, box, pix)
    log.info("reference %s (%d px at %.4g A) rescaled to the particles' %d px at %.4g A", path, n, pixel, box, pix)
    return out


def read_mask(path: str | Path, inp: InputParticles) -> torch.Tensor:
    """A solvent mask ``(n, n, n)``: the particles' box, values in [0, 1]."""
    path = Path(path)
    data, _ = _read_map(path, "--solvent-mask")
    if data.shape[0] != inp.box_px:
        raise InputError(f"mask box {data.shape[0]} px differs from the particles' {inp.box_px} px", path=path,
                         field="--solvent-mask", expected=f"a {inp.box_px}^3 mask")
    lo, hi = float(data.min()), float(data.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InputError(f"mask values span [{lo:.3g}, {hi:.3g}]", path=path, field="--solvent-mask",
                         expected="values in [0, 1] (vitrify mask-create makes one)")
    if hi <= 0:
        raise InputError("the mask is empty", path=path, field="--solvent-mask", expected="values in [0, 1]")
    return torch.as_tensor(np.clip(data, 0.0, 1.0), dtype=torch.float32)


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

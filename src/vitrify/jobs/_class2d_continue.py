"""``--continue``: rebuild a Class2D run's state from a written iteration's RELION files.

From ``run_itNNN_optimiser.star`` the files of that iteration are found; the model comes
from ``model.star`` (class fractions, noise spectra, offset prior, T, image size) and
``classes.mrcs``; VDAM moments from the moment stacks; particle assignments from
``data.star``, which also becomes the input particle file (as RELION does).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vitrify.io.errors import InputError
from vitrify.io.mrc import read_mrc
from vitrify.io.star import read_star, resolve_image_name
from vitrify.ml.model import MlModel, ParticleSet
from vitrify.ml.vdam import Moments


@dataclass
class ResumeState:
    """What a continued run starts from."""

    options: object
    model: MlModel
    moments: Moments | None
    iteration: int
    class_number: np.ndarray
    psi_deg: np.ndarray

    def apply_to(self, particles: ParticleSet) -> None:
        """Copy the stored assignments into freshly loaded particles (offsets come with the STAR file)."""
        dev = particles.ft.device
        particles.class_index = torch.as_tensor(self.class_number - 1, dtype=torch.long, device=dev)
        particles.psi_deg = torch.as_tensor(np.mod(self.psi_deg, 360.0), dtype=torch.float32, device=dev)


def _find(path_text: str, near: Path) -> Path:
    for base in (Path.cwd(), near.parent):
        p = base / path_text if not Path(path_text).is_absolute() else Path(path_text)
        if p.exists():
            return p
    raise InputError("file named by the optimiser file not found", path=path_text)


def _block(blocks: dict, name: str, path: Path, kind: type = object):
    if name not in blocks:
        raise InputError(f"no block data_{name}", path=path, expected="a RELION Class2D file")
    if not isinstance(blocks[name], kind):
        raise InputError(f"data_{name} is not a {'list block' if kind is dict else 'loop'}", path=path,
                         expected="a RELION Class2D file")
    return blocks[name]


def _get(block: dict, label: str, path: Path, kind: type = float, default=None):
    """A list-block value as ``kind`` (int, float or str); InputError naming file and label."""
    if label not in block:
        if default is not None:
            return default
        raise InputError("missing value", path=path, field=f"_{label}", expected="a RELION Class2D file")
    try:
        value = block[label]
        return str(value) if kind is str else kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise InputError(f"not a number: {block[label]!r}", path=path, field=f"_{label}",
                         expected="a number") from None


def _column(table: pd.DataFrame, label: str, path: Path, dtype) -> np.ndarray:
    """A loop column as ``dtype``; InputError naming file and column when absent or not numbers."""
    if label not in table.columns:
        raise InputError("missing column", path=path, field=label, expected="a RELION Class2D file")
    try:
        return np.array(table[label], dtype=dtype)
    except (TypeError, ValueError):
        raise InputError("not numbers", path=path, field=label, expected="numbers") from None


def _model(model_path: Path, device: torch.device) -> tuple[MlModel, list[str]]:
    blocks = read_star(model_path)
    gen = _block(blocks, "model_general", model_path, dict)
    classes = _block(blocks, "model_classes", model_path, pd.DataFrame)
    n = _get(gen, "rlnOriginalImageSize", model_path, int)
    k = _get(gen, "rlnNrClasses", model_path, int)
    refs = []
    for name in _column(classes, "rlnReferenceImage", model_path, str):
        index0, stack = resolve_image_name(name, Path.cwd())
        if not stack.exists():
            index0, stack = resolve_image_name(name, model_path.parent)
            stack = model_path.parent / stack.name
        data, _ = read_mrc(stack)
        refs.append(data.reshape(-1, n, n)[index0])
    groups = _get(gen, "rlnNrOpticsGroups", model_path, int)
    sigma2 = torch.zeros(groups, n // 2 + 1, dtype=torch.float64)
    for g in range(groups):
        table = _block(blocks, f"model_optics_group_{g + 1}", model_path, pd.DataFrame)
        index = torch.tensor(_column(table, "rlnSpectralIndex", model_path, np.int64))
        sigma2[g, index] = torch.tensor(_column(table, "rlnSigma2Noise", model_path, np.float64))
    pix = _get(gen, "rlnPixelSize", model_path)
    zeros = torch.zeros(k, n // 2 + 1, dtype=torch.float64)
    model = MlModel(refs=torch.as_tensor(np.stack(refs), dtype=torch.float32, device=device),
                    pdf_class=torch.tensor(_column(classes, "rlnClassDistribution", model_path, np.float64)),
                    sigma2=sigma2, tau2=zeros, data_vs_prior=zeros.clone(),
                    sigma2_offset_px=(_get(gen, "rlnSigmaOffsetsAngst", model_path) / pix) ** 2,
                    tau2_fudge=_get(gen, "rlnTau2FudgeFactor", model_path),
                    current_radius=min(n // 2 - 1, _get(gen, "rlnCurrentImageSize", model_path, int) // 2 - 1),
                    pixel_size_angst=pix, pad=int(round(_get(gen, "rlnPaddingFactor", model_path))))
    moment_names = list(classes["rlnGradMoment1"].astype(str)) if "rlnGradMoment1" in classes.columns else []
    return model, moment_names


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


def resume_state(options, device: torch.device) -> ResumeState:
    """Read the iteration named by ``options.continue_from`` (a ``run_itNNN_optimiser.star``)."""
    path = Path(options.continue_from)
    if not path.exists():
        raise InputError("file not found", path=path, field="--continue", expected="a run_itNNN_optimiser.star")
    opt = _block(read_star(path), "optimiser_general", path, dict)
    it = _get(opt, "rlnCurrentIteration", path, int)
    model_path = _find(_get(opt, "rlnModelStarFile", path, str), path)
    data_path = _find(_get(opt, "rlnExperimentalDataStarFile", path, str), path)
    model, _ = _model(model_path, device)
    algorithm = "vdam" if _get(opt, "rlnDoGradientRefine", path, int, 0) else "em"
    nr_iter = options.nr_iter if options.nr_iter > 0 else _get(opt, "rlnNumberOfIterations", path, int)
    if nr_iter <= it:
        raise InputError(f"iteration {it} already reached {nr_iter} iterations", field="--iter",
                         expected=f"more than {it}")
    new = replace(options, input_star=str(data_path), n_classes=model.n_classes, algorithm=algorithm,
                  nr_iter=nr_iter, seed=_get(opt, "rlnRandomSeed", path, int),
                  oversampling=_get(opt, "rlnAdaptiveOversampleOrder", path, int, options.oversampling),
                  particle_diameter_angst=_get(opt, "rlnParticleDiameter", path), continue_from="")
    data = _block(read_star(data_path), "particles", data_path, pd.DataFrame)
    moments = _moments(model_path, model, device) if algorithm == "vdam" else None
    if algorithm == "vdam" and moments is None:
        raise InputError("VDAM moments (_1moment.mrcs/_2moment.mrcs) not found", path=model_path)
    return ResumeState(new, model, moments, it, _column(data, "rlnClassNumber", data_path, np.int64),
                       _column(data, "rlnAnglePsi", data_path, np.float64))

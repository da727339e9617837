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


def _block(blocks: dict, name: str, path: Path):
    if name not in blocks:
        raise InputError(f"no block data_{name}", path=path, expected="a RELION Class2D file")
    return blocks[name]


def _model(model_path: Path, device: torch.device) -> tuple[MlModel, list[str]]:
    blocks = read_star(model_path)
    gen = _block(blocks, "model_general", model_path)
    classes = _block(blocks, "model_classes", model_path)
    n = int(gen["rlnOriginalImageSize"])
    k = int(gen["rlnNrClasses"])
    refs = []
    for name in classes["rlnReferenceImage"].astype(str):
        index0, stack = resolve_image_name(name, Path.cwd())
        if not stack.exists():
            index0, stack = resolve_image_name(name, model_path.parent)
            stack = model_path.parent / stack.name
        data, _ = read_mrc(stack)
        refs.append(data.reshape(-1, n, n)[index0])
    groups = int(gen["rlnNrOpticsGroups"])
    sigma2 = torch.zeros(groups, n // 2 + 1, dtype=torch.float64)
    for g in range(groups):
        table = _block(blocks, f"model_optics_group_{g + 1}", model_path)
        index = torch.tensor(np.array(table["rlnSpectralIndex"], dtype=np.int64))
        sigma2[g, index] = torch.tensor(np.array(table["rlnSigma2Noise"], dtype=np.float64))
    pix = float(gen["rlnPixelSize"])
    zeros = torch.zeros(k, n // 2 + 1, dtype=torch.float64)
    model = MlModel(refs=torch.as_tensor(np.stack(refs), dtype=torch.float32, device=device),
                    pdf_class=torch.tensor(np.array(classes["rlnClassDistribution"], dtype=np.float64)),
                    sigma2=sigma2, tau2=zeros, data_vs_prior=zeros.clone(),
                    sigma2_offset_px=(float(gen["rlnSigmaOffsetsAngst"]) / pix) ** 2,
                    tau2_fudge=float(gen["rlnTau2FudgeFactor"]),
                    current_radius=min(n // 2 - 1, int(gen["rlnCurrentImageSize"]) // 2 - 1),
                    pixel_size_angst=pix, pad=int(round(float(gen["rlnPaddingFactor"]))))
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
    opt = _block(read_star(path), "optimiser_general", path)
    it = int(opt["rlnCurrentIteration"])
    model_path = _find(str(opt["rlnModelStarFile"]), path)
    data_path = _find(str(opt["rlnExperimentalDataStarFile"]), path)
    model, _ = _model(model_path, device)
    algorithm = "vdam" if int(opt.get("rlnDoGradientRefine", 0)) else "em"
    nr_iter = options.nr_iter if options.nr_iter > 0 else int(opt["rlnNumberOfIterations"])
    if nr_iter <= it:
        raise InputError(f"iteration {it} already reached {nr_iter} iterations", field="--iter",
                         expected=f"more than {it}")
    new = replace(options, input_star=str(data_path), n_classes=model.n_classes, algorithm=algorithm,
                  nr_iter=nr_iter, seed=int(opt["rlnRandomSeed"]),
                  oversampling=int(opt.get("rlnAdaptiveOversampleOrder", options.oversampling)),
                  particle_diameter_angst=float(opt["rlnParticleDiameter"]), continue_from="")
    data = read_star(data_path)["particles"]
    moments = _moments(model_path, model, device) if algorithm == "vdam" else None
    if algorithm == "vdam" and moments is None:
        raise InputError("VDAM moments (_1moment.mrcs/_2moment.mrcs) not found", path=model_path)
    return ResumeState(new, model, moments, it, data["rlnClassNumber"].to_numpy(np.int64),
                       data["rlnAnglePsi"].to_numpy(np.float64))

"""Topaz picking through the optional ``topaz-em`` package's Python API.

Topaz (Bepler et al. 2019) scores every pixel of a micrograph with a convolutional
network trained positive-unlabelled; its wheel carries the pretrained detectors
(``resnet16_u64``, ``resnet16_u32``, ``resnet8_u64``, ``resnet8_u32``). As in ``topaz
preprocess`` + ``topaz extract``: the micrograph is binned to ~``working_pixel_angst``
(Fourier cropping), normalised with Topaz's GMM normalisation, scored, and the score map
is reduced to picks by Topaz's non-maximum suppression with the particle radius; the
score (a log-likelihood ratio) is the figure of merit, picks below ``threshold`` are
dropped. Install with ``pip install --no-deps topaz-em`` (its pins pull a CUDA torch)
plus ``h5py``; its command line needs torchvision and is not used.
"""

from __future__ import annotations

import numpy as np
import torch

from vitrify.io.errors import InputError
from vitrify.preprocess.picking import Picks, fourier_bin

MODELS = ("resnet16_u64", "resnet16_u32", "resnet8_u64", "resnet8_u32")


def require_topaz() -> None:
    """InputError with the install command when ``topaz-em`` (or its ``h5py``) is missing."""
    try:
        import topaz.model.factory  # noqa: F401
    except ImportError as err:
        raise InputError(f"Topaz picking needs the optional topaz-em package ({err})", field="method",
                         expected="'pip install --no-deps topaz-em h5py' or --method log") from None


def _score(image: np.ndarray, model_name: str, device: torch.device) -> np.ndarray:
    from topaz.model.factory import load_model
    from topaz.stats import normalize

    normalised, _ = normalize(image.astype(np.float32), method="gmm", use_cuda=device.type == "cuda")
    model = load_model(model_name)
    model.eval()
    model.fill()
    model.to(device)
    with torch.no_grad():
        x = torch.as_tensor(normalised, device=device)[None, None]
        return model(x)[0, 0].cpu().numpy()


def pick_topaz(micrograph: torch.Tensor, pixel_size_angst: float, diameter_angst: float,
               model_name: str = "resnet16_u64", threshold: float = -3.0,
               working_pixel_angst: float = 8.0) -> Picks:
    """Pick one ``(ny, nx)`` micrograph (dark protein) with a pretrained Topaz detector.

    Returns picks in the micrograph's pixels, best score first.
    """
    require_topaz()
    if model_name not in MODELS:
        raise InputError(f"unknown Topaz model {model_name!r}", field="topaz_model", expected=" | ".join(MODELS))
    if not torch.isfinite(micrograph).all() or float(micrograph.std()) == 0.0:
        raise InputError("micrograph is empty, constant or not finite", field="pixel values",
                         expected="an image with signal")
    from topaz.algorithms import non_maximum_suppression

    ny, nx = micrograph.shape
    factor = max(1.0, working_pixel_angst / pixel_size_angst)
    shape = (2 * round(ny / factor / 2), 2 * round(nx / factor / 2))
    binned = fourier_bin(micrograph.float(), shape)
    scores = _score(binned.cpu().numpy(), model_name, micrograph.device)
    work_px = pixel_size_angst * ny / shape[0]
    radius = max(1, int(round(0.5 * diameter_angst / work_px)))
    values, coords = non_maximum_suppression(scores, radius, threshold=threshold)
    edge = radius
    inside = ((coords[:, 0] >= edge) & (coords[:, 1] >= edge) & (coords[:, 0] < shape[1] - edge)
              & (coords[:, 1] < shape[0] - edge)) if len(coords) else np.zeros(0, bool)
    values, coords = values[inside], coords[inside]
    return Picks(x_px=coords[:, 0] * (nx / shape[1]), y_px=coords[:, 1] * (ny / shape[0]),
                 figure_of_merit=values.astype(np.float64),
                 diameter_angst=np.full(len(values), float(diameter_angst)))

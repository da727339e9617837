"""A small 2D job written by hand for the class-ranker tests: class averages whose nature is known.

Classes 1-4 are projections of adenylate kinase (real structure, ``vitrify.sim``) with a little
noise, as a good 2D class looks; 5 is pure noise, 6 an ice blob several times brighter, 7 an
empty box, 8 a good projection holding only 6 particles (not ranked: n_k <= 10). Every class
has 30 particles except class 8. Files: ``run_it010_{classes.mrcs,model,data,optimiser}.star``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

BOX_PX, PIXEL_ANGST, DIAMETER_ANGST = 48, 3.0, 110.0
GOOD, JUNK, SMALL = (1, 2, 3, 4), (5, 6, 7), 8
COUNTS = {**{k: 30 for k in (*GOOD, *JUNK)}, SMALL: 6}


@lru_cache(maxsize=4)
def class_images(seed: int = 0) -> np.ndarray:
    """``(8, 48, 48)`` class averages (see the module docstring)."""
    from vitrify.core.euler import euler_to_matrix
    from vitrify.core.projector import project_real
    from vitrify.sim.maps import MapOptions, simulate_map
    from vitrify.sim.structures import load_structure

    rng = np.random.default_rng(seed)
    volume = torch.as_tensor(simulate_map(load_structure("adk"), MapOptions(BOX_PX, PIXEL_ANGST)))
    angles = torch.tensor([[0.0, 0.0, 0.0], [40.0, 70.0, 10.0], [120.0, 90.0, -30.0], [200.0, 30.0, 60.0],
                           [300.0, 120.0, 0.0]])
    proj = project_real(volume.double(), euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2]).double()).numpy()
    proj = proj / proj.std()
    y, x = np.mgrid[:BOX_PX, :BOX_PX] - BOX_PX // 2
    ice = 8.0 * np.exp(-((x - 3) ** 2 + (y + 2) ** 2) / (2 * 6.0 ** 2))
    images = [proj[0], proj[1], proj[2], proj[3], rng.standard_normal((BOX_PX, BOX_PX)), ice,
              np.zeros((BOX_PX, BOX_PX)), proj[4]]
    images = [im + 0.1 * rng.standard_normal(im.shape) for im in images]
    return np.stack(images).astype(np.float32)


def write_job(folder: Path, *, do_ctf: bool = True, with_model: bool = True, seed: int = 0,
              model_pixel_angst: float = PIXEL_ANGST) -> Path:
    """Write the job into ``folder``; returns its optimiser.star."""
    from vitrify.io.mrc import write_mrc
    from vitrify.io.star import write_star

    folder.mkdir(parents=True, exist_ok=True)
    images = class_images(seed).copy()
    write_mrc(folder / "run_it010_classes.mrcs", images, PIXEL_ANGST)
    numbers = [k for k in sorted(COUNTS) for _ in range(COUNTS[k])]
    n = len(numbers)
    particles = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in range(n)], "rlnOpticsGroup": 1,
        "rlnDefocusU": 15000.0 + np.arange(n), "rlnDefocusV": 15000.0, "rlnDefocusAngle": 0.0,
        "rlnClassNumber": numbers, "rlnAnglePsi": 0.0, "vtfTag": np.arange(n)})
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                           "rlnImagePixelSize": [PIXEL_ANGST], "rlnImageSize": [BOX_PX], "rlnImageDimensionality": [2]})
    write_star(folder / "run_it010_data.star", {"optics": optics, "particles": particles})
    k = len(images)
    classes = pd.DataFrame({
        "rlnReferenceImage": [f"{i + 1:06d}@{folder / 'run_it010_classes.mrcs'}" for i in range(k)],
        "rlnClassDistribution": [COUNTS[i + 1] / n for i in range(k)],
        "rlnAccuracyRotations": [2.0, 2.5, 2.2, 3.0, 20.0, 15.0, 30.0, 2.0],
        "rlnAccuracyTranslationsAngst": [1.0, 1.2, 1.1, 1.5, 8.0, 6.0, 9.0, 1.0],
        "rlnEstimatedResolution": [9.0, 10.0, 9.5, 11.0, 40.0, 35.0, 60.0, 10.0]})
    general = {"rlnReferenceDimensionality": 2, "rlnOriginalImageSize": BOX_PX, "rlnPixelSize": model_pixel_angst,
               "rlnNrClasses": k}
    if with_model:
        write_star(folder / "run_it010_model.star", {"model_general": general, "model_classes": classes})
    write_star(folder / "run_it010_optimiser.star", {"optimiser_general": {
        "rlnModelStarFile": str(folder / "run_it010_model.star"),
        "rlnExperimentalDataStarFile": str(folder / "run_it010_data.star"),
        "rlnParticleDiameter": DIAMETER_ANGST, "rlnDoCorrectCtf": int(do_ctf),
        "rlnDoIgnoreCtfUntilFirstPeak": 0}})
    return folder / "run_it010_optimiser.star"

"""Random ground truth for simulated particles: orientations, shifts, micrographs, defocus, junk.

Every particle gets a row of a :class:`pandas.DataFrame` with RELION's labels (true angles,
origins, CTF parameters of its micrograph, coordinates) plus two vitrify labels:
``vtfMapIndex`` (1-based index of the map it was projected from, 0 for junk) and
``vtfJunkKind`` (``"none"`` for a real particle, else one of :data:`JUNK_KINDS`).

Orientations are uniform on SO(3): rot and psi uniform in [-180, 180), cos(tilt) uniform in
[-1, 1]. Origins are uniform in a disc of ``max_shift_px``; the particle centre sits at
``box centre - origin`` (RELION). Particles are grouped into micrographs of
``particles_per_micrograph``; each micrograph has one defocus (mean uniform in
[defocus_min, defocus_max], astigmatism uniform in [0, astigmatism_max], random angle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from vitrify.io.errors import InputError

#: Kinds of junk images a simulated data set can hold.
JUNK_KINDS: tuple[str, ...] = ("noise", "ice", "carbon", "aggregate")

#: Default micrograph size (px) used for simulated pick coordinates.
MICROGRAPH_SIZE_PX = 4096


@dataclass(frozen=True)
class GeometryOptions:
    """How the per-particle ground truth is drawn.

    Attributes
    ----------
    n_particles
        Number of images (particles and junk).
    box_px
        Image size.
    pixel_size_angst
        Pixel size (Å).
    n_maps
        Number of maps (heterogeneity); particles pick one uniformly.
    junk_fraction
        Fraction of images that are junk, in [0, 1).
    junk_kinds
        Kinds of junk to draw from, uniformly.
    max_shift_px
        Radius of the disc the origins are drawn from (px).
    particles_per_micrograph
        Images per simulated micrograph (defocus group).
    defocus_min_angst, defocus_max_angst
        Range of mean defocus (Å, underfocus positive).
    astigmatism_max_angst
        Largest |defocus U - defocus V| (Å).
    """

    n_particles: int
    box_px: int
    pixel_size_angst: float
    n_maps: int = 1
    junk_fraction: float = 0.0
    junk_kinds: tuple[str, ...] = JUNK_KINDS
    max_shift_px: float = 3.0
    particles_per_micrograph: int = 50
    defocus_min_angst: float = 8000.0
    defocus_max_angst: float = 25000.0
    astigmatism_max_angst: float = 500.0

    def __post_init__(self) -> None:
        checks = {
            "n": self.n_particles >= 1, "box": self.box_px >= 8 and self.box_px % 2 == 0,
            "pixel-size": self.pixel_size_angst > 0, "junk": 0 <= self.junk_fraction < 1,
            "max-shift": 0 <= self.max_shift_px < self.box_px / 4,
            "particles-per-micrograph": self.particles_per_micrograph >= 1,
            "defocus": 0 < self.defocus_min_angst <= self.defocus_max_angst,
            "astigmatism": 0 <= self.astigmatism_max_angst, "n_maps": self.n_maps >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise InputError(f"invalid value for --{', --'.join(bad)}", field="simulation geometry",
                             expected="n >= 1, even box >= 8, pixel > 0, 0 <= junk < 1, "
                                      "shift < box/4, 0 < defocus min <= max")
        unknown = set(self.junk_kinds) - set(JUNK_KINDS)
        if unknown or not self.junk_kinds:
            raise InputError(f"unknown junk kinds {sorted(unknown)}", field="junk_kinds",
                             expected=" | ".join(JUNK_KINDS))


def random_euler_deg(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3)`` (rot, tilt, psi) in degrees, uniform on SO(3)."""
    rot = rng.uniform(-180.0, 180.0, n)
    tilt = np.degrees(np.arccos(rng.uniform(-1.0, 1.0, n)))
    psi = rng.uniform(-180.0, 180.0, n)
    return np.stack([rot, tilt, psi], axis=1)


def random_disc_px(n: int, radius_px: float, rng: np.random.Generator) -> np.ndarray:
    """``(n, 2)`` points (x, y) uniform in a disc of ``radius_px``."""
    r = radius_px * np.sqrt(rng.uniform(0.0, 1.0, n))
    phi = rng.uniform(0.0, 2 * np.pi, n)
    return np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1)


def _micrograph_ctf(n_mics: int, opts: GeometryOptions, rng: np.random.Generator) -> np.ndarray:
    """``(n_mics, 3)`` defocus U, V (Å) and angle (deg) per micrograph."""
    mean = rng.uniform(opts.defocus_min_angst, opts.defocus_max_angst, n_mics)
    astig = rng.uniform(0.0, opts.astigmatism_max_angst, n_mics)
    angle = rng.uniform(0.0, 180.0, n_mics)
    return np.stack([mean + astig / 2, mean - astig / 2, angle], axis=1)


def draw_particle_truth(opts: GeometryOptions, rng: np.random.Generator) -> pd.DataFrame:
    """The ground-truth table of a simulated particle data set (one row per image).

    Columns: rlnMicrographName, rlnCoordinateX/Y, rlnAngleRot/Tilt/Psi, rlnOriginXAngst/YAngst,
    rlnDefocusU/V/Angle, vtfMapIndex, vtfJunkKind. Junk rows keep random angles and shifts
    (used to draw the junk), but their map index is 0.
    """
    n = opts.n_particles
    angles = random_euler_deg(n, rng)
    origins_angst = random_disc_px(n, opts.max_shift_px, rng) * opts.pixel_size_angst
    is_junk = rng.uniform(0.0, 1.0, n) < opts.junk_fraction
    kinds = np.where(is_junk, rng.choice(np.array(opts.junk_kinds, dtype=object), n), "none")
    maps = np.where(is_junk, 0, rng.integers(1, opts.n_maps + 1, n))
    mic = np.arange(n) // opts.particles_per_micrograph
    ctf = _micrograph_ctf(int(mic.max()) + 1, opts, rng)[mic]
    margin = opts.box_px
    coords = rng.uniform(margin, MICROGRAPH_SIZE_PX - margin, (n, 2)).round()
    return pd.DataFrame({
        "rlnMicrographName": [f"Micrographs/mic_{m + 1:05d}.mrc" for m in mic],
        "rlnCoordinateX": coords[:, 0], "rlnCoordinateY": coords[:, 1],
        "rlnAngleRot": angles[:, 0], "rlnAngleTilt": angles[:, 1], "rlnAnglePsi": angles[:, 2],
        "rlnOriginXAngst": origins_angst[:, 0], "rlnOriginYAngst": origins_angst[:, 1],
        "rlnDefocusU": ctf[:, 0], "rlnDefocusV": ctf[:, 1], "rlnDefocusAngle": ctf[:, 2],
        "vtfMapIndex": maps.astype(np.int64), "vtfJunkKind": kinds.astype(str).astype(object),
    })

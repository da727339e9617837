"""Simulated particle data sets with ground truth (``vitrify simulate particles``).

:func:`simulate_particles` writes, into ``out_dir``:

* ``particles.star``: RELION-4 (``data_optics`` + ``data_particles``), image names
  ``%06d@particles.mrcs`` relative to ``out_dir``, per-micrograph CTF columns, micrograph
  names and pick coordinates: what RELION's Extract job writes;
* ``particles.mrcs``: the images, "white protein", background mean 0 and std 1 (noise-free
  images stay in map units);
* ``truth_map.mrc`` (the first map) and ``truth_map_002.mrc`` ... for further maps;
* ``truth.star``: the same optics, and per image the true rlnAngleRot/Tilt/Psi,
  rlnOriginXAngst/YAngst, rlnClassNumber and ``vtfMapIndex`` (1-based map, 0 for junk),
  ``vtfJunkKind``; plus a ``data_simulation`` list block (SNR, noise sigma, radius, seed).

Image formation, noise and SNR definition: :mod:`vitrify.sim.render`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vitrify._progress import track
from vitrify.core.ctf import CtfParams
from vitrify.core.euler import euler_to_matrix
from vitrify.core.projector import Projector, crop_centered, make_projector
from vitrify.io.errors import InputError
from vitrify.io.mrc import write_mrc
from vitrify.io.star import write_star
from vitrify.sim import render
from vitrify.sim.geometry import JUNK_KINDS, GeometryOptions, draw_particle_truth, random_euler_deg
from vitrify.sim.junk import make_junk_image
from vitrify.sim.maps import MapOptions, simulate_map
from vitrify.sim.structures import load_structure

log = logging.getLogger(__name__)

NOISE_COLOURS = ("white", "coloured")


@dataclass(frozen=True)
class ParticleOptions:
    """Everything ``vitrify simulate particles`` needs (see the CLI for the meaning of each)."""

    structures: tuple[str, ...] = ("adk",)
    n_particles: int = 1000
    box_px: int = 64
    pixel_size_angst: float = 2.0
    snr: float = 0.1
    junk_fraction: float = 0.0
    junk_kinds: tuple[str, ...] = JUNK_KINDS
    apply_ctf: bool = True
    add_noise: bool = True
    noise_colour: str = "white"
    seed: int = 0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    defocus_min_angst: float = 8000.0
    defocus_max_angst: float = 25000.0
    astigmatism_max_angst: float = 500.0
    max_shift_px: float = 3.0
    particles_per_micrograph: int = 50
    bfactor_angst2: float = 0.0
    symmetry: str = "C1"
    float16: bool = False
    batch_size: int = 256
    geometry: GeometryOptions = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.structures:
            raise InputError("at least one structure is needed", field="--structure")
        if not self.snr > 0:
            raise InputError(f"SNR must be > 0, got {self.snr}", field="--snr")
        if self.noise_colour not in NOISE_COLOURS:
            raise InputError(f"unknown noise colour {self.noise_colour!r}", field="--noise",
                             expected=" | ".join(NOISE_COLOURS))
        if not 0 <= self.amplitude_contrast <= 1 or self.voltage_kv <= 0:
            raise InputError("amplitude contrast must be in [0, 1] and voltage > 0",
                             field="--amplitude-contrast")
        geometry = GeometryOptions(
            n_particles=self.n_particles, box_px=self.box_px, pixel_size_angst=self.pixel_size_angst,
            n_maps=len(self.structures), junk_fraction=self.junk_fraction, junk_kinds=self.junk_kinds,
            max_shift_px=self.max_shift_px, particles_per_micrograph=self.particles_per_micrograph,
            defocus_min_angst=self.defocus_min_angst, defocus_max_angst=self.defocus_max_angst,
            astigmatism_max_angst=self.astigmatism_max_angst)
        object.__setattr__(self, "geometry", geometry)

    @property
    def optics(self) -> CtfParams:
        """The microscope's CTF at the image pixel size (defocus 0: each image sets its own)."""
        return CtfParams(pixel_size_angst=self.pixel_size_angst, voltage_kv=self.voltage_kv, cs_mm=self.cs_mm,
                         amplitude_contrast=self.amplitude_contrast)


@dataclass(frozen=True)
class ParticleDataset:
    """What :func:`simulate_particles` wrote and the numbers behind it."""

    particles_star: Path
    particles_mrcs: Path
    truth_star: Path
    truth_maps: tuple[Path, ...]
    noise_sigma: float
    particle_radius_px: float
    truth: pd.DataFrame


def optics_table(options: ParticleOptions) -> pd.DataFrame:
    """RELION-4 particle optics block (one group)."""
    return pd.DataFrame({
        "rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
        "rlnMicrographOriginalPixelSize": [options.pixel_size_angst],
        "rlnVoltage": [options.voltage_kv], "rlnSphericalAberration": [options.cs_mm],
        "rlnAmplitudeContrast": [options.amplitude_contrast],
        "rlnImagePixelSize": [options.pixel_size_angst], "rlnImageSize": [options.box_px],
        "rlnImageDimensionality": [2], "rlnCtfDataAreCtfPremultiplied": [0],
    })


def _build_maps(options: ParticleOptions) -> tuple[list[np.ndarray], float]:
    """The maps ``(n, n, n)`` and the particle radius (px) for the SNR mask."""
    map_options = MapOptions(options.box_px, options.pixel_size_angst, options.bfactor_angst2)
    maps, radius = [], 0.0
    for name in options.structures:
        atoms = load_structure(name, symmetry=options.symmetry)
        maps.append(simulate_map(atoms, map_options))
        radius = max(radius, atoms.max_radius_angst() / options.pixel_size_angst)
    return maps, min(radius, options.box_px / 2 - 1)


class _Renderer:
    """Noise-free images for rows of the truth table (real particles and junk)."""

    def __init__(self, maps: list[np.ndarray], options: ParticleOptions, radius_px: float,
                 device: torch.device, junk_rng: np.random.Generator) -> None:
        self.options, self.radius_px, self.junk_rng = options, radius_px, junk_rng
        self.projectors: list[Projector] = [
            make_projector(torch.as_tensor(m, device=device)) for m in maps]
        self.device = device
        self.optics = options.optics
        probe = torch.as_tensor(random_euler_deg(8, np.random.default_rng(0)), dtype=torch.float32,
                                device=device)
        rotations = euler_to_matrix(probe[:, 0], probe[:, 1], probe[:, 2])
        self.junk_scale = float(self.project(rotations, 1).amax(dim=(-2, -1)).mean())

    def project(self, rotations: torch.Tensor, map_index: int) -> torch.Tensor:
        """Centred projections ``(k, n, n)`` of map ``map_index`` (1-based), no CTF."""
        origins = torch.zeros(rotations.shape[0], 2, device=self.device)
        return render.project_particles(self.projectors[map_index - 1], rotations, origins)

    def _columns(self, rows: pd.DataFrame, names: list[str]) -> torch.Tensor:
        return torch.as_tensor(rows[names].to_numpy(np.float32, copy=True), device=self.device)

    def _ctf(self, defocus: torch.Tensor | None) -> CtfParams | None:
        """The CTFs of ``(b, 3)`` defocus rows (U Å, V Å, angle deg); None without CTF."""
        if defocus is None:
            return None
        return replace(self.optics, defocus_u_angst=defocus[:, 0], defocus_v_angst=defocus[:, 1],
                       defocus_angle_deg=defocus[:, 2])

    def _junk(self, rows: pd.DataFrame, index: int, defocus: torch.Tensor | None) -> torch.Tensor:
        """One ``(n, n)`` junk image, drawn on a twice larger field so the CTF does not wrap."""
        n = self.options.box_px
        junk = make_junk_image(rows["vtfJunkKind"].iloc[index], 2 * n, self.junk_rng,
                               scale=self.junk_scale, radius_px=self.radius_px,
                               project=self.project, n_maps=len(self.projectors))
        image = torch.as_tensor(junk, dtype=torch.float32, device=self.device)[None]
        image = render.apply_ctf(image, self._ctf(None if defocus is None else defocus[index:index + 1]),
                                 pad=1)
        return crop_centered(image, n, 2)[0]

    def render(self, rows: pd.DataFrame) -> torch.Tensor:
        """``(b, n, n)`` float32 noise-free images of ``rows``."""
        n = self.options.box_px
        defocus = self._columns(rows, ["rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"]) \
            if self.options.apply_ctf else None
        angles = self._columns(rows, ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"])
        rotations = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
        origins = self._columns(rows, ["rlnOriginXAngst", "rlnOriginYAngst"]) / self.options.pixel_size_angst
        out = torch.zeros(len(rows), n, n, device=self.device)
        maps = rows["vtfMapIndex"].to_numpy()
        for m in np.unique(maps[maps > 0]):
            sel = torch.as_tensor(np.flatnonzero(maps == m), device=self.device)
            out[sel] = render.project_particles(self.projectors[m - 1], rotations[sel], origins[sel])
        real = torch.as_tensor(np.flatnonzero(maps > 0), device=self.device)
        if defocus is not None and len(real):
            out[real] = render.apply_ctf(out[real], self._ctf(defocus[real]))
        for i in np.flatnonzero(maps == 0):
            out[i] = self._junk(rows, i, defocus)
        return out


def render_signal(maps: list[np.ndarray], truth: pd.DataFrame, options: ParticleOptions,
                  radius_px: float, *, device: torch.device | str = "cpu",
                  junk_rng: np.random.Generator | None = None) -> torch.Tensor:
    """Noise-free images ``(N, n, n)`` (CPU float32) of every row of ``truth``."""
    device = torch.device(device)
    junk_rng = np.random.default_rng(options.seed) if junk_rng is None else junk_rng
    renderer = _Renderer(maps, options, radius_px, device, junk_rng)
    signal = torch.empty(len(truth), options.box_px, options.box_px)
    for part in track(list(render.batches(len(truth), options.batch_size)), "projecting particles"):
        signal[part] = renderer.render(truth.iloc[part]).cpu()
    return signal


def noise_sigma_for_snr(signal: torch.Tensor, truth: pd.DataFrame, radius_px: float, snr: float) -> float:
    """Noise standard deviation giving ``snr`` = mean masked signal variance / noise variance."""
    mask = render.disc_mask(signal.shape[-1], radius_px)
    real = torch.as_tensor((truth["vtfMapIndex"] > 0).to_numpy(copy=True))
    chosen = signal[real] if bool(real.any()) else signal
    return float(torch.sqrt(render.masked_variance(chosen, mask).mean() / snr))


def add_noise_and_normalise(signal: torch.Tensor, sigma: float, options: ParticleOptions,
                            generator: torch.Generator) -> torch.Tensor:
    """Noisy, RELION-normalised images ``(N, n, n)`` from noise-free ``signal``."""
    n = signal.shape[-1]
    amplitude = render.noise_amplitude(n, options.noise_colour)
    out = torch.empty_like(signal)
    for part in render.batches(len(signal), options.batch_size):
        noise = render.draw_noise(signal[part].shape, sigma, amplitude, generator)
        out[part] = render.normalise_relion(signal[part] + noise)
    return out


def _star_tables(truth: pd.DataFrame, options: ParticleOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(particles table as Extract writes it, truth table) sharing image names."""
    n = len(truth)
    base = pd.DataFrame({
        "rlnCoordinateX": truth["rlnCoordinateX"], "rlnCoordinateY": truth["rlnCoordinateY"],
        "rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in range(n)],
        "rlnMicrographName": truth["rlnMicrographName"], "rlnOpticsGroup": np.ones(n, np.int64),
    })
    ctf = pd.DataFrame({
        "rlnDefocusU": truth["rlnDefocusU"], "rlnDefocusV": truth["rlnDefocusV"],
        "rlnDefocusAngle": truth["rlnDefocusAngle"], "rlnCtfBfactor": np.zeros(n),
        "rlnCtfScalefactor": np.ones(n), "rlnPhaseShift": np.zeros(n),
    }) if options.apply_ctf else pd.DataFrame(index=truth.index)
    particles = pd.concat([base, ctf], axis=1)
    true_columns = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
                    "rlnOriginYAngst"]
    truth_table = pd.concat([particles, truth[true_columns]], axis=1)
    truth_table["rlnClassNumber"] = truth["vtfMapIndex"].to_numpy()
    truth_table["vtfMapIndex"] = truth["vtfMapIndex"].to_numpy()
    truth_table["vtfJunkKind"] = truth["vtfJunkKind"].to_numpy()
    return particles, truth_table


def _truth_map_name(index: int) -> str:
    return "truth_map.mrc" if index == 1 else f"truth_map_{index:03d}.mrc"


def simulate_particles(options: ParticleOptions, out_dir: str | Path, *,
                       device: torch.device | str = "cpu") -> ParticleDataset:
    """Simulate a particle data set and write it with its ground truth into ``out_dir``.

    Random streams (geometry, junk, noise) are independent children of ``options.seed``, so
    the same seed with and without noise gives the same particles.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    geometry_ss, junk_ss, noise_ss = np.random.SeedSequence(options.seed).spawn(3)
    maps, radius_px = _build_maps(options)
    truth = draw_particle_truth(options.geometry, np.random.default_rng(geometry_ss))
    signal = render_signal(maps, truth, options, radius_px, device=device,
                           junk_rng=np.random.default_rng(junk_ss))
    sigma = noise_sigma_for_snr(signal, truth, radius_px, options.snr)
    images = signal
    if options.add_noise:
        generator = torch.Generator().manual_seed(int(noise_ss.generate_state(1)[0]))
        images = add_noise_and_normalise(signal, sigma, options, generator)
    paths = [out_dir / _truth_map_name(i + 1) for i in range(len(maps))]
    for path, volume in zip(paths, maps):
        write_mrc(path, volume, options.pixel_size_angst)
    write_mrc(out_dir / "particles.mrcs", images.numpy(), options.pixel_size_angst,
              float16=options.float16)
    particles, truth_table = _star_tables(truth, options)
    optics = optics_table(options)
    write_star(out_dir / "particles.star", {"optics": optics, "particles": particles})
    summary = {"vtfSnr": options.snr, "vtfNoiseSigma": sigma, "vtfNoiseColour": options.noise_colour,
               "vtfParticleRadiusPx": radius_px, "vtfSeed": options.seed,
               "vtfCtfApplied": int(options.apply_ctf), "vtfNoiseAdded": int(options.add_noise),
               "vtfStructures": ",".join(options.structures), "vtfSymmetry": options.symmetry}
    write_star(out_dir / "truth.star", {"optics": optics, "particles": truth_table,
                                        "simulation": summary}, float_format="%.8g")
    log.info("simulated %d particles (noise sigma %.4g, radius %.1f px) in %s",
             len(truth), sigma, radius_px, out_dir)
    return ParticleDataset(out_dir / "particles.star", out_dir / "particles.mrcs",
                           out_dir / "truth.star", tuple(paths), sigma, radius_px, truth_table)

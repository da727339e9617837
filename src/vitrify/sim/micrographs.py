"""Simulated micrographs with ground truth (``vitrify simulate micrographs``).

Each micrograph holds particles at known coordinates (minimum distance between centres),
an ice layer with a thickness gradient, optionally a carbon edge, and the CTF of its own
defocus (image formation: :mod:`vitrify.sim.scene`). The electron counts are Poisson with
mean ``total dose (e/Å²) × pixel² × relative intensity``. Written into ``out_dir``:

* ``Micrographs/mic_NNNNN.mrc`` (float32 counts, motion-free sums);
* ``micrographs.star`` (RELION-4 optics + micrographs, as MotionCorr writes it);
* ``truth.star``: ``data_micrographs`` (defocus, ice thickness, carbon edge per micrograph)
  and ``data_particles`` (rlnMicrographName, rlnCoordinateX/Y, true angles, vtfMapIndex);
* ``coordinates/mic_NNNNN.star``: the true centres per micrograph (ManualPick format);
* ``truth_micrographs/mic_NNNNN.mrc``: the noise-free expected counts;
* ``Micrographs/mic_NNNNN.xml`` (EPU style) and ``mic_NNNNN.mrc.mdoc`` (SerialEM style): the
  acquisition metadata of each micrograph as one exposure of the whole dose
  (:mod:`vitrify.sim.session`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vitrify._progress import track
from vitrify.core.ctf import CtfParams
from vitrify.core.projector import make_projector
from vitrify.io.errors import InputError
from vitrify.io.mrc import write_mrc
from vitrify.io.star import write_star
from vitrify.sim import scene
from vitrify.sim.geometry import random_euler_deg
from vitrify.sim.maps import MapOptions, simulate_map
from vitrify.sim.session import write_session_metadata
from vitrify.sim.structures import load_structure

MOVIE_FORMATS = ("tiff", "mrc")


@dataclass(frozen=True)
class MicrographOptions:
    """Options of simulated micrographs and movies (sizes default small enough for tests)."""

    structures: tuple[str, ...] = ("adk",)
    n_micrographs: int = 2
    size_px: tuple[int, int] = (512, 512)
    pixel_size_angst: float = 1.5
    particles_per_micrograph: int = 30
    min_distance_angst: float = 0.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.1
    defocus_min_angst: float = 8000.0
    defocus_max_angst: float = 25000.0
    astigmatism_max_angst: float = 500.0
    ice_thickness_nm: float = 40.0
    ice_gradient_nm: float = 20.0
    carbon_fraction: float = 0.5
    carbon_phase_rad: float = 0.6
    n_frames: int = 8
    dose_per_frame: float = 5.0
    exposure_time_s: float = 2.0
    drift_total_px: float = 6.0
    local_drift_px: float = 0.5
    gain_sigma: float = 0.05
    movie_format: str = "tiff"
    symmetry: str = "C1"
    seed: int = 0

    def __post_init__(self) -> None:
        ok = {"--n": self.n_micrographs >= 1, "--size": min(self.size_px) >= 64,
              "--pixel-size": self.pixel_size_angst > 0, "--particles": self.particles_per_micrograph >= 0,
              "--frames": self.n_frames >= 1, "--dose-per-frame": self.dose_per_frame > 0,
              "--defocus-min/max": 0 < self.defocus_min_angst <= self.defocus_max_angst,
              "--carbon": 0 <= self.carbon_fraction <= 1, "--ice-thickness": self.ice_thickness_nm >= 0,
              "--min-distance": self.min_distance_angst >= 0,
              "--format": self.movie_format in MOVIE_FORMATS}
        bad = [name for name, good in ok.items() if not good]
        if bad:
            raise InputError(f"invalid value for {', '.join(bad)}", field="simulate micrographs",
                             expected="n >= 1, size >= 64 px, pixel > 0, frames >= 1, dose > 0, "
                                      "0 < defocus min <= max, format tiff | mrc")

    @property
    def optics(self) -> CtfParams:
        """The microscope's CTF at the micrograph pixel size (defocus 0: each micrograph sets its own)."""
        return CtfParams(pixel_size_angst=self.pixel_size_angst, voltage_kv=self.voltage_kv, cs_mm=self.cs_mm,
                         amplitude_contrast=self.amplitude_contrast)

    @property
    def total_dose(self) -> float:
        """Electrons per Å² over the whole exposure."""
        return self.dose_per_frame * self.n_frames


@dataclass(frozen=True)
class Specimen:
    """Maps as projectors, with the radius (px) of the largest particle."""

    projectors: list
    radius_px: float


def build_specimen(options: MicrographOptions, device: torch.device) -> Specimen:
    """Projectors of every structure's map at the micrograph pixel size."""
    atoms = [load_structure(s, symmetry=options.symmetry) for s in options.structures]
    radius_px = max(a.max_radius_angst() for a in atoms) / options.pixel_size_angst
    box = int(2 * np.ceil(radius_px + 3))
    box = min(box, 2 * (min(options.size_px) // 4))
    maps = [simulate_map(a, MapOptions(box, options.pixel_size_angst)) for a in atoms]
    return Specimen([make_projector(torch.as_tensor(m, device=device)) for m in maps], radius_px)


def draw_scene(options: MicrographOptions, specimen: Specimen, rng: np.random.Generator) -> scene.SceneTruth:
    """Random defocus, ice, carbon edge and particle positions of one micrograph."""
    ny, nx = options.size_px
    mean = rng.uniform(options.defocus_min_angst, options.defocus_max_angst)
    astig = rng.uniform(0, options.astigmatism_max_angst)
    defocus = np.array([mean + astig / 2, mean - astig / 2, rng.uniform(0, 180)])
    half = options.ice_gradient_nm / 2 * rng.choice([-1, 1])
    ice = np.array([options.ice_thickness_nm - half, options.ice_thickness_nm + half]).clip(0)
    has_carbon = rng.uniform() < options.carbon_fraction
    carbon = np.array([rng.uniform(0, 2 * np.pi), rng.uniform(0.25, 0.4) * min(nx, ny), float(has_carbon)])
    allowed = scene.carbon_side((ny, nx), carbon) < -specimen.radius_px
    # crowding: centres at least --min-distance apart (default one particle diameter; less lets
    # neighbours touch or overlap, as on a crowded grid)
    min_distance = (options.min_distance_angst / options.pixel_size_angst if options.min_distance_angst > 0
                    else 2 * specimen.radius_px)
    margin = specimen.projectors[0].box_px // 2 + 1
    coords = scene.place_particles((ny, nx), options.particles_per_micrograph, min_distance, margin,
                                   allowed, rng)
    maps = rng.integers(1, len(specimen.projectors) + 1, len(coords))
    return scene.SceneTruth(coords, random_euler_deg(len(coords), rng), maps, defocus, ice, carbon)


def render_intensity(options: MicrographOptions, specimen: Specimen, truth: scene.SceneTruth,
                     rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    """Noise-free relative intensity ``(ny, nx)`` (1 = unattenuated beam) of one micrograph."""
    shape = tuple(options.size_px)
    per_unit = (scene.interaction_constant(options.voltage_kv) * scene.MOTT_BETHE_VOLT_ANGST2
                * options.pixel_size_angst)
    phase = scene.particle_phase(specimen.projectors, truth, shape, per_unit, device)
    phase = phase + torch.as_tensor(scene.carbon_phase(shape, truth, options.carbon_phase_rad, rng),
                                    dtype=torch.float32, device=device)
    attenuation = torch.as_tensor(scene.ice_attenuation(shape, truth.ice_nm).copy(),
                                  dtype=torch.float32, device=device)
    u, v, angle = (float(d) for d in truth.defocus)
    ctf = replace(options.optics, defocus_u_angst=u, defocus_v_angst=v, defocus_angle_deg=angle)
    return scene.intensity(phase, attenuation, ctf)


def optics_table(options: MicrographOptions, *, movies: bool = False) -> pd.DataFrame:
    """RELION-4 optics block of micrographs (or movies)."""
    table = {"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
             "rlnMicrographOriginalPixelSize": [options.pixel_size_angst],
             "rlnVoltage": [options.voltage_kv], "rlnSphericalAberration": [options.cs_mm],
             "rlnAmplitudeContrast": [options.amplitude_contrast]}
    if not movies:
        table["rlnMicrographPixelSize"] = [options.pixel_size_angst]
    return pd.DataFrame(table)


def truth_tables(names: list[str], truths: list[scene.SceneTruth]) -> dict[str, pd.DataFrame]:
    """``{"micrographs": ..., "particles": ...}`` ground-truth tables."""
    mics = pd.DataFrame({
        "rlnMicrographName": names,
        "rlnDefocusU": [t.defocus[0] for t in truths], "rlnDefocusV": [t.defocus[1] for t in truths],
        "rlnDefocusAngle": [t.defocus[2] for t in truths],
        "vtfIceThicknessLeftNm": [t.ice_nm[0] for t in truths],
        "vtfIceThicknessRightNm": [t.ice_nm[1] for t in truths],
        "vtfCarbonEdge": [int(t.carbon[2]) for t in truths],
        "vtfCarbonAngleDeg": [np.degrees(t.carbon[0]) for t in truths],
        "vtfCarbonOffsetPx": [t.carbon[1] for t in truths],
        "vtfParticleCount": [len(t.map_index) for t in truths]})
    rows = [pd.DataFrame({"rlnMicrographName": name, "rlnCoordinateX": t.coordinates_px[:, 0],
                          "rlnCoordinateY": t.coordinates_px[:, 1], "rlnAngleRot": t.angles_deg[:, 0],
                          "rlnAngleTilt": t.angles_deg[:, 1], "rlnAnglePsi": t.angles_deg[:, 2],
                          "vtfMapIndex": t.map_index.astype(np.int64)})
            for name, t in zip(names, truths)]
    return {"micrographs": mics, "particles": pd.concat(rows, ignore_index=True)}


def write_coordinates(out_dir: Path, names: list[str], truths: list[scene.SceneTruth]) -> list[Path]:
    """``coordinates/<micrograph stem>.star`` with the true centres (ManualPick format)."""
    paths = []
    for name, t in zip(names, truths):
        path = out_dir / "coordinates" / f"{Path(name).stem}.star"
        write_star(path, {"": pd.DataFrame({"rlnCoordinateX": t.coordinates_px[:, 0],
                                            "rlnCoordinateY": t.coordinates_px[:, 1],
                                            "rlnClassNumber": t.map_index.astype(np.int64),
                                            "rlnAnglePsi": np.full(len(t.map_index), -999.0),
                                            "rlnAutopickFigureOfMerit": np.full(len(t.map_index), -999.0)})})
        paths.append(path)
    return paths


def write_expected(out_dir: Path, name: str, expected: torch.Tensor, options: MicrographOptions) -> Path:
    """Write noise-free expected counts ``(ny, nx)`` as ``truth_micrographs/<stem>.mrc``."""
    path = out_dir / "truth_micrographs" / f"{Path(name).stem}.mrc"
    write_mrc(path, expected.cpu().numpy(), options.pixel_size_angst)
    return path


@dataclass(frozen=True)
class MicrographDataset:
    """What :func:`simulate_micrographs` / ``simulate_movies`` wrote."""

    star: Path
    truth_star: Path
    files: tuple[Path, ...]
    truth: dict


def simulate_micrographs(options: MicrographOptions, out_dir: str | Path, *,
                         device: torch.device | str = "cpu") -> MicrographDataset:
    """Simulate motion-free micrographs (Poisson counts of the whole dose) into ``out_dir``."""
    out_dir, device = Path(out_dir), torch.device(device)
    scene_ss, noise_ss = np.random.SeedSequence(options.seed).spawn(2)
    rng = np.random.default_rng(scene_ss)
    generator = torch.Generator(device=device).manual_seed(int(noise_ss.generate_state(1)[0]))
    specimen = build_specimen(options, device)
    names, truths = [], []
    counts_per_px = options.total_dose * options.pixel_size_angst**2
    for index in track(range(options.n_micrographs), "simulating micrographs"):
        truth = draw_scene(options, specimen, rng)
        expected = render_intensity(options, specimen, truth, rng, device) * counts_per_px
        counts = torch.poisson(expected.clamp(min=0), generator=generator)
        name = f"Micrographs/mic_{index + 1:05d}.mrc"
        write_expected(out_dir, name, expected, options)
        write_mrc(out_dir / name, counts.cpu().numpy(), options.pixel_size_angst)
        names.append(name)
        truths.append(truth)
    write_star(out_dir / "micrographs.star", {
        "optics": optics_table(options),
        "micrographs": pd.DataFrame({"rlnMicrographName": names, "rlnOpticsGroup": 1})})
    tables = truth_tables(names, truths)
    write_star(out_dir / "truth.star", tables, float_format="%.8g")
    write_coordinates(out_dir, names, truths)
    write_session_metadata(out_dir / "Micrographs", [out_dir / n for n in names],
                           pixel_size_angst=options.pixel_size_angst, voltage_kv=options.voltage_kv,
                           cs_mm=options.cs_mm, dose_per_frame_e_per_angst2=options.total_dose,
                           exposure_time_s=options.exposure_time_s,
                           defocus_angst=float(np.mean([t.defocus[:2].mean() for t in truths])))
    return MicrographDataset(out_dir / "micrographs.star", out_dir / "truth.star",
                             tuple(out_dir / n for n in names), tables)

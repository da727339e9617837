"""A grid of simulated micrograph conditions with ground truth, shared by the preprocessing benchmarks.

:func:`simulate_grid` writes one small dataset (``vitrify.sim.micrographs.simulate_micrographs``:
motion-free Poisson-count micrographs, ``micrographs.star``, ``truth.star``, true coordinates) per
:class:`Condition` under ``out_dir/<condition name>/`` and returns a :class:`Grid` with the truth
of every micrograph and particle, tagged by condition. Conditions (:func:`grid_conditions`):

* ``outside-like``: the case of issue 15 — sparse particles (60 per 1024² field), thin ice, no
  carbon, white (Poisson) noise only, defocus 0.8-3 µm, astigmatism up to 1500 Å;
* one factor changed at a time from that base: particle density 10 and 200 per field, thick
  ice, a carbon edge on every micrograph, low dose (SNR), small particles (ADK instead of CFTR);
* with ``full=True``, the factorial grid density {10, 60, 200} × ice {thin, thick} × carbon
  {no, yes} × dose {low, high} instead of the one-at-a-time variations.

Within every condition except ``outside-like``, each micrograph draws its mean defocus uniformly
in 0.5-4 µm and its astigmatism |U - V| uniformly in 0-2000 Å (the simulator's draws), so the
errors can also be binned by defocus and astigmatism. Particle counts are given per 1024² px
field and scaled by the micrograph's area; centres are one particle diameter apart, or closer
(touching, overlapping) where the density needs it. Everything is seeded: the same arguments give the
same micrographs. A condition's directory is reused when it holds a finished simulation of the
same options (``grid_options.json``).

Use (another benchmark)::

    from _grid import simulate_grid, grid_conditions
    grid = simulate_grid(Path("work/grid"), grid_conditions(), n_per_condition=3, size_px=1024)
    for s in grid.sets:            # one per condition
        s.condition, s.directory, s.star    # micrographs.star (run jobs with cwd = s.directory)
    grid.micrographs               # DataFrame: condition, rlnMicrographName, rlnDefocusU/V/Angle, ...
    grid.particles                 # DataFrame: condition, rlnMicrographName, rlnCoordinateX/Y, ...
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

#: particle counts are given per field of this many pixels squared
FIELD_PX = 1024
#: ice thickness (nm) of the "thin" and "thick" conditions
THIN_ICE_NM, THICK_ICE_NM = 20.0, 80.0
#: total dose (e/Å²) of the "high" and "low" SNR conditions
HIGH_DOSE, LOW_DOSE = 40.0, 12.0


@dataclass(frozen=True)
class Condition:
    """One cell of the grid (what differs between micrograph sets)."""

    name: str
    particles_per_field: int = 60
    ice_thickness_nm: float = THIN_ICE_NM
    carbon_fraction: float = 0.0
    defocus_min_angst: float = 5000.0
    defocus_max_angst: float = 40000.0
    astigmatism_max_angst: float = 2000.0
    dose_e_per_angst2: float = HIGH_DOSE
    structure: str = "cftr"
    seed_offset: int = 0  # added to simulate_grid's seed: a condition keeps its micrographs in any selection


#: the micrographs of issue 15 that vitrify ctffind failed on
OUTSIDE_LIKE = Condition("outside-like", 60, THIN_ICE_NM, 0.0, 8000.0, 30000.0, 1500.0, HIGH_DOSE)


def grid_conditions(*, full: bool = False) -> list[Condition]:
    """The conditions: ``outside-like`` plus one-factor-at-a-time variations, or the factorial grid."""
    base = replace(OUTSIDE_LIKE, name="base", defocus_min_angst=5000.0, defocus_max_angst=40000.0,
                   astigmatism_max_angst=2000.0)
    if full:
        cells = [replace(base, name=f"p{p}-{ice}-{'carbon' if c else 'nocarbon'}-{dose}",
                         particles_per_field=p, ice_thickness_nm=THIN_ICE_NM if ice == "thin" else THICK_ICE_NM,
                         carbon_fraction=float(c), dose_e_per_angst2=HIGH_DOSE if dose == "hidose" else LOW_DOSE)
                 for p in (10, 60, 200) for ice in ("thin", "thick") for c in (0, 1) for dose in ("hidose", "lodose")]
        conditions = [OUTSIDE_LIKE, *cells]
    else:
        conditions = [OUTSIDE_LIKE, base,
                      replace(base, name="sparse-10", particles_per_field=10),
                      replace(base, name="dense-200", particles_per_field=200),
                      replace(base, name="thick-ice", ice_thickness_nm=THICK_ICE_NM),
                      replace(base, name="carbon", carbon_fraction=1.0),
                      replace(base, name="low-dose", dose_e_per_angst2=LOW_DOSE),
                      replace(base, name="small-particles", structure="adk")]
    return [replace(c, seed_offset=1000 * i) for i, c in enumerate(conditions)]


@dataclass(frozen=True)
class GridSet:
    """The simulated micrographs of one condition."""

    condition: Condition
    directory: Path
    star: Path
    radius_angst: float


@dataclass(frozen=True)
class Grid:
    """Every condition's dataset and the truth of all of them (names relative to each set's directory)."""

    sets: tuple[GridSet, ...]
    micrographs: pd.DataFrame
    particles: pd.DataFrame


def micrograph_options(condition: Condition, *, n: int, size_px: int, pixel_size_angst: float, seed: int):
    """The simulator's options for one condition (particles scaled from the 1024² field to ``size_px``²)."""
    from vitrify.sim.micrographs import MicrographOptions

    from vitrify.sim.structures import load_structure

    particles = max(1, round(condition.particles_per_field * (size_px / FIELD_PX) ** 2))
    # centres one diameter apart, closer (neighbours touch or overlap) when the density asks for it
    spacing_angst = FIELD_PX * pixel_size_angst / condition.particles_per_field ** 0.5
    diameter_angst = 2 * load_structure(condition.structure).max_radius_angst()
    min_distance_angst = min(diameter_angst, 0.6 * spacing_angst)
    return MicrographOptions(structures=(condition.structure,), n_micrographs=n, size_px=(size_px, size_px),
                             pixel_size_angst=pixel_size_angst, particles_per_micrograph=particles,
                             min_distance_angst=min_distance_angst,
                             defocus_min_angst=condition.defocus_min_angst,
                             defocus_max_angst=condition.defocus_max_angst,
                             astigmatism_max_angst=condition.astigmatism_max_angst,
                             ice_thickness_nm=condition.ice_thickness_nm, ice_gradient_nm=10.0,
                             carbon_fraction=condition.carbon_fraction, n_frames=1,
                             dose_per_frame=condition.dose_e_per_angst2, seed=seed)


def _simulate_one(directory: Path, options, device: str) -> dict:
    """Simulate (or reuse) one condition's dataset; return its truth tables."""
    from vitrify.io.star import read_star
    from vitrify.sim.micrographs import simulate_micrographs

    stamp = directory / "grid_options.json"
    wanted = json.dumps(asdict(options), sort_keys=True, default=str)
    if stamp.exists() and stamp.read_text() == wanted and (directory / "truth.star").exists():
        return read_star(directory / "truth.star")
    truth = simulate_micrographs(options, directory, device=device).truth
    stamp.write_text(wanted)
    return truth


def simulate_grid(out_dir: str | Path, conditions: list[Condition] | None = None, *, n_per_condition: int = 3,
                  size_px: int = 1024, pixel_size_angst: float = 1.5, seed: int = 0,
                  device: str = "cpu") -> Grid:
    """Simulate ``n_per_condition`` micrographs of ``size_px``² for every condition into ``out_dir/<name>``.

    A condition is seeded with ``seed + condition.seed_offset`` (:func:`grid_conditions` gives the
    i-th ``1000 * i``), so a subset of the conditions simulates the same micrographs. Returns the
    datasets and the truth tables (columns of ``truth.star`` plus ``condition``, ``vtfTrueAstigmatism`` = |U - V| and
    ``vtfTrueDefocusMean`` in Å for micrographs).
    """
    from vitrify._progress import set_quiet
    from vitrify.sim.structures import load_structure

    set_quiet(True)
    out_dir = Path(out_dir).resolve()
    conditions = grid_conditions() if conditions is None else conditions
    sets, mics, parts = [], [], []
    for condition in conditions:
        options = micrograph_options(condition, n=n_per_condition, size_px=size_px,
                                     pixel_size_angst=pixel_size_angst, seed=seed + condition.seed_offset)
        directory = out_dir / condition.name
        truth = _simulate_one(directory, options, device)
        radius = load_structure(condition.structure).max_radius_angst()
        sets.append(GridSet(condition, directory, directory / "micrographs.star", radius))
        mics.append(truth["micrographs"].assign(condition=condition.name))
        parts.append(truth["particles"].assign(condition=condition.name))
    micrographs = pd.concat(mics, ignore_index=True)
    micrographs["vtfTrueAstigmatism"] = (micrographs["rlnDefocusU"] - micrographs["rlnDefocusV"]).abs()
    micrographs["vtfTrueDefocusMean"] = (micrographs["rlnDefocusU"] + micrographs["rlnDefocusV"]) / 2
    return Grid(tuple(sets), micrographs, pd.concat(parts, ignore_index=True))

"""Job ``simulate``: ground-truth particle, micrograph or movie data sets.

Thin wrapper around :mod:`vitrify.sim`: ``Options`` names what to simulate and carries the
simulator's own options; :func:`run` resolves the device and writes into the job directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vitrify.io.errors import InputError

KINDS = ("particles", "micrographs", "movies")


@dataclass(frozen=True)
class Options:
    """What to simulate.

    Attributes
    ----------
    kind
        ``"particles"``, ``"micrographs"`` or ``"movies"``.
    sim
        The simulator's options: :class:`vitrify.sim.particles.ParticleOptions` or
        :class:`vitrify.sim.micrographs.MicrographOptions` (micrographs and movies).
    device
        ``"auto" | "cpu" | "cuda"``.
    """

    kind: str
    sim: object
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown simulation kind {self.kind!r}", field="kind",
                             expected=" | ".join(KINDS))


def _particles(options: Options, job_dir: Path, device) -> object:
    from vitrify.sim.particles import simulate_particles

    return simulate_particles(options.sim, job_dir, device=device)


def _micrographs(options: Options, job_dir: Path, device) -> object:
    from vitrify.sim.micrographs import simulate_micrographs

    return simulate_micrographs(options.sim, job_dir, device=device)


def _movies(options: Options, job_dir: Path, device) -> object:
    from vitrify.sim.movies import simulate_movies

    return simulate_movies(options.sim, job_dir, device=device)


_RUNNERS: dict[str, Callable[[Options, Path, object], object]] = {
    "particles": _particles, "micrographs": _micrographs, "movies": _movies,
}


def _describe(kind: str, result, job_dir: Path) -> str:
    """One line for run.log: what was written where."""
    if kind == "particles":
        junk = int((result.truth["vtfJunkKind"] != "none").sum())
        return (f"wrote {len(result.truth)} images ({junk} junk) to {result.particles_star.name} + "
                f"{result.particles_mrcs.name}; truth in {result.truth_star.name}, "
                f"{', '.join(p.name for p in result.truth_maps)}")
    n_particles = len(result.truth["particles"])
    return (f"wrote {len(result.files)} {kind} with {n_particles} particles to "
            f"{Path(result.files[0]).parent.relative_to(job_dir)}/; list {result.star.name}, "
            f"truth {result.truth_star.name}")


def run(options: Options, job_dir: str | Path) -> object:
    """Simulate into ``job_dir``; returns the simulator's result (paths and truth).

    Logs the options' values and a summary of what was written to ``job_dir/run.log``.
    """
    from vitrify.core.device import resolve_device
    from vitrify.jobs.base import job_logger

    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    log = job_logger(job_dir)
    device = resolve_device(options.device)
    log.info("simulate %s on %s: %r", options.kind, device, options.sim)
    result = _RUNNERS[options.kind](options, job_dir, device)
    log.info(_describe(options.kind, result, job_dir))
    return result


def _flag(value: str) -> bool:
    return str(value).strip().lower() in ("yes", "true", "1")


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from job.star values (particles only): ``fn_in`` (structure, comma-separated
    for several), ``nr_particles``, ``box_size``, ``angpix``, ``snr``, ``junk_fraction``,
    ``do_ctf``, ``do_noise``, ``random_seed``."""
    from vitrify.sim.particles import ParticleOptions

    try:
        sim = ParticleOptions(
            structures=tuple(s.strip() for s in values.get("fn_in", "adk").split(",") if s.strip()),
            n_particles=int(values.get("nr_particles", 1000)), box_px=int(values.get("box_size", 64)),
            pixel_size_angst=float(values.get("angpix", 2.0)), snr=float(values.get("snr", 0.1)),
            junk_fraction=float(values.get("junk_fraction", 0.0)),
            apply_ctf=_flag(values.get("do_ctf", "Yes")), add_noise=_flag(values.get("do_noise", "Yes")),
            seed=int(values.get("random_seed", 0)))
    except ValueError as err:
        raise InputError(f"bad simulate job option ({err})", field="job.star") from err
    return Options("particles", sim, values.get("device", "auto") or "auto")

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


def _integer(values: dict[str, str], key: str, default: int) -> int:
    from vitrify.jobs._preprocess_io import number

    value = number(values, key, default)
    if value != int(value):
        raise InputError(f"not a whole number: {value!r}", field=key, expected="an integer")
    return int(value)


def _structures(values: dict[str, str]) -> tuple[str, ...]:
    from vitrify.jobs._preprocess_io import text

    return tuple(s.strip() for s in text(values, "fn_in", "adk").split(",") if s.strip())


def _particle_options(values: dict[str, str]) -> object:
    from vitrify.jobs._preprocess_io import flag, number
    from vitrify.sim.particles import ParticleOptions

    return ParticleOptions(
        structures=_structures(values), n_particles=_integer(values, "nr_particles", 1000),
        box_px=_integer(values, "box_size", 64), pixel_size_angst=number(values, "angpix", 2.0),
        snr=number(values, "snr", 0.1), junk_fraction=number(values, "junk_fraction", 0.0),
        apply_ctf=flag(values, "do_ctf", True), add_noise=flag(values, "do_noise", True),
        seed=_integer(values, "random_seed", 0))


def _micrograph_options(values: dict[str, str]) -> object:
    from vitrify.jobs._preprocess_io import number, text
    from vitrify.sim.micrographs import MicrographOptions

    size = _integer(values, "size", 512)
    return MicrographOptions(
        structures=_structures(values), n_micrographs=_integer(values, "nr_micrographs", 2),
        size_px=(size, size), pixel_size_angst=number(values, "angpix", 1.5),
        particles_per_micrograph=_integer(values, "nr_particles", 30),
        n_frames=_integer(values, "nr_frames", 8), dose_per_frame=number(values, "dose_per_frame", 5.0),
        movie_format=text(values, "movie_format", "tiff"), seed=_integer(values, "random_seed", 0))


_FROM_JOB_STAR: dict[str, Callable[[dict[str, str]], object]] = {
    "particles": _particle_options, "micrographs": _micrograph_options, "movies": _micrograph_options,
}


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from job.star values: ``simulate`` (particles | micrographs | movies, default
    particles), ``fn_in`` (structures, comma-separated for several), ``angpix``,
    ``random_seed``, ``device``; for particles ``nr_particles``, ``box_size``, ``snr``,
    ``junk_fraction``, ``do_ctf``, ``do_noise``; for micrographs and movies ``nr_micrographs``,
    ``size``, ``nr_particles`` (per micrograph), ``nr_frames``, ``dose_per_frame``,
    ``movie_format``. A bad value is an :class:`InputError` naming its option."""
    from vitrify.jobs._preprocess_io import text

    kind = text(values, "simulate", "particles")
    if kind not in _FROM_JOB_STAR:
        raise InputError(f"unknown simulation kind {kind!r}", field="simulate", expected=" | ".join(KINDS))
    return Options(kind, _FROM_JOB_STAR[kind](values), text(values, "device", "auto"))

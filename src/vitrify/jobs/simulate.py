"""Job ``simulate``: ground-truth particle, micrograph or movie data sets.

Thin wrapper around :mod:`vitrify.sim`: ``Options`` names what to simulate and carries the
simulator's own options; :func:`run` resolves the device and writes into the job directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vitrify.jobs.options.simulate import KINDS, Options, job_star_from_options, options_from_job_star


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


__all__ = ["KINDS", "Options", "job_star_from_options", "options_from_job_star", "run"]

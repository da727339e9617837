"""Automatic 2D class selection (RELION ``relion.select.class2dauto``): score classes, keep the good.

``run(options, job_dir)`` reads the 2D job named by ``--opt`` (its model, data and class
averages) and the ranker weights, checks everything, scores every class with more than 10
particles (:mod:`vitrify.ranker`), selects by threshold and top-up rules, and only then writes
the outputs (:mod:`vitrify.jobs._class_ranker_output`). Any bad input is one
:class:`InputError` before the first output file.
"""

from __future__ import annotations

from pathlib import Path

from vitrify.jobs._class_ranker_output import write_outputs
from vitrify.jobs._preprocess_io import write_output_nodes
from vitrify.jobs.base import job_logger
from vitrify.jobs.options.class_ranker import DEFAULT_MIN_SCORE, Options, job_star_from_options, options_from_job_star


def run(options: Options, job_dir: str | Path) -> Path:
    """Rank the classes of ``options.input_optimiser`` into ``job_dir``; return particles.star."""
    from vitrify.core.device import resolve_device
    from vitrify.ranker.inputs import read_class2d_job
    from vitrify.ranker.network import load_model
    from vitrify.ranker.selection import score_job, select_classes

    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    log = job_logger(job_dir)
    job = read_class2d_job(options.input_optimiser)
    net, manifest = load_model(options.model or None)
    result = score_job(job, net, resolve_device(options.device))
    counts = job.model_classes["rlnClassDistribution"].to_numpy() * len(job.data.data)
    selected = select_classes(result.scores, counts, options.min_score, min_particles=options.min_particles,
                              min_classes=options.min_classes)
    nodes = write_outputs(job_dir, job, result, selected)
    write_output_nodes(job_dir, nodes)
    n_sel = int(job.data.data["rlnClassNumber"].astype(int).isin(set(job.class_numbers[selected])).sum())
    log.info("model %s (sha256 %s...): %d of %d classes ranked, %d selected with %d of %d particles",
             options.model or "shipped", str(manifest.get("sha256", ""))[:12], len(result.inputs.rows),
             len(result.scores), int(selected.sum()), n_sel, len(job.data.data))
    return job_dir / "particles.star"


__all__ = ["DEFAULT_MIN_SCORE", "Options", "job_star_from_options", "options_from_job_star", "run"]

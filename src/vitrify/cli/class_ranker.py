"""``vitrify class-ranker``: automatic 2D class selection; ``vitrify class-ranker train``: your own model.

``vitrify class-ranker --opt Class2D/job010/run_it025_optimiser.star --o Select/job011`` runs the
job (options: the fields of :class:`vitrify.jobs.options.class_ranker.Options`);
``vitrify class-ranker train --jobs jobs.txt --o model.pt`` trains weights from labelled jobs
(:mod:`vitrify.ranker.train`), which ``--model model.pt`` then uses.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import typer

from vitrify.cli._job_options import option_parameters
from vitrify.io.errors import InputError


def _rank(options: object, output_dir: Path) -> None:
    from vitrify.cli._record import run_command_job

    particles = run_command_job("class_ranker", options, output_dir)
    typer.echo(f"selected particles: {particles}")


def _train(jobs: Path = typer.Option(..., "--jobs", help="Job list: one '<optimiser.star> [<targets.star>]' "
                                                         "per line (targets: rlnClassNumber + rlnClassScore)."),
           output: Path = typer.Option(..., "--o", help="Weights to write (a .json manifest goes beside)."),
           epochs: int = typer.Option(25, "--epochs", help="Training epochs."),
           seed: int = typer.Option(12, "--seed", help="Random seed.")) -> None:
    """Train ranker weights on labelled 2D jobs."""
    from vitrify.ranker.network import save_model
    from vitrify.ranker.train import TrainSettings, load_training_set, read_job_list, train_model

    pairs = read_job_list(jobs)
    data = load_training_set(pairs)
    typer.echo(f"{len(data)} classes from {len(pairs)} jobs")
    net, history = train_model(data, settings=TrainSettings(epochs=epochs, seed=seed))
    save_model(net, output, {"jobs": len(pairs), "classes": len(data), "epochs": epochs, "seed": seed,
                             "train_loss": history[-1]["train_loss"] if history else None})
    typer.echo(f"wrote {output}")


def register(app: typer.Typer) -> None:
    """Add the ``class-ranker`` command (and its ``train`` subcommand) to ``app``."""
    from vitrify.jobs.fields import options_from_cli
    from vitrify.jobs.options.class_ranker import Options

    ranker = typer.Typer(invoke_without_command=True,
                         help="Score 2D classes 0..1 and select the good ones' particles (RELION's class ranker).")
    settings = option_parameters(Options)
    out = inspect.Parameter("output_dir", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],  # noqa: UP045
                            default=typer.Option(None, "--o", help="Output (job) directory; Select/jobNNN: a "
                                                                   "pipeline job. Required (not for `train`)."))
    ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)

    def callback(ctx: typer.Context, **given) -> None:
        if ctx.invoked_subcommand is not None:
            return
        output_dir = given.pop("output_dir")
        options = options_from_cli(Options, given)
        if output_dir is None:
            raise InputError("no output directory", field="--o", expected="--o Select/jobNNN")
        _rank(options, output_dir)

    params = [ctx_param, *settings[:1], out, *settings[1:]]
    callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in params}
    ranker.callback()(callback)
    ranker.command("train")(_train)
    app.add_typer(ranker, name="class-ranker")

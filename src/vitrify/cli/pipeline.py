"""``vitrify run-job`` (run or continue one job of the project) and ``vitrify pipeline`` (the graph).

Both run from the project directory (the one holding default_pipeline.star).
"""

from __future__ import annotations

from pathlib import Path

import typer

from vitrify.jobs.status import JobStatus


def _run_job_command(app: typer.Typer) -> None:
    @app.command("run-job")
    def run_job(
        job: Path = typer.Option(..., "--job", help="JobType/jobNNN/job.star of this project, or a "
                                                    "job.star template elsewhere (a new job is made)."),
        cont: bool = typer.Option(False, "--continue", help="Continue the job in its directory."),
    ) -> None:
        """Run one job here (exit code 0 succeeded, 1 failed, 2 aborted)."""
        from vitrify.jobs.status import EXIT_CODES
        from vitrify.pipeline.pipeliner import execute_job, job_name_of
        from vitrify.pipeline.project import Project

        from vitrify.io.errors import InputError

        project = Project.open(".")
        try:
            name = job_name_of(job, project.root)
        except InputError:
            name = ""
        known = name in project.pipeline().processes
        if _secondary_rank(project.root / name if known else None):
            from vitrify.pipeline.pipeliner import execute_rank

            raise typer.Exit(execute_rank(job, continue_=cont))
        if known:
            status = execute_job(job, continue_=cont)
        else:
            name = project.add_job_from_star(job)
            status = project.run_job(name, wait=True)
        typer.echo(f"{name}: {status}")
        raise typer.Exit(EXIT_CODES.get(status, 1))


def _secondary_rank(job_dir: Path | None) -> bool:
    """True in a rank other than 0 of a job that runs on torch.distributed ranks (torchrun's, or the
    copies a queue template's launcher started, which meet through ``job_dir``); a launcher's copy
    other than 0 of any other job exits here."""
    import os

    from vitrify.jobs.status import ABORT_NOW
    from vitrify.pipeline.pipeliner import runs_on_ranks, secondary_rank
    from vitrify.pipeline.ranks import launched_rank, meet_in_job_folder, torch_rank

    rank, world = torch_rank()
    if world > 1:
        return rank > 0
    launched = launched_rank()
    if launched is not None and job_dir is not None and runs_on_ranks(job_dir / "job.star"):
        os.environ.update(meet_in_job_folder(job_dir, launched, aborted=lambda: (job_dir / ABORT_NOW).exists()))
        return launched.rank > 0
    rank = secondary_rank()
    if rank:
        typer.echo(f"MPI rank {rank}: this job runs on rank 0 only; nothing to do here")
        raise typer.Exit(0)
    return False


#: status → rich style in the table
STATUS_STYLES: dict[JobStatus, str] = {JobStatus.SUCCEEDED: "green", JobStatus.FAILED: "red",
                                       JobStatus.ABORTED: "yellow", JobStatus.RUNNING: "cyan",
                                       JobStatus.SCHEDULED: "dim"}


def _tables(state) -> tuple:
    """A rich table of the processes and a tree of each job's input (←) and output (→) nodes."""
    from rich.markup import escape
    from rich.table import Table
    from rich.tree import Tree

    table = Table(title="default_pipeline.star")
    for column in ("job", "alias", "type", "status"):
        table.add_column(column)
    for proc in state.processes.values():
        style = STATUS_STYLES.get(proc.status, "")
        table.add_row(escape(proc.name), escape(proc.alias or ""), escape(proc.type_label),
                      f"[{style}]{proc.status}[/]" if style else escape(proc.status))
    tree = Tree("edges")
    branches = {name: tree.add(escape(name)) for name in state.processes}
    for node, target in state.input_edges:
        if target in branches:
            branches[target].add(escape(f"← {node} ({state.nodes.get(node, '?')})"))
    for source, node in state.output_edges:
        if source in branches:
            branches[source].add(escape(f"→ {node} ({state.nodes.get(node, '?')})"))
    return table, tree


def _pipeline_command(app: typer.Typer) -> None:
    @app.command("pipeline")
    def pipeline(
        png: Path = typer.Option(None, "--png", help="Also draw the graph into this file (.png/.svg/.pdf)."),
        project_dir: Path = typer.Option(Path("."), "--project", help="Project directory."),
        as_json: bool = typer.Option(False, "--json", help="Print the graph as JSON instead."),
    ) -> None:
        """Show the jobs of the project, their status and input/output edges."""
        from rich.console import Console

        from vitrify.pipeline.graph import draw_pipeline, graph_dict
        from vitrify.pipeline.project import Project

        from vitrify.io.errors import InputError

        if not (project_dir / "default_pipeline.star").is_file():
            raise InputError("no default_pipeline.star here", path=project_dir,
                             expected="a project directory (run from it or pass --project)")
        project = Project.open(project_dir)
        project.jobs()  # brings Running jobs up to date
        state = project.pipeline()
        if as_json:
            import json

            typer.echo(json.dumps(graph_dict(state), indent=1))
        else:
            console = Console()
            for part in _tables(state):
                console.print(part)
        if png is not None:
            typer.echo(f"wrote {draw_pipeline(state, png)}")


def register(app: typer.Typer) -> None:
    """Add ``run-job`` and ``pipeline`` to ``app``."""
    _run_job_command(app)
    _pipeline_command(app)

"""``vitrify class2d``: 2D classification with VDAM (default) or EM, RELION-4 outputs."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``class2d`` command to ``app``."""

    @app.command("class2d")
    def class2d(
        i: str = typer.Option("", "--i", help="Input particles.star."),
        o: Path = typer.Option(..., "--o", help="Output (job) directory; Class2D/jobNNN: a pipeline job."),
        k: int = typer.Option(50, "--K", help="Number of classes."),
        algorithm: str = typer.Option("vdam", "--algorithm", help="vdam | em."),
        iterations: int = typer.Option(-1, "--iter", help="Iterations (default 200 VDAM, 25 EM)."),
        diameter: float = typer.Option(0.0, "--particle-diameter", help="Mask diameter in Å."),
        psi_step: float = typer.Option(12.0, "--psi-step", help="In-plane angular step (deg)."),
        offset_range: float = typer.Option(5.0, "--offset-range", help="Offset search range (px)."),
        offset_step: float = typer.Option(2.0, "--offset-step", help="Offset search step (px)."),
        tau2_fudge: float = typer.Option(2.0, "--tau2-fudge", help="Regularisation parameter T."),
        oversampling: int = typer.Option(1, "--oversampling", help="1: coarse pass + fine pass (RELION); 0: one pass."),
        ctf: bool = typer.Option(True, "--ctf/--no-ctf", help="CTF correction."),
        first_peak: bool = typer.Option(False, "--ctf-intact-first-peak", help="Ignore CTFs until first peak."),
        inactivity: float = typer.Option(0.1, "--class-inactivity-threshold", help="VDAM class replacement."),
        replace_from: str = typer.Option("largest", "--replace-from",
                                         help="VDAM: class copied into an inactive one: largest | gradient (RELION)."),
        write_iter: int = typer.Option(10, "--grad-write-iter", help="VDAM: write every N iterations."),
        threads: int = typer.Option(0, "--threads", help="CPU threads (0: torch default)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        seed: int = typer.Option(1, "--seed", help="Random seed."),
        cont: str = typer.Option("", "--continue", help="Continue from a run_itNNN_optimiser.star."),
    ) -> None:
        """Classify particles into K 2D classes (writes run_itNNN_{classes.mrcs,model,data,optimiser}.star)."""
        from vitrify.cli._record import run_command_job
        from vitrify.jobs.class2d import Options

        options = Options(input_star=i, n_classes=k, particle_diameter_angst=diameter, algorithm=algorithm,
                          nr_iter=iterations, psi_step_deg=psi_step, offset_range_px=offset_range,
                          offset_step_px=offset_step, tau2_fudge=tau2_fudge, oversampling=oversampling, do_ctf=ctf,
                          ctf_intact_first_peak=first_peak, class_inactivity_threshold=inactivity,
                          replacement_source=replace_from,
                          grad_write_iter=write_iter, threads=threads, device=device, seed=seed,
                          continue_from=cont)
        data_star = run_command_job("class2d", options, o)
        typer.echo(f"classified particles: {data_star}")

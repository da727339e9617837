"""``vitrify demo``: simulate a small data set from a real structure and process it.

``--mode pipeline`` (the default; :mod:`vitrify.cli._demo_pipeline`): movies with EPU/SerialEM
metadata written into a session folder over time while ``vitrify auto`` watches it (MDCatch,
then the prep and proc schemes in rounds) → 2D classes, every step compared with the truth
(:mod:`vitrify.cli._demo_pipeline_report`).

``--mode particles`` (below), each step in a RELION-style job directory of ``--out``:

1. ``Simulate/job001``: particles from a real structure (CFTR or adenylate kinase) with
   CTF and noise, plus the ground truth;
2. ``Reconstruct/job002``: a 3D map from the particles at their *true* poses and its FSC
   against the truth map (``reconstruction.mrc``, ``fsc.star``): checks the whole chain
   of formats and conventions;
3. ``Class2D/job003``: 2D classification, when :mod:`vitrify.jobs.class2d` is available.

At the end it prints where the results are and what they mean (:mod:`vitrify.cli._demo_report`).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import typer
from rich.console import Console

_console = Console(stderr=True)


def _step(title: str) -> float:
    _console.print(f"[bold cyan]>>[/] {title}", soft_wrap=True)
    return time.perf_counter()


def _done(start: float, text: str) -> None:
    _console.print(f"   {text} [dim]({time.perf_counter() - start:.1f} s)[/]", soft_wrap=True)


def _simulate(out: Path, structure: str, n: int, box: int, pixel: float, snr: float, junk: float,
              seed: int, device: str):
    from vitrify.jobs.base import run_job
    from vitrify.jobs.simulate import Options, run
    from vitrify.sim.particles import ParticleOptions

    sim = ParticleOptions(structures=(structure,), n_particles=n, box_px=box, pixel_size_angst=pixel,
                          snr=snr, junk_fraction=junk, seed=seed)
    return run_job(run, Options("particles", sim, device), out / "Simulate" / "job001")


def _reconstruct_job(options: tuple[Path, float, str], job_dir: Path) -> dict:
    """Job body: reconstruct with true poses, write the map and its FSC vs the truth."""
    import pandas as pd
    import torch

    from vitrify.io.mrc import read_mrc, write_mrc
    from vitrify.io.star import write_star
    from vitrify.sim.reconstruct import fourier_shell_correlation, reconstruct_from_truth, \
        resolution_at

    from vitrify.core.device import resolve_device
    from vitrify.jobs.base import job_logger

    truth_star, snr, device = options
    rec = reconstruct_from_truth(truth_star, snr=snr, device=resolve_device(device))
    truth_map, _ = read_mrc(truth_star.parent / "truth_map.mrc")
    volume = rec.volume.cpu()
    write_mrc(job_dir / "reconstruction.mrc", volume.numpy(), rec.pixel_size_angst)
    fsc = fourier_shell_correlation(volume, torch.as_tensor(truth_map)).numpy()
    n = volume.shape[-1]
    shells = range(len(fsc))
    write_star(job_dir / "fsc.star", {"fsc": pd.DataFrame({
        "rlnSpectralIndex": list(shells),
        "rlnResolution": [s / (n * rec.pixel_size_angst) for s in shells],
        "rlnAngstromResolution": [n * rec.pixel_size_angst / s if s else 999.0 for s in shells],
        "rlnFourierShellCorrelation": fsc})})
    result = {"resolution_05": resolution_at(torch.as_tensor(fsc), n, rec.pixel_size_angst, 0.5),
              "resolution_0143": resolution_at(torch.as_tensor(fsc), n, rec.pixel_size_angst, 0.143),
              "n_particles": rec.n_particles}
    job_logger(job_dir).info("reconstructed %d particles at their true poses; FSC vs truth 0.5 at "
                             "%.2f A, 0.143 at %.2f A", rec.n_particles, result["resolution_05"],
                             result["resolution_0143"])
    return result


def _classify(particles_star: Path, job_dir: Path, n_classes: int, diameter_angst: float,
              iterations: int, device: str) -> Path:
    from vitrify.jobs import class2d
    from vitrify.jobs.base import run_job

    options = class2d.Options(input_star=str(particles_star), n_classes=n_classes,
                              particle_diameter_angst=diameter_angst, algorithm="em",
                              nr_iter=iterations, device=device)
    return run_job(class2d.run, options, job_dir)


def run_demo(out: Path, *, structure: str = "cftr", n: int = 1000, box: int = 64, pixel: float = 3.0,
             snr: float = 0.1, junk: float = 0.05, classes: int = 10, iterations: int = 10,
             seed: int = 1, device: str = "auto") -> dict:
    """Run the demo into ``out``; returns a summary dictionary."""
    from vitrify.jobs.base import run_job

    summary: dict = {}
    start = _step(f"simulating {n} particles of {structure} ({box} px, {pixel} Å/px, SNR {snr})")
    data = _simulate(out, structure, n, box, pixel, snr, junk, seed, device)
    summary["junk_images"] = int((data.truth["vtfJunkKind"] != "none").sum())
    _done(start, f"{data.particles_star} ({summary['junk_images']} of them junk)")
    start = _step("reconstructing a 3D map from the particles at their true poses")
    rec_dir = out / "Reconstruct" / "job002"
    summary.update(run_job(_reconstruct_job, (data.truth_star, snr, device), rec_dir))
    _done(start, f"{rec_dir / 'reconstruction.mrc'}: FSC vs truth 0.5 at "
                 f"{summary['resolution_05']:.1f} Å, 0.143 at {summary['resolution_0143']:.1f} Å")
    if importlib.util.find_spec("vitrify.jobs.class2d") is None:
        _console.print("   (2D classification not available in this version: skipped)")
        return summary
    diameter = min(2.2 * data.particle_radius_px, box - 2) * pixel
    start = _step(f"2D classification into {classes} classes ({iterations} EM iterations)")
    summary["class2d_data"] = _classify(data.particles_star, out / "Class2D" / "job003", classes,
                                        diameter, iterations, device)
    _done(start, f"{summary['class2d_data']}")
    from vitrify.cli._demo_report import class_table

    summary["class_table"] = class_table(Path(summary["class2d_data"]), data.truth_star)
    return summary


def _particles_mode(out: Path, options: dict) -> None:
    from vitrify.cli._demo_report import print_report

    options = {"pixel_size": 3.0, "iterations": 10, **{k: v for k, v in options.items() if v is not None}}
    summary = run_demo(out, structure=options["structure"], n=options["n"], box=options["box"],
                       pixel=options["pixel_size"], snr=options["snr"], classes=options["classes"],
                       iterations=options["iterations"], seed=options["seed"], device=options["device"])
    print_report(_console, out, summary, options["pixel_size"])


def _pipeline_mode(out: Path, options: dict) -> None:
    from vitrify.cli._demo_pipeline import PipelineDemo, run_pipeline_demo
    from vitrify.cli._demo_pipeline_report import print_pipeline_report
    from vitrify.cli._demo_steps import StepFailed

    names = {"structure": "structure", "movies": "movies", "size": "size_px", "pixel_size": "pixel_size_angst",
             "particles": "particles_per_movie", "frames": "frames", "classes": "classes",
             "iterations": "iterations", "max_ctf_resolution": "max_ctf_resolution_angst",
             "threads": "threads", "interval": "interval_s", "idle": "idle_min", "until": "until", "seed": "seed"}
    demo = PipelineDemo(**{field: options[key] for key, field in names.items() if options[key] is not None})
    try:
        summary = run_pipeline_demo(_console, out, demo, overwrite=options["overwrite"])
    except StepFailed as err:
        _console.print(f"[bold red]error:[/] {err}", soft_wrap=True, highlight=False, markup=False)
        raise typer.Exit(1) from None
    print_pipeline_report(_console, summary)
    if "class2d" not in summary:
        _console.print("[bold red]error:[/] the demo did not reach 2D classes (see above)")
        raise typer.Exit(1)


#: ``--mode`` → what runs.
_MODES = {"pipeline": _pipeline_mode, "particles": _particles_mode}


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command to ``app``."""

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo_project"), "--out", help="Output directory."),
        mode: str = typer.Option("pipeline", "--mode", help="pipeline: movies -> MDCatch -> Schemes -> "
                                 "2D classes | particles: simulated particles -> 3D map at true poses + 2D."),
        structure: str = typer.Option("cftr", "--structure", help="adk | cftr | a PDB/mmCIF file."),
        movies: int | None = typer.Option(None, "--movies", help="pipeline: number of movies (10)."),
        size: int | None = typer.Option(None, "--size", help="pipeline: movie width = height (px; 1024)."),
        particles: int | None = typer.Option(None, "--particles", help="pipeline: particles per movie (30)."),
        frames: int | None = typer.Option(None, "--frames", help="pipeline: frames per movie (8)."),
        max_ctf_resolution: float | None = typer.Option(
            None, "--max-ctf-resolution", help="pipeline: keep micrographs whose CTF fit reaches this (Å; 12)."),
        threads: int | None = typer.Option(None, "--threads", help="pipeline: threads of 2D classification (2)."),
        interval: float | None = typer.Option(None, "--interval", help="pipeline: seconds between movies (3)."),
        idle: float | None = typer.Option(None, "--idle", help="pipeline: vitrify auto --idle, minutes (0.5)."),
        until: str | None = typer.Option(None, "--until", help="pipeline: vitrify auto --until (default: the "
                                         "last stage vitrify has the jobs for)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="pipeline: replace an earlier demo in --out."),
        n: int = typer.Option(1000, "--n", help="particles: number of particles."),
        box: int = typer.Option(64, "--box", help="particles: box size (px)."),
        pixel_size: float | None = typer.Option(None, "--pixel-size",
                                                help="Pixel size (Å; pipeline 1.5, particles 3)."),
        snr: float = typer.Option(0.1, "--snr", help="particles: signal-to-noise ratio (see simulate)."),
        classes: int = typer.Option(10, "--classes", help="2D classes."),
        iterations: int | None = typer.Option(
            None, "--iter", help="2D iterations (pipeline: 40 VDAM; particles: 10 EM)."),
        seed: int = typer.Option(1, "--seed", help="Random seed."),
        device: str = typer.Option("auto", "--device", help="particles: auto | cpu | cuda."),
    ) -> None:
        """Simulate a session from a real structure and process it automatically (minutes on a CPU).

        Default (pipeline): movies written over time -> vitrify auto (mdcatch, prep, proc on the fly) -> 2D
        classes, vs the truth.
        """
        from vitrify.io.errors import InputError

        if mode not in _MODES:
            raise InputError(f"unknown mode {mode!r}", field="--mode", expected=" | ".join(_MODES))
        start = time.perf_counter()
        _MODES[mode](out, dict(locals()))
        _console.print(f"\n[bold green]demo finished[/] in {time.perf_counter() - start:.0f} s: {out}")

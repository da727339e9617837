"""``vitrify simulate particles|micrographs|movies``: ground-truth data sets.

Each command parses its options, builds the simulator's options dataclass and runs the
``simulate`` job (:mod:`vitrify.jobs.simulate`) in ``--out`` (run.log and exit markers included).
Heavy modules are imported inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path

import typer

_STRUCTURE_HELP = ("Atomic model: PDB/mmCIF file (.gz/.bz2 allowed) or a bundled example "
                   "(adk, cftr). Repeat for heterogeneity (one map per structure).")


def _run(kind: str, sim_options: object, out: Path, device: str) -> object:
    from vitrify.jobs.base import run_job
    from vitrify.jobs.simulate import Options, run

    return run_job(run, Options(kind, sim_options, device), out)


def _particles_command(sim: typer.Typer) -> None:
    @sim.command("particles")
    def particles(
        structure: list[str] = typer.Option(["adk"], "--structure", help=_STRUCTURE_HELP),
        n: int = typer.Option(1000, "--n", help="Number of images (particles + junk)."),
        box: int = typer.Option(64, "--box", help="Image size (px, even)."),
        pixel_size: float = typer.Option(2.0, "--pixel-size", help="Pixel size (Å)."),
        snr: float = typer.Option(0.1, "--snr", help="Signal variance / noise variance inside "
                                                     "the particle disc (CTF-modulated signal)."),
        junk: float = typer.Option(0.0, "--junk", help="Fraction of junk images "
                                                       "(noise, ice, carbon edges, aggregates)."),
        no_ctf: bool = typer.Option(False, "--no-ctf", help="Do not apply a CTF."),
        no_noise: bool = typer.Option(False, "--no-noise",
                                      help="No noise (images stay in map units, not normalised)."),
        noise: str = typer.Option("white", "--noise", help="Noise spectrum: white | coloured."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        symmetry: str = typer.Option("C1", "--symmetry",
                                     help="Build a Cn/Dn/T/O/I assembly from the first chain."),
        voltage: float = typer.Option(300.0, "--voltage", help="Voltage (kV)."),
        cs: float = typer.Option(2.7, "--cs", help="Spherical aberration (mm)."),
        amplitude_contrast: float = typer.Option(0.1, "--amplitude-contrast", help="Q0."),
        defocus_min: float = typer.Option(8000.0, "--defocus-min", help="Smallest defocus (Å)."),
        defocus_max: float = typer.Option(25000.0, "--defocus-max", help="Largest defocus (Å)."),
        max_shift: float = typer.Option(3.0, "--max-shift", help="Largest origin offset (px)."),
        per_micrograph: int = typer.Option(50, "--particles-per-micrograph",
                                           help="Images per micrograph (defocus group)."),
        bfactor: float = typer.Option(0.0, "--bfactor", help="Extra map B-factor (Å²)."),
        float16: bool = typer.Option(False, "--float16", help="Write the stack as MRC mode 12."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
        out: Path = typer.Option(..., "--out", help="Output directory."),
    ) -> None:
        """Simulate particle images with ground truth: particles.star/.mrcs, truth.star, truth_map.mrc."""
        from vitrify.sim.particles import ParticleOptions

        options = ParticleOptions(
            structures=tuple(structure), n_particles=n, box_px=box, pixel_size_angst=pixel_size,
            snr=snr, junk_fraction=junk, apply_ctf=not no_ctf, add_noise=not no_noise,
            noise_colour=noise, seed=seed, voltage_kv=voltage, cs_mm=cs,
            amplitude_contrast=amplitude_contrast, defocus_min_angst=defocus_min,
            defocus_max_angst=defocus_max, max_shift_px=max_shift,
            particles_per_micrograph=per_micrograph, bfactor_angst2=bfactor, symmetry=symmetry,
            float16=float16)
        result = _run("particles", options, out, device)
        typer.echo(f"wrote {n} images to {result.particles_star} (truth: {result.truth_star})")


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command group to ``app``."""
    sim = typer.Typer(help="Simulate cryo-EM data with ground truth (particles, micrographs, movies).",
                      no_args_is_help=True)
    _particles_command(sim)
    app.add_typer(sim, name="simulate")

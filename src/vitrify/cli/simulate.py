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


def _micrograph_options(**values) -> object:
    from vitrify.sim.micrographs import MicrographOptions

    size = values.pop("size")
    return MicrographOptions(size_px=(size, size), **values)


def _micrographs_commands(sim: typer.Typer) -> None:
    def command(kind: str, doc: str):
        @sim.command(kind, help=doc)
        def simulate(
            structure: list[str] = typer.Option(["adk"], "--structure", help=_STRUCTURE_HELP),
            n: int = typer.Option(2, "--n", help=f"Number of {kind}."),
            size: int = typer.Option(512, "--size", help="Width = height (px); 4096 for a K3-like frame."),
            pixel_size: float = typer.Option(1.5, "--pixel-size", help="Pixel size (Å)."),
            particles: int = typer.Option(30, "--particles", help="Particles per micrograph (at most)."),
            min_distance: float = typer.Option(0.0, "--min-distance",
                                               help="Minimum distance between centres (Å; "
                                                    "default one particle diameter; less crowds "
                                                    "them, neighbours touching or overlapping)."),
            frames: int = typer.Option(8, "--frames", help="Frames per movie."),
            dose_per_frame: float = typer.Option(5.0, "--dose-per-frame", help="e/Å² per frame."),
            drift: float = typer.Option(6.0, "--drift", help="Global drift path length (px)."),
            local_drift: float = typer.Option(0.5, "--local-drift", help="Local drift amplitude (px)."),
            ice_thickness: float = typer.Option(40.0, "--ice-thickness", help="Mean ice thickness (nm)."),
            ice_gradient: float = typer.Option(20.0, "--ice-gradient", help="Ice thickness change "
                                                                             "across the image (nm)."),
            carbon: float = typer.Option(0.5, "--carbon", help="Fraction of images with a carbon edge."),
            gain_sigma: float = typer.Option(0.05, "--gain-sigma", help="Pixel sensitivity spread."),
            movie_format: str = typer.Option("tiff", "--format", help="Movies: tiff | mrc."),
            defocus_min: float = typer.Option(8000.0, "--defocus-min", help="Smallest defocus (Å)."),
            defocus_max: float = typer.Option(25000.0, "--defocus-max", help="Largest defocus (Å)."),
            voltage: float = typer.Option(300.0, "--voltage", help="Voltage (kV)."),
            cs: float = typer.Option(2.7, "--cs", help="Spherical aberration (mm)."),
            seed: int = typer.Option(0, "--seed", help="Random seed."),
            device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
            out: Path = typer.Option(..., "--out", help="Output directory."),
        ) -> None:
            options = _micrograph_options(
                structures=tuple(structure), n_micrographs=n, size=size, pixel_size_angst=pixel_size,
                particles_per_micrograph=particles, min_distance_angst=min_distance, n_frames=frames,
                dose_per_frame=dose_per_frame, drift_total_px=drift, local_drift_px=local_drift,
                ice_thickness_nm=ice_thickness, ice_gradient_nm=ice_gradient, carbon_fraction=carbon,
                gain_sigma=gain_sigma, movie_format=movie_format, defocus_min_angst=defocus_min,
                defocus_max_angst=defocus_max, voltage_kv=voltage, cs_mm=cs, seed=seed)
            result = _run(kind, options, out, device)
            typer.echo(f"wrote {len(result.files)} {kind} and {result.star} (truth: {result.truth_star})")

    command("micrographs", "Simulate motion-corrected micrographs with particles at known "
                           "coordinates (micrographs.star, truth.star, coordinates/, EPU/mdoc metadata).")
    command("movies", "Simulate movies (drift, dose, Poisson counts, gain) with movies.star, "
                      "gain.mrc, EPU/mdoc metadata and the truth (coordinates, defocus, drift).")


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command group to ``app``."""
    sim = typer.Typer(help="Simulate cryo-EM data with ground truth (particles, micrographs, movies).",
                      no_args_is_help=True)
    _particles_command(sim)
    _micrographs_commands(sim)
    app.add_typer(sim, name="simulate")

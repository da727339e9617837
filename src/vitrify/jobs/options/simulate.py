"""Options of the ``simulate`` job (:mod:`vitrify.jobs.simulate`); job type ``vitrify.simulate``.

``kind`` (job.star ``simulate``; on the command line, the subcommand) chooses the simulator
and so the settings class held in ``sim``: :class:`vitrify.sim.particles.ParticleOptions` or
:class:`vitrify.sim.micrographs.MicrographOptions` (micrographs and movies).
"""

from __future__ import annotations

from dataclasses import dataclass

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import NEGATED, Convert, Group, Setting, Variants, setting, variants
from vitrify.jobs.jobstar_values import number_text, text, whole_number

KINDS = ("particles", "micrographs", "movies")
STRUCTURE_HELP = ("Atomic model: PDB/mmCIF file (.gz/.bz2 allowed) or a bundled example "
                  "(adk, cftr, adk_closed, 1a28). Repeat for heterogeneity (one map per structure).")


def _read_structures(values) -> tuple[str, ...]:
    return tuple(s.strip() for s in text(values, "fn_in", "adk").split(",") if s.strip())


def _write_structures(structures: tuple[str, ...], _owner) -> dict[str, str]:
    return {"fn_in": ",".join(structures)}


def _read_size(values) -> tuple[int, int]:
    size = whole_number(values, "size", 512)
    return size, size


def _write_size(size_px: tuple[int, int], _owner) -> dict[str, str]:
    return {"size": number_text(size_px[0])}


def _structures() -> Setting:
    return Setting(STRUCTURE_HELP, flag="--structure", default=("adk",), cli=Convert(tuple, list), cli_type=list[str],
                   read=_read_structures, write=_write_structures)


def _shared() -> dict[str, Setting]:
    """Microscope and defocus settings both simulators take."""
    return {
        "voltage_kv": Setting("Voltage.", unit="kV", flag="--voltage", default=300.0),
        "cs_mm": Setting("Spherical aberration.", unit="mm", flag="--cs", default=2.7),
        "defocus_min_angst": Setting("Smallest defocus.", unit="Å", flag="--defocus-min", default=8000.0),
        "defocus_max_angst": Setting("Largest defocus.", unit="Å", flag="--defocus-max", default=25000.0),
        "seed": Setting("Random seed.", flag="--seed", star="random_seed", default=0),
    }


PARTICLES = Group(
    help="Particle simulator settings (vitrify.sim.particles.ParticleOptions).",
    cls="vitrify.sim.particles:ParticleOptions",
    members={
        "structures": _structures(),
        "n_particles": Setting("Number of images (particles + junk).", flag="--n", star="nr_particles", default=1000),
        "box_px": Setting("Image size (px, even).", flag="--box", star="box_size", default=64),
        "pixel_size_angst": Setting("Pixel size.", unit="Å", flag="--pixel-size", star="angpix", default=2.0),
        "snr": Setting("Signal variance / noise variance inside the particle disc (CTF-modulated signal).",
                       flag="--snr", star="snr", default=0.1),
        "junk_fraction": Setting("Fraction of junk images (noise, ice, carbon edges, aggregates).", flag="--junk",
                                 star="junk_fraction", default=0.0),
        "apply_ctf": Setting("Do not apply a CTF.", flag="--no-ctf", cli=NEGATED, star="do_ctf", default=True),
        "add_noise": Setting("No noise (images stay in map units, not normalised).", flag="--no-noise", cli=NEGATED,
                             star="do_noise", default=True),
        "noise_colour": Setting("Noise spectrum: white | coloured.", flag="--noise", default="white"),
        "symmetry": Setting("Build a Cn/Dn/T/O/I assembly from the first chain.", flag="--symmetry", default="C1"),
        "amplitude_contrast": Setting("Q0.", flag="--amplitude-contrast", default=0.1),
        "max_shift_px": Setting("Largest origin offset.", unit="px", flag="--max-shift", default=3.0),
        "particles_per_micrograph": Setting("Images per micrograph (defocus group).",
                                            flag="--particles-per-micrograph", default=50),
        "bfactor_angst2": Setting("Extra map B-factor.", unit="Å²", flag="--bfactor", default=0.0),
        "float16": Setting("Write the stack as MRC mode 12.", flag="--float16", default=False),
        **_shared(),
    })


def _micrographs(kind: str) -> Group:
    return Group(
        help=f"{kind.capitalize()} simulator settings (vitrify.sim.micrographs.MicrographOptions).",
        cls="vitrify.sim.micrographs:MicrographOptions",
        members={
            "structures": _structures(),
            "n_micrographs": Setting(f"Number of {kind}.", flag="--n", star="nr_micrographs", default=2),
            "size_px": Setting("Width = height (px); 4096 for a K3-like frame.", flag="--size", default=(512, 512),
                               cli=Convert(lambda s: (s, s), lambda size: size[0]), read=_read_size,
                               write=_write_size),
            "pixel_size_angst": Setting("Pixel size.", unit="Å", flag="--pixel-size", star="angpix", default=1.5),
            "particles_per_micrograph": Setting("Particles per micrograph (at most).", flag="--particles",
                                                star="nr_particles", default=30),
            "min_distance_angst": Setting("Minimum distance between centres (Å; default one particle diameter; "
                                          "less crowds them, neighbours touching or overlapping).",
                                          flag="--min-distance", default=0.0),
            "n_frames": Setting("Frames per movie.", flag="--frames", star="nr_frames", default=8),
            "dose_per_frame": Setting("e/Å² per frame.", flag="--dose-per-frame", star="dose_per_frame", default=5.0),
            "drift_total_px": Setting("Global drift path length.", unit="px", flag="--drift", default=6.0),
            "local_drift_px": Setting("Local drift amplitude.", unit="px", flag="--local-drift", default=0.5),
            "ice_thickness_nm": Setting("Mean ice thickness.", unit="nm", flag="--ice-thickness", default=40.0),
            "ice_gradient_nm": Setting("Ice thickness change across the image.", unit="nm", flag="--ice-gradient",
                                       default=20.0),
            "carbon_fraction": Setting("Fraction of images with a carbon edge.", flag="--carbon", default=0.5),
            "gain_sigma": Setting("Pixel sensitivity spread.", flag="--gain-sigma", default=0.05),
            "movie_format": Setting("Movies: tiff | mrc.", flag="--format", star="movie_format", default="tiff"),
            **_shared(),
        })


SIM = Variants(help="The simulator's settings, by kind.", key="kind", what="simulation kind",
               groups={"particles": PARTICLES, "micrographs": _micrographs("micrographs"),
                       "movies": _micrographs("movies")})


@dataclass(frozen=True)
class Options:
    """What to simulate: ``kind``, the simulator's settings ``sim`` and the device."""

    kind: str = setting(help="particles | micrographs | movies (on the command line: the subcommand).",
                        star="simulate", star_default="particles")
    sim: object = variants(SIM)
    device: str = setting("auto", help="auto | cpu | cuda.", flag="--device", star="device")

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown simulation kind {self.kind!r}", field="kind",
                             expected=" | ".join(KINDS))


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from job.star values: ``simulate`` (particles | micrographs | movies, default
    particles), ``fn_in`` (structures, comma-separated for several), ``angpix``,
    ``random_seed``, ``device``; for particles ``nr_particles``, ``box_size``, ``snr``,
    ``junk_fraction``, ``do_ctf``, ``do_noise``; for micrographs and movies ``nr_micrographs``,
    ``size``, ``nr_particles`` (per micrograph), ``nr_frames``, ``dose_per_frame``,
    ``movie_format``. A bad value is an :class:`InputError` naming its option."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """job.star values for ``options`` (inverse of :func:`options_from_job_star`; the simulator's
    other settings as ``vitrify_sim.*`` rows)."""
    return fields.job_star_from_options(options)

"""``vitrify demo`` (pipeline mode): microscope movies to 2D classes with nobody in the loop.

Into ``--out`` it runs, as a user would type them (each a subprocess, output in ``logs/``):

1. ``vitrify simulate movies ... --out session``: an EPU/SerialEM-style session (movies, one
   XML + mdoc per movie, gain) of a real structure, with the truth (``session/truth.star``);
2. ``vitrify mdcatch session --project project --particle-diameter D --set ...``: the
   acquisition parameters from the metadata, the processing parameters derived from them and
   written into ``project/Schemes/prep`` and ``project/Schemes/proc``. The ``--set`` keys make
   this a one-pass demo: ``maxtime_hr 0`` and ``wait_sec 0`` end each scheme at its first
   time check after a pass over the movies there (at a microscope they keep watching for new
   movies for 48 h), plus a small 2D classification (classes, VDAM iterations);
3. three ``vitrify schemer --scheme proc --add ...`` calls (relion_schemer's own way to edit a
   scheme): a bool variable ``stop_after_2d`` (True), an ``exit`` operator ``EXIT_after_2d``
   and a fork after ``class2d`` to it, so proc stops after 2D instead of going on to class
   ranking, initial model and refinement, which vitrify does not have yet;
4. ``vitrify schemer --scheme prep --run`` (import, motion correction, CTF) and then
   ``vitrify schemer --scheme proc --run`` (select, LoG picking, extraction, 2D classification)
   from the project directory, through the pipeliner.

The results are compared with the truth by :mod:`vitrify.cli._demo_results`.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from vitrify.cli._demo_steps import Step, counting_orphans, cpu_seconds, run_step
from vitrify.io.atomic import atomic_write
from vitrify.io.errors import InputError

#: Marks a directory made by ``vitrify demo``: only such a directory is replaced by --overwrite.
MARKER = ".vitrify_demo"
_PARTS = ("session", "project", "logs", "demo_report.json", MARKER)


@dataclass(frozen=True)
class PipelineDemo:
    """What to simulate and how to process it (defaults: 5–9 CPU-minutes in all)."""

    structure: str = "cftr"
    movies: int = 10
    size_px: int = 1024
    pixel_size_angst: float = 1.5
    particles_per_movie: int = 30
    frames: int = 8
    classes: int = 10
    iterations: int = 40
    max_ctf_resolution_angst: float = 12.0
    threads: int = 2
    seed: int = 1

    def __post_init__(self) -> None:
        limits = {"movies": (1, 500), "size_px": (256, 8192), "particles_per_movie": (1, 1000),
                  "frames": (2, 200), "classes": (1, 200), "iterations": (1, 1000), "threads": (1, 256)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise InputError(f"{value} out of range", field=f"--{name.replace('_px', '')}",
                                 expected=f"{low}..{high}")
        if not 0.3 <= self.pixel_size_angst <= 10:
            raise InputError(f"{self.pixel_size_angst} out of range", field="--pixel-size", expected="0.3..10 Å")
        if self.max_ctf_resolution_angst <= 2 * self.pixel_size_angst:
            raise InputError(f"{self.max_ctf_resolution_angst} Å is finer than Nyquist",
                             field="--max-ctf-resolution", expected=f"> {2 * self.pixel_size_angst:g} Å")


def particle_diameter_angst(structure: str) -> float:
    """The structure's largest extent, rounded up to 10 Å: what a user tells MDCatch."""
    from vitrify.sim.structures import load_structure

    return float(10 * math.ceil(2 * load_structure(structure).max_radius_angst() / 10))


def _mdcatch_sets(demo: PipelineDemo) -> list[str]:
    keys = {"prep__maxtime_hr": 0, "prep__wait_sec": 0, "proc__maxtime_hr": 0, "proc__wait_sec": 0,
            "proc__select_mics__select_maxval": f"{demo.max_ctf_resolution_angst:g}",
            "proc__class2d__nr_classes": demo.classes, "proc__class2d__nr_iter_grad": demo.iterations,
            "proc__class2d__nr_threads": demo.threads}
    return [arg for key, value in keys.items() for arg in ("--set", f"{key}={value}")]


def demo_steps(demo: PipelineDemo, out: Path, diameter_angst: float) -> list[Step]:
    """The commands of the demo, in order (run in ``out`` and ``out/project``)."""
    project = out / "project"
    scheme = ("schemer", "--scheme")
    structure = str(Path(demo.structure).resolve()) if Path(demo.structure).is_file() else demo.structure
    simulate = ("simulate", "movies", "--structure", structure, "--n", str(demo.movies),
                "--size", str(demo.size_px), "--pixel-size", f"{demo.pixel_size_angst:g}",
                "--particles", str(demo.particles_per_movie), "--frames", str(demo.frames),
                "--seed", str(demo.seed), "--out", "session")
    stop = [(*scheme, "proc", "--add", "variable", "--name", "stop_after_2d", "--value", "True"),
            (*scheme, "proc", "--add", "operator", "--name", "EXIT_after_2d", "--type", "exit"),
            (*scheme, "proc", "--add", "fork", "--i", "class2d", "--bool", "stop_after_2d",
             "--o", "EXIT_after_2d", "--o2", "select_parts")]
    return [
        Step(f"the microscope: {demo.movies} movies of {demo.structure} ({demo.size_px}² px, "
             f"{demo.frames} frames, {demo.pixel_size_angst:g} Å/px) with EPU XML + SerialEM mdoc and gain",
             (simulate,), out, count=("session/Movies/mov_*.tiff", demo.movies, "movies")),
        Step(f"MDCatch: read the session's metadata, derive the parameters, set up the project "
             f"(particle diameter {diameter_angst:g} Å)",
             (("mdcatch", "session", "--project", "project", "--particle-diameter", f"{diameter_angst:g}",
               *_mdcatch_sets(demo)),), out),
        Step("proc scheme: stop after 2D classification (no class ranker / 3D jobs in vitrify yet)",
             tuple(stop), project),
        Step("prep scheme: import → motion correction → CTF estimation", ((*scheme, "prep", "--run"),),
             project, watch=project / "Schemes" / "prep" / "schemer.log"),
        Step("proc scheme: select micrographs → LoG picking → extraction → 2D classification",
             ((*scheme, "proc", "--run"),), project, watch=project / "Schemes" / "proc" / "schemer.log"),
    ]


def prepare_out(out: Path, overwrite: bool) -> None:
    """Create ``out``; an existing non-empty one must be an earlier demo and ``overwrite`` set."""
    if out.exists() and not out.is_dir():
        raise InputError("is a file", path=out, expected="a directory for the demo")
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise InputError("exists and is not an earlier vitrify demo", path=out,
                             expected="a new or empty directory")
        if not overwrite:
            raise InputError("holds an earlier demo", path=out, expected="--overwrite to replace it, or another --out")
        for name in _PARTS:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    atomic_write(out / MARKER, "made by vitrify demo\n")


def run_pipeline_demo(console: Console, out: Path, demo: PipelineDemo, *, overwrite: bool = False) -> dict:
    """Run the whole demo into ``out``; returns the summary (also written to ``out/demo_report.json``)."""
    import json

    from vitrify.cli._demo_results import collect_results

    prepare_out(out, overwrite)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    diameter = particle_diameter_angst(demo.structure)
    steps = demo_steps(demo, out, diameter)
    timings = []
    with counting_orphans():
        for number, step in enumerate(steps, 1):
            cpu = cpu_seconds()
            wall = run_step(console, step, out / "logs" / f"{number:02d}_{step.argvs[0][0]}.log")
            timings.append({"step": step.argvs[0][0] + (f" {step.argvs[0][2]}" if step.watch else ""),
                            "wall_s": wall, "cpu_s": cpu_seconds() - cpu})
    summary = collect_results(out / "project", out / "session" / "truth.star", diameter)
    summary.update(settings=asdict(demo), particle_diameter_angst=diameter, out=str(out),
                   commands=[{"cwd": str(s.cwd), "command": c} for s in steps for c in s.commands],
                   steps=timings, wall_s=time.perf_counter() - start, cpu_s=cpu_seconds() - cpu_start)
    atomic_write(out / "demo_report.json", json.dumps(summary, indent=1) + "\n")
    return summary

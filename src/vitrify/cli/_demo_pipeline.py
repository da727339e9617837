"""``vitrify demo`` (pipeline mode): microscope movies to 2D classes on the fly, with nobody in the loop.

Into ``--out`` it runs, as a user would type them (each a subprocess, output in ``logs/``):

1. ``vitrify simulate movies ... --out microscope``: an EPU/SerialEM-style session (movies, one
   XML + mdoc per movie, gain) of a real structure, with the truth (``microscope/truth.star``);
2. the microscope at work: a thread of this process copies those movies into ``session/`` one
   every ``interval_s`` seconds, each written in pieces (:func:`vitrify.sim.replay.replay_session`),
   while
3. ``vitrify auto session --project project --particle-diameter D --set ...`` watches the
   session: MDCatch reads the first movie's metadata and sets up the project and the prep and
   proc schemes, and the schemes run in rounds as movies become ready (import, motion correction,
   CTF; selection, LoG picking, extraction, 2D classification), up to the last stage vitrify has
   the jobs for, until no movie has come for ``--idle`` minutes. The ``--set`` keys give a
   small 2D classification (classes, VDAM iterations), the CTF cut for these small micrographs, and
   the 3D thresholds (particles before the initial model, its iterations); ``--batch`` runs proc
   again every ``batch`` micrographs (and once more when the session has gone quiet).

The results are compared with the truth by :mod:`vitrify.cli._demo_results`; how the rounds
kept up with the microscope comes from ``project/Auto/auto.log``.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from vitrify.cli._demo_steps import Step, counting_orphans, cpu_seconds, run_step
from vitrify.io.atomic import atomic_write
from vitrify.io.errors import InputError

#: Marks a directory made by ``vitrify demo``: only such a directory is replaced by --overwrite.
MARKER = ".vitrify_demo"
_PARTS = ("microscope", "session", "project", "logs", "demo_report.json", MARKER)


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
    interval_s: float = 3.0
    idle_min: float = 0.5
    batch: int = 5
    until: str | None = None
    min_particles_3d: int = 150
    iterations_3d: int = 15
    ini_subset_3d: int = 100
    refine_local_sampling: str = "3.7 degrees"
    refine_iterations: int = 10
    small_box_px: int = 0
    inimodel_order: str = "auto"
    seed: int = 1

    def __post_init__(self) -> None:
        limits = {"movies": (1, 500), "size_px": (256, 8192), "particles_per_movie": (1, 1000),
                  "frames": (2, 200), "classes": (1, 200), "iterations": (1, 1000), "threads": (1, 256),
                  "batch": (1, 500), "min_particles_3d": (1, 10**7), "iterations_3d": (1, 1000),
                  "ini_subset_3d": (1, 10**6), "refine_iterations": (1, 1000)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise InputError(f"{value} out of range", field=f"--{name.replace('_px', '')}",
                                 expected=f"{low}..{high}")
        if not 0.3 <= self.pixel_size_angst <= 10:
            raise InputError(f"{self.pixel_size_angst} out of range", field="--pixel-size", expected="0.3..10 Å")
        if not 0 <= self.interval_s <= 3600 or not 0 < self.idle_min <= 600:
            raise InputError(f"interval {self.interval_s:g} s, idle {self.idle_min:g} min", field="--interval",
                             expected="0..3600 s between movies, idle 0..600 min")
        if self.small_box_px and not (self.small_box_px % 2 == 0 and 24 <= self.small_box_px <= 512):
            raise InputError(f"{self.small_box_px} px", field="--small-box", expected="0 (MDCatch's choice) or an even "
                             "box of 24..512 px")
        if self.inimodel_order not in ("auto", "0", "1", "2", "3", "4"):
            raise InputError(f"{self.inimodel_order!r}", field="--inimodel-order", expected="auto or 0..4")
        if self.max_ctf_resolution_angst <= 2 * self.pixel_size_angst:
            raise InputError(f"{self.max_ctf_resolution_angst} Å is finer than Nyquist",
                             field="--max-ctf-resolution", expected=f"> {2 * self.pixel_size_angst:g} Å")


def particle_diameter_angst(structure: str) -> float:
    """The structure's largest extent, rounded up to 10 Å: what a user tells MDCatch."""
    from vitrify.sim.structures import load_structure

    return float(10 * math.ceil(2 * load_structure(structure).max_radius_angst() / 10))


def _auto_sets(demo: PipelineDemo) -> list[str]:
    keys = {"proc__select_mics__select_maxval": f"{demo.max_ctf_resolution_angst:g}",
            "proc__class2d__nr_classes": demo.classes, "proc__class2d__nr_iter_grad": demo.iterations,
            "proc__class2d__nr_threads": demo.threads, "proc__min_nr_parts_3d": demo.min_particles_3d,
            "proc__inimodel3d__nr_iter": demo.iterations_3d,
            "proc__inimodel3d__vitrify_ini_subset": demo.ini_subset_3d,
            "proc__refine3d__auto_local_sampling": demo.refine_local_sampling,
            "proc__refine3d__vitrify_max_iter": demo.refine_iterations}
    if demo.inimodel_order != "auto":
        keys["proc__inimodel3d__vitrify_healpix_order"] = demo.inimodel_order
    if demo.small_box_px:
        keys["proc__extract__rescale"] = demo.small_box_px
    return [arg for key, value in keys.items() for arg in ("--set", f"{key}={value}")]


def demo_steps(demo: PipelineDemo, out: Path, diameter_angst: float,
               microscope: Callable[[], object] | None = None) -> list[Step]:
    """The commands of the demo, in order (run in ``out``); ``microscope`` starts writing the session."""
    project = out / "project"
    structure = str(Path(demo.structure).resolve()) if Path(demo.structure).is_file() else demo.structure
    simulate = ("simulate", "movies", "--structure", structure, "--n", str(demo.movies),
                "--size", str(demo.size_px), "--pixel-size", f"{demo.pixel_size_angst:g}",
                "--particles", str(demo.particles_per_movie), "--frames", str(demo.frames),
                "--seed", str(demo.seed), "--out", "microscope")
    auto = ("auto", "session", "--project", "project", "--particle-diameter", f"{diameter_angst:g}",
            "--idle", f"{demo.idle_min:g}", "--batch", str(demo.batch), "--stable", "1", "--poll", "0.5",
            *(("--until", demo.until) if demo.until else ()), *_auto_sets(demo))
    return [
        Step(f"the microscope's data: {demo.movies} movies of {demo.structure} ({demo.size_px}² px, "
             f"{demo.frames} frames, {demo.pixel_size_angst:g} Å/px) with EPU XML + SerialEM mdoc and gain",
             (simulate,), out, count=("microscope/Movies/mov_*.tiff", demo.movies, "movies")),
        Step(f"vitrify auto on the fly: a movie into session/ every {demo.interval_s:g} s; MDCatch "
             f"(particle diameter {diameter_angst:g} Å), then the prep and proc schemes in rounds",
             (auto,), out, watch=(project / "Schemes" / "prep" / "schemer.log",
                                  project / "Schemes" / "proc" / "schemer.log"),
             count=("project/Auto/Ready/Movies/mov_*.tiff", demo.movies, "movies ready"), before=microscope),
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


class _Microscope:
    """Writes the simulated movies into ``out/session`` over time (a thread; see the module docstring)."""

    def __init__(self, out: Path, demo: PipelineDemo) -> None:
        self.out, self.demo, self.written, self.thread = out, demo, [], None

    def start(self) -> None:
        from vitrify.sim.replay import replay_in_background

        (self.out / "session" / "Movies").mkdir(parents=True, exist_ok=True)
        self.thread = replay_in_background(self.out / "microscope", self.out / "session",
                                           interval_s=self.demo.interval_s, chunks=4, chunk_s=0.25,
                                           wrote=lambda path, when: self.written.append(when))

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


def on_the_fly(project: Path, written: list[float]) -> dict:
    """Rounds of the schemes and how far behind the microscope they ended (from ``Auto/auto.log``)."""
    from vitrify.pipeline.auto import read_log, rounds_from_log

    lines = read_log(project)
    if not lines:
        return {}
    start = lines[0][0]
    rounds = [{**r, "start_s": r["start"] - start, "end_s": r.get("end", r["start"]) - start}
              for r in rounds_from_log(lines)]
    last_result = max((r["end_s"] for r in rounds if r.get("status") == "succeeded"), default=None)
    last_movie = max(written) - start if written else None
    stage = next((m.rsplit("until stage ", 1)[1].split(",")[0] for _, m in lines if "until stage " in m), "?")
    return {"stage": stage, "movies_written": len(written), "last_movie_s": last_movie, "last_result_s": last_result,
            "behind_s": None if last_movie is None or last_result is None else last_result - last_movie,
            "rounds": [{k: r[k] for k in ("scheme", "round", "n_in", "start_s", "end_s")}
                       | {"status": r.get("status", "unfinished")} for r in rounds]}


def maps_against_truth(out: Path, jobs: dict[str, str], structure: str,
                       truth: tuple[Path, float, float] | None = None) -> dict:
    """``{"refined_map": ..., "initial_model": ...}`` for the 3D jobs that ran. The refined map is aligned
    onto the truth first (all rotations, both hands); the initial model it started from shares its frame,
    so its alignment only refines the refined map's."""
    from vitrify.cli._demo_map import map_against_truth
    from vitrify.cli._demo_refine import refined_summary

    found: dict = {}
    start = None
    if "refine3d" in jobs:
        found["refined_map"] = refined_summary(out, out / "project", jobs, structure, truth=truth)
        start = found["refined_map"].pop("alignment")
    if "inimodel3d" in jobs:
        found["initial_model"] = map_against_truth(out, out / "project" / jobs["inimodel3d"], structure, start)
        found["initial_model"].pop("alignment")
    return found


def run_pipeline_demo(console: Console, out: Path, demo: PipelineDemo, *, overwrite: bool = False) -> dict:
    """Run the whole demo into ``out``; returns the summary (also written to ``out/demo_report.json``)."""
    import json

    from vitrify.cli._demo_results import collect_results

    prepare_out(out, overwrite)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    diameter = particle_diameter_angst(demo.structure)
    microscope = _Microscope(out, demo)
    steps = demo_steps(demo, out, diameter, microscope.start)
    timings = []
    with counting_orphans():
        for number, step in enumerate(steps, 1):
            cpu = cpu_seconds()
            try:
                wall = run_step(console, step, out / "logs" / f"{number:02d}_{step.argvs[0][0]}.log")
            finally:
                microscope.join()
            timings.append({"step": step.argvs[0][0], "wall_s": wall, "cpu_s": cpu_seconds() - cpu})
    summary = collect_results(out / "project", out / "microscope" / "truth.star", diameter)
    truth = (out / "microscope" / "truth.star", summary.get("match_tolerance_px", 0.0), summary.get("pixel_scale", 1.0))
    summary.update(maps_against_truth(out, summary["jobs"], demo.structure, truth))
    from vitrify.cli._demo_refine import stage_times

    summary.update(stage_times=stage_times(out / "project"), settings=asdict(demo),
                   particle_diameter_angst=diameter, out=str(out),
                   commands=[{"cwd": str(s.cwd), "command": c} for s in steps for c in s.commands],
                   steps=timings, wall_s=time.perf_counter() - start, cpu_s=cpu_seconds() - cpu_start,
                   on_the_fly=on_the_fly(out / "project", microscope.written))
    atomic_write(out / "demo_report.json", json.dumps(summary, indent=1) + "\n")
    return summary

"""Every job in ``jobs.registry.JOB_MODULES`` keeps the job contract.

Each has a frozen ``Options`` whose every field (and every declared member of a settings
group) is documented, a ``run``, and both job.star directions; its defaults survive a trip
through a job.star file; the CLI command built from ``Options`` exposes every field, its
defaults are the dataclass's, and required options are shown as required. Options modules
and the whole CLI build without torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from vitrify.cli.main import build_app
from vitrify.jobs import fields
from vitrify.jobs.jobstar_values import options_from_values
from vitrify.jobs.registry import JOB_MODULES
from vitrify.pipeline._jobstar import JobStar, read_job_star, write_job_star

SRC = Path(__file__).resolve().parents[1] / "src"


def _minimal(module_name: str, kind: str | None) -> tuple[list[str], object]:
    """(the CLI arguments a command needs, the Options written out by hand with its defaults)."""
    opts = importlib.import_module(f"vitrify.jobs.options.{module_name}")
    table = {
        "import_": (["--i", "Movies/*.tiff", "--angpix", "1.0"], lambda: opts.Options("Movies/*.tiff")),
        "motioncorr": (["--i", "movies.star"], lambda: opts.Options("movies.star")),
        "ctffind": (["--i", "mics.star"], lambda: opts.Options("mics.star")),
        "autopick": (["--i", "mics.star"], lambda: opts.Options("mics.star")),
        "extract": (["--i", "mics.star", "--coords", "autopick.star", "--box", "128"],
                    lambda: opts.Options("mics.star", "autopick.star")),
        "select": (["--i", "mics.star"], lambda: opts.Options("mics.star")),
        "class2d": (["--i", "particles.star", "--particle-diameter", "150"],
                    lambda: opts.Options("particles.star", particle_diameter_angst=150.0)),
        "initialmodel": (["--i", "particles.star", "--particle-diameter", "150"],
                         lambda: opts.Options("particles.star", particle_diameter_angst=150.0)),
        "class3d": (["--i", "particles.star", "--ref", "ref.mrc", "--particle-diameter", "150"],
                    lambda: opts.Options("particles.star", "ref.mrc", particle_diameter_angst=150.0)),
        "refine3d": (["--i", "particles.star", "--ref", "map.mrc", "--particle-diameter", "150"],
                     lambda: opts.Options("particles.star", "map.mrc", particle_diameter_angst=150.0)),
        "simulate": ([], lambda: opts.Options(kind, _simulator_defaults(kind))),
        "mask_create": (["--i", "map.mrc"], lambda: opts.Options("map.mrc")),
        "postprocess": (["--i", "half1.mrc", "--mask", "mask.mrc"], lambda: opts.Options("half1.mrc", mask="mask.mrc")),
        "class_ranker": (["--opt", "run_it025_optimiser.star"], lambda: opts.Options("run_it025_optimiser.star")),
    }
    args, build = table[module_name]
    return args, build()


def _simulator_defaults(kind: str) -> object:
    from vitrify.sim.micrographs import MicrographOptions
    from vitrify.sim.particles import ParticleOptions

    return ParticleOptions() if kind == "particles" else MicrographOptions()


def _cases() -> list[tuple[str, str | None]]:
    """(job module, simulate kind or None) for every job type vitrify has."""
    out = []
    for module_name in dict.fromkeys(JOB_MODULES.values()):
        kinds = ("particles", "micrographs", "movies") if module_name == "simulate" else (None,)
        out += [(module_name, kind) for kind in kinds]
    return out


CASES = _cases()
IDS = [f"{m}-{k}" if k else m for m, k in CASES]


def _command_name(module_name: str) -> str:
    names = {"import_": "import", "class_ranker": "class-ranker", "mask_create": "mask-create"}
    return names.get(module_name, module_name)


@pytest.mark.parametrize("module_name", sorted(set(JOB_MODULES.values())))
def test_job_module_has_the_job_protocol(module_name):
    module = importlib.import_module(f"vitrify.jobs.{module_name}")
    for name in ("Options", "run", "options_from_job_star", "job_star_from_options"):
        assert callable(getattr(module, name, None)), f"vitrify.jobs.{module_name} lacks {name}"
    options = module.Options
    assert dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen
    assert options.__module__ == f"vitrify.jobs.options.{module_name}"  # the one, torch-free, declaration


@pytest.mark.parametrize("module_name", sorted(set(JOB_MODULES.values())))
def test_every_field_is_documented(module_name):
    options = importlib.import_module(f"vitrify.jobs.options.{module_name}").Options
    for f in dataclasses.fields(options):
        spec = fields.spec_of(f)
        assert spec.help.strip(), f"{module_name}.{f.name} has no help"
        groups = [spec] if isinstance(spec, fields.Group) else list(getattr(spec, "groups", {}).values())
        for group in groups:
            for name, member in group.members.items():
                assert member.help.strip(), f"{module_name}.{f.name}.{name} has no help"
                assert member.default is not fields.UNSET, f"{module_name}.{f.name}.{name} has no default"


@pytest.mark.parametrize("module_name", sorted(set(JOB_MODULES.values())))
def test_declared_defaults_have_the_field_types(module_name):
    """A default's type decides how job.star text is read: it must be the field's type."""
    options = importlib.import_module(f"vitrify.jobs.options.{module_name}").Options
    kinds = {"str": str, "float": float, "int": int, "bool": bool}
    for f in dataclasses.fields(options):
        spec, default = fields.spec_of(f), fields.field_default(f)
        if isinstance(spec, fields.Setting) and str(f.type) in kinds:
            assert type(default) is kinds[str(f.type)], f"{module_name}.{f.name}: {default!r}"
        groups = [spec] if isinstance(spec, fields.Group) else list(getattr(spec, "groups", {}).values())
        for group in groups:
            cls_fields = {g.name: g for g in dataclasses.fields(group.build())}
            for name, member in group.members.items():
                declared = str(cls_fields[name].type)
                if declared in kinds:
                    assert type(member.default) is kinds[declared], f"{module_name}.{f.name}.{name}"


@pytest.mark.parametrize(("module_name", "kind"), CASES, ids=IDS)
def test_defaults_round_trip_through_a_job_star(tmp_path, module_name, kind):
    module = importlib.import_module(f"vitrify.jobs.{module_name}")
    _, options = _minimal(module_name, kind)
    values = module.job_star_from_options(options)
    assert all(isinstance(v, str) for v in values.values())
    path = tmp_path / "job.star"
    write_job_star(path, JobStar("relion.x", values))
    assert options_from_values(module, read_job_star(path).options) == options


@pytest.mark.parametrize(("module_name", "kind"), CASES, ids=IDS)
def test_cli_exposes_every_field_with_the_dataclass_defaults(module_name, kind):
    options = importlib.import_module(f"vitrify.jobs.options.{module_name}").Options
    cli = fields.cli_options(options, kind)
    fixed = {"kind": kind} if kind else {}
    exposed = {o.path.split(".")[0] for o in cli} | set(fixed)
    assert exposed == {f.name for f in dataclasses.fields(options)}
    assert len({o.flag for o in cli}) == len(cli), "a flag is used twice"
    args, expected = _minimal(module_name, kind)
    given = {o.name: o.default for o in cli}
    for flag, value in zip(args[::2], args[1::2]):
        opt = next(o for o in cli if o.flag == flag)
        given[opt.name] = opt.type(value)
    assert fields.options_from_cli(options, given, kind, **fixed) == expected


@pytest.mark.parametrize(("module_name", "kind"), CASES, ids=IDS)
def test_help_marks_required_options_and_shows_no_false_default(module_name, kind):
    group = typer.main.get_command(build_app())
    command = group.commands[_command_name(module_name)] if not kind else \
        group.commands["simulate"].commands[kind]
    params = {p.name: p for p in command.params}
    options = importlib.import_module(f"vitrify.jobs.options.{module_name}").Options
    for opt in fields.cli_options(options, kind):
        param = params[opt.name]
        spec_required = opt.required
        assert param.required == spec_required, opt.flag
        if " Required " in opt.help:
            assert param.default is None and not param.show_default, opt.flag


def test_class2d_help_is_honest_about_required_options():
    result = CliRunner().invoke(build_app(), ["class2d", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    row = {name: next(line for line in result.output.splitlines() if f" {name} " in line)
           for name in ("--i", "--particle-diameter", "--K")}
    assert "Required unless --continue" in row["--i"] and "default" not in row["--i"]
    diameter = row["--particle-diameter"]
    assert "Required unless --continue" in diameter and "[default: 0.0]" not in diameter
    assert "[default: 50]" in row["--K"]


def test_class2d_without_diameter_fails_in_one_line(tmp_path):
    result = CliRunner().invoke(build_app(), ["class2d", "--i", "p.star", "--o", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception) and "particle diameter must be given" in str(result.exception)


def test_cli_and_options_modules_build_without_torch():
    """Blocks torch, imports every Options module, builds every command and prints ``--help``."""
    modules = sorted(set(JOB_MODULES.values()))
    code = (
        "import sys, importlib\n"
        "sys.modules['torch'] = None\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('vitrify.jobs.options.' + name)\n"
        "import typer.main\n"
        "from vitrify.cli.main import build_app, main\n"
        "typer.main.get_command(build_app())\n"
        "for args in (['--help'], ['class2d', '--help'], ['simulate', 'movies', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code in (0, None), exit.code\n"
        "print('ok', 'torch' in sys.modules and sys.modules['torch'] is not None)\n"
    )
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok False")


def _simulate_cases() -> list[object]:
    from vitrify.jobs.simulate import Options
    from vitrify.sim.micrographs import MicrographOptions
    from vitrify.sim.particles import ParticleOptions

    return [Options("particles", ParticleOptions(structures=("adk", "cftr"), n_particles=10, noise_colour="coloured",
                                                 max_shift_px=2.0, voltage_kv=200.0, symmetry="C2", float16=True,
                                                 junk_kinds=("ice",)), "cpu"),
            Options("movies", MicrographOptions(size_px=(256, 256), n_frames=12, drift_total_px=3.0, seed=4,
                                                movie_format="mrc")),
            Options("micrographs", MicrographOptions(size_px=(256, 128)))]


@pytest.mark.parametrize("case", range(3))
def test_simulate_settings_round_trip_through_a_job_star(tmp_path, case):
    """The job.star direction simulate lacked: its own settings as rows, the rest as vitrify_sim.* rows."""
    from vitrify.jobs import simulate

    options = _simulate_cases()[case]
    values = simulate.job_star_from_options(options)
    assert values["simulate"] == options.kind and values["random_seed"] == str(options.sim.seed)
    path = tmp_path / "job.star"
    write_job_star(path, JobStar("vitrify.simulate", values))
    assert options_from_values(simulate, read_job_star(path).options) == options

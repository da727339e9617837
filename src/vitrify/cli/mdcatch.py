"""``vitrify mdcatch``: read what EPU/SerialEM wrote and set up processing from it.

``vitrify mdcatch --read FILE [--json]`` prints the acquisition parameters of one file;
``vitrify mdcatch SESSION_DIR --project DIR [--particle-diameter A] [overrides] [--watch]``
sets up a project (acquisition.json, scheme options) and prints the command that starts it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

#: Command-line override option → AcquisitionParams field.
OVERRIDES = {
    "pixel_size": "pixel_size_angst", "voltage": "voltage_kv", "cs": "cs_mm",
    "dose_per_frame": "dose_per_frame_e_per_angst2", "total_dose": "total_dose_e_per_angst2",
    "n_frames": "n_frames", "super_resolution": "super_resolution", "eer": "eer",
    "phase_plate": "phase_plate",
}


def _value_text(value: object) -> str:
    if value is None:
        return "[red]missing[/]"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple) and len(value) > 6:
        return f"{len(value)} values: {value[0]:g} … {value[-1]:g}"
    if isinstance(value, tuple):
        return ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in value)
    return escape(str(value))


def print_params(params, console: Console) -> None:
    """A table of every acquisition field with its value and source."""
    from vitrify.io.acquisition import PARAM_FIELDS

    table = Table(title=f"Acquisition metadata: {escape(str(params.source_path))}")
    for column in ("field", "value", "source"):
        table.add_column(column)
    for name in PARAM_FIELDS:
        value = getattr(params, name)
        if value is None and name not in params.missing:
            continue
        table.add_row(name, _value_text(value), escape(params.source(name)) if value is not None else "")
    console.print(table)
    if params.missing:
        console.print(f"missing: {', '.join(params.missing)}")


def print_setup(setup, console: Console) -> None:
    """A table of the derived processing parameters with the rule/source of each."""
    table = Table(title="Processing parameters")
    for column in ("parameter", "value", "from"):
        table.add_column(column)
    for name, (value, source) in setup.values.items():
        table.add_row(name, _value_text(value), escape(source))
    console.print(table)


def _read_one(path: Path, as_json: bool, config, console: Console) -> None:
    """``--read``: print one file's acquisition parameters (table or JSON)."""
    from vitrify.io.acquisition import read_acquisition
    from vitrify.io.facility import apply_facility

    params = read_acquisition(path)
    if config is not None:
        params = apply_facility(params, config)
    if as_json:
        typer.echo(json.dumps(params.to_json_dict(), indent=2))
    else:
        print_params(params, console)


def _settings(texts: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` options → ``{KEY: VALUE}`` (True/False as relion_it's Yes/No)."""
    from vitrify.io.errors import InputError

    out = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep or key.strip().count("__") not in (1, 2):
            raise InputError(f"cannot read {text!r}", field="--set",
                             expected="SCHEME__VARIABLE=VALUE or SCHEME__JOB__OPTION=VALUE")
        out[key.strip()] = {"True": "Yes", "False": "No"}.get(value, value) if key.count("__") == 2 else value
    return out


def record_installed(project: Path) -> list[str]:
    """The schemes this set-up installed (from acquisition.json)."""
    record = json.loads((project / "acquisition.json").read_text())
    return list(record.get("schemes_installed", []))


def _set_up_session(values: dict, config, console: Console) -> None:
    """``SESSION_DIR --project DIR``: set the project up and print what was done and how to start."""
    from vitrify.pipeline.autosetup import SetupOptions
    from vitrify.pipeline.mdcatch import SessionRequest, missing_schemes, prepare_session, processing_commands

    project = values["project"]
    request = SessionRequest(
        session_dir=values["session_dir"], project_dir=project,
        overrides={field: values[option] for option, field in OVERRIDES.items()},
        options=SetupOptions(particle_diameter_angst=values["particle_diameter"], box_px=values["box"],
                             small_box_px=values["small_box"], mask_diameter_angst=values["mask_diameter"]),
        facility=config, gain=values["gain"], movies_pattern=values["movies"], watch=values["watch"],
        poll_s=values["poll"], timeout_s=values["timeout"], settings=_settings(values["settings"]),
        init_schemes=values["init_schemes"])
    params, setup = prepare_session(
        request, warn=lambda message: console.print(f"[yellow]warning:[/] {escape(message)}"))
    print_params(params, console)
    print_setup(setup, console)
    if values["particle_diameter"] is None:
        console.print("give --particle-diameter to derive box, downscaled box and mask sizes")
    console.print(f"wrote {escape(str(project / 'acquisition.json'))}")
    for name in record_installed(project):
        console.print(f"installed vitrify's {name} scheme in {escape(str(project / 'Schemes' / name))}")
    absent = missing_schemes(project)
    if absent:
        console.print(f"the project has no Schemes/{', Schemes/'.join(absent)}: install them "
                      f"({'; '.join(f'vitrify schemer --scheme {n} --init {n}' for n in absent)}) "
                      "and run this command again to set their options")
    console.print("start processing with:")
    for line in processing_commands(project):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add the ``mdcatch`` command to ``app``."""

    @app.command("mdcatch")
    def mdcatch(
        session_dir: Optional[Path] = typer.Argument(None, help="Session directory (EPU or SerialEM)."),
        read: Optional[Path] = typer.Option(None, "--read", help="Only read and print this file."),
        as_json: bool = typer.Option(False, "--json", help="With --read: print one JSON object."),
        project: Optional[Path] = typer.Option(None, "--project", help="Project directory to set up."),
        particle_diameter: Optional[float] = typer.Option(None, "--particle-diameter",
                                                          help="Particle diameter (Å)."),
        facility: Optional[Path] = typer.Option(None, "--facility", help="Facility TOML file."),
        pixel_size: Optional[float] = typer.Option(None, "--pixel-size", help="Å/px of the movies."),
        voltage: Optional[float] = typer.Option(None, "--voltage", help="kV."),
        cs: Optional[float] = typer.Option(None, "--cs", help="Spherical aberration (mm)."),
        dose_per_frame: Optional[float] = typer.Option(None, "--dose-per-frame", help="e/Å²/frame."),
        total_dose: Optional[float] = typer.Option(None, "--total-dose", help="e/Å² per movie."),
        n_frames: Optional[int] = typer.Option(None, "--n-frames", help="Frames per movie."),
        super_resolution: Optional[bool] = typer.Option(None, "--super-resolution/--no-super-resolution"),
        eer: Optional[bool] = typer.Option(None, "--eer/--no-eer", help="Movies are EER."),
        phase_plate: Optional[bool] = typer.Option(None, "--phase-plate/--no-phase-plate"),
        gain: Optional[Path] = typer.Option(None, "--gain", help="Gain reference file."),
        movies: Optional[str] = typer.Option(None, "--movies", help="Movie glob, relative to the session."),
        box: Optional[int] = typer.Option(None, "--box", help="Particle box (px)."),
        small_box: Optional[int] = typer.Option(None, "--small-box", help="Downscaled box (px)."),
        mask_diameter: Optional[float] = typer.Option(None, "--mask-diameter", help="Mask (Å)."),
        watch: bool = typer.Option(False, "--watch", help="Wait for the first complete metadata file."),
        poll: float = typer.Option(5.0, "--poll", help="Seconds between checks with --watch."),
        timeout: Optional[float] = typer.Option(None, "--timeout", help="Give up after (s) with --watch."),
        init_schemes: bool = typer.Option(True, "--init-schemes/--no-init-schemes",
                                          help="Install vitrify's prep/proc schemes where the project "
                                               "has none (as relion_it copies RELION's)."),
        settings: list[str] = typer.Option([], "--set", help="relion_it key=value for the schemes, e.g. "
                                           "proc__min_nr_parts_3d=10000 or proc__refine3d__sym_name=D2 "
                                           "(repeatable; wins over derived values)."),
    ) -> None:
        """Read acquisition metadata (EPU/SerialEM) and set up processing from it."""
        from vitrify.io.errors import InputError
        from vitrify.io.facility import load_facility_config

        console = Console()
        config = load_facility_config(facility)
        if read is not None:
            _read_one(read, as_json, config if config.path else None, console)
            return
        if session_dir is None or project is None:
            raise InputError("give --read FILE, or SESSION_DIR and --project DIR",
                             field="vitrify mdcatch")
        _set_up_session(dict(locals()), config, console)

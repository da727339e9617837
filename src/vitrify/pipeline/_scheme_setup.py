"""Put mdcatch's derived options into a project's ``Schemes/prep`` and ``Schemes/proc``.

What RELION-4's ``relion_it.py`` does with its option keys (docs/schemes.md):

- ``SCHEME__JOB__OPTION`` (``prep__motioncorr__dose_per_frame``) sets a job option in the job's
  template ``Schemes/SCHEME/JOB/job.star`` (relion_it: ``relion_pipeliner --editJob``). When the
  template routes that option through a scheme variable (value ``$$name``), the variable is set
  instead, so the scheme's own wiring stays intact;
- ``SCHEME__VARIABLE`` sets a variable of ``Schemes/SCHEME/scheme.star``, value and reset value
  (relion_it: ``relion_schemer --set_var NAME --value V --original_value V``), through the schemes
  package's ``read_scheme``/``write_scheme``.

Each scheme is edited under its lock (``.relion_lock_scheme_NAME/``, the schemes package's
:class:`SchemeLock`); a scheme that a schemer holds is not touched: the set-up stops with an
error naming the lock. Schemes the project lacks are skipped.
"""

from __future__ import annotations

import shlex
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vitrify.io.errors import InputError
from vitrify.pipeline.schemes.lock import SchemeLock

#: The schemes relion_it sets up, in the order they are started.
SCHEME_NAMES = ("prep", "proc")


@dataclass(frozen=True)
class AppliedOption:
    """One option written into a scheme: its relion_it key, the file and the name it went to."""

    key: str
    file: str
    name: str
    value: str

    def to_json_dict(self) -> dict[str, str]:
        """``{"key", "file", "name", "value"}``."""
        return {"key": self.key, "file": self.file, "name": self.name, "value": self.value}


def _variable_reference(value: str) -> str | None:
    """``name`` for an option value that is exactly ``$$name``, else None."""
    value = value.strip()
    if value.startswith("$$") and len(value) > 2 and " " not in value:
        return value[2:]
    return None


def _plan_job_options(project_dir: Path, scheme: str, job: str, options: dict[str, tuple[str, str]]
                      ) -> tuple[list[AppliedOption], dict[str, tuple[str, str]], Callable[[], None]]:
    """Plan ``{option: (key, value)}`` for one job template without writing anything yet.

    Returns the options to write, ``{variable: (key, value)}`` for options the template routes
    through ``$$variable``, and the function that writes the template.
    """
    from vitrify.pipeline._star import read_blocks, write_blocks

    path = project_dir / "Schemes" / scheme / job / "job.star"
    relative = path.relative_to(project_dir).as_posix()
    if not path.is_file():
        return [], {}, lambda: None
    blocks = read_blocks(path)
    table = blocks.get("joboptions_values")
    if table is None or "rlnJobOptionVariable" not in getattr(table, "columns", ()):
        raise InputError("no joboptions_values table", path=path, expected="a RELION job.star")
    names = list(table["rlnJobOptionVariable"].astype(str))
    values = list(table["rlnJobOptionValue"].astype(str))
    applied, variables = [], {}
    for option, (key, value) in options.items():
        current = values[names.index(option)] if option in names else None
        variable = None if current is None else _variable_reference(current)
        if variable is not None:
            variables[variable] = (key, value)
            continue
        if current is None:
            names.append(option)
            values.append(value)
        else:
            values[names.index(option)] = value
        applied.append(AppliedOption(key, relative, option, value))

    def write() -> None:
        if applied:
            blocks["joboptions_values"] = pd.DataFrame({"rlnJobOptionVariable": names,
                                                     "rlnJobOptionValue": values}, dtype=object)
            write_blocks(path, blocks)
    return applied, variables, write


def _set_variables(project_dir: Path, scheme: str,
                   variables: dict[str, tuple[str, str]]) -> list[AppliedOption]:
    """Set scheme variables (value and reset value) with the schemes package's read/write.

    The caller holds the scheme's lock; ``scheme.star.bck`` keeps the previous file (as
    ``relion_schemer --set_var`` does).
    """
    from vitrify.pipeline.schemes.star import read_scheme, write_scheme

    path = project_dir / "Schemes" / scheme / "scheme.star"
    relative = path.relative_to(project_dir).as_posix()
    model = read_scheme(path)
    for name, (key, value) in variables.items():
        if model.variable_kind(name) is None:
            raise InputError(f"no variable {name!r} in the scheme (needed for {key})",
                             path=path, expected="a float, bool or string variable")
        text = value if value != "" else '""'  # relion_it sends empty values as ""
        try:
            model.set_variable(name, text, text)
        except ValueError as err:
            raise InputError(f"cannot set variable {name!r} to {value!r} ({err}; needed for {key})",
                             path=path, expected=f"a {model.variable_kind(name)} value") from err
    shutil.copyfile(path, path.with_name("scheme.star.bck"))
    write_scheme(path, model)
    return [AppliedOption(key, relative, name, value) for name, (key, value) in variables.items()]


def apply_scheme_options(project_dir: str | Path, options: dict[str, str]) -> list[AppliedOption]:
    """Write relion_it-style options into the project's schemes; return what went where.

    Keys of schemes the project does not have (no ``Schemes/NAME/scheme.star``) are skipped, as
    are options of jobs the scheme lacks.
    """
    project_dir = Path(project_dir)
    per_scheme: dict[str, dict[str, list[tuple[str, str, str]]]] = defaultdict(lambda: defaultdict(list))
    for key, value in options.items():
        parts = key.split("__")
        if len(parts) not in (2, 3) or not all(parts):
            raise InputError(f"option key {key!r}", field=key,
                             expected="SCHEME__VARIABLE or SCHEME__JOB__OPTION")
        job = parts[1] if len(parts) == 3 else ""
        per_scheme[parts[0]][job].append((key, parts[-1], value))
    applied: list[AppliedOption] = []
    for scheme, jobs in per_scheme.items():
        if not (project_dir / "Schemes" / scheme / "scheme.star").is_file():
            continue
        with SchemeLock(project_dir, scheme, timeout_s=0.0):  # a running scheme is not touched
            applied += _apply_to_scheme(project_dir, scheme, jobs)
    return applied


def _apply_to_scheme(project_dir: Path, scheme: str,
                     jobs: dict[str, list[tuple[str, str, str]]]) -> list[AppliedOption]:
    """Options of one scheme: ``{job: [(key, option, value)]}``, job ``""`` for variables.

    Variables are set first, so that a variable that fails leaves the job templates untouched.
    """
    applied: list[AppliedOption] = []
    variables = {name: (key, value) for key, name, value in jobs.pop("", [])}
    writes = []
    for job, items in jobs.items():
        planned, routed, write = _plan_job_options(
            project_dir, scheme, job, {name: (key, value) for key, name, value in items})
        applied += planned
        variables.update(routed)
        writes.append(write)
    if variables:
        applied += _set_variables(project_dir, scheme, variables)
    for write in writes:
        write()
    return applied


def processing_commands(project_dir: str | Path) -> list[str]:
    """The shell commands that start processing (relion_it's order: reset and run prep, then proc).

    Each scheme's output goes to ``Schemes/NAME/run.out`` and ``run.err``, as relion_it does.
    """
    project = shlex.quote(str(Path(project_dir).resolve()))
    lines = [f"cd {project}"]
    for scheme in SCHEME_NAMES:
        lines.append(f"vitrify schemer --scheme {scheme} --reset")
        lines.append(f"nohup vitrify schemer --scheme {scheme} --run "
                     f">> Schemes/{scheme}/run.out 2>> Schemes/{scheme}/run.err &")
    return lines


def install_missing_schemes(project_dir: str | Path) -> list[str]:
    """Copy vitrify's prep/proc templates into a project that lacks them (relion_it copies RELION's).

    Returns the names installed; schemes the project has are kept as they are.
    """
    from vitrify.pipeline.schemes.templates_data import install_scheme

    missing = missing_schemes(project_dir)
    for name in missing:
        install_scheme(project_dir, name)
    return missing


def missing_schemes(project_dir: str | Path) -> list[str]:
    """Names of the prep/proc schemes the project does not have yet."""
    return [name for name in SCHEME_NAMES
            if not (Path(project_dir) / "Schemes" / name / "scheme.star").is_file()]


def relion_it_text(options: dict[str, str]) -> str:
    """``relion_it_options.py`` text: one ``'key' : 'value',`` line per option (RELION's form).

    Booleans are written ``'True'``/``'False'`` there (relion_it turns them into Yes/No).
    """
    as_python = {"Yes": "True", "No": "False"}
    lines = ["{"] + [f"'{key}' : '{as_python.get(value, value)}',"
                     for key, value in options.items()] + ["}", ""]
    return "\n".join(lines)

"""Job templates of a scheme: ``Schemes/<name>/<job>/job.star`` → options ready to run.

:func:`prepare_options` does RELION's ``prepareJob``: re-read the template every time,
substitute ``$$variables`` and translate ``Schemes/<s>/<job>/`` paths to pipeline job
directories. :func:`referenced_jobs` tells which of the scheme's own jobs a job reads from
(used to skip work that depends on a failed job). :func:`set_template_option` edits one
option of a template (``relion_pipeliner --editJob``; ``vitrify schemer --set_job_option``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from vitrify.io.errors import InputError
from vitrify.pipeline._star import read_blocks, write_blocks
from vitrify.pipeline.schemes.model import Scheme
from vitrify.pipeline.schemes.names import substitute_variables, translate_job_names

#: Yes/No options of RELION job types start with these (bools may only go into them).
BOOLEAN_PREFIXES = ("do_", "use_", "is_")
_OPTION_LABELS = ("rlnJobOptionVariable", "rlnJobOptionValue")


@dataclass(frozen=True)
class JobTemplate:
    """A job.star template: where it is, its job type and its option values (text)."""

    path: Path
    type_label: str
    options: dict[str, str]


def template_path(project_dir: str | Path, scheme: Scheme, job: str) -> Path:
    """``<project>/Schemes/<name>/<job>/job.star``."""
    return Path(project_dir) / scheme.name / job / "job.star"


def read_template(path: str | Path) -> JobTemplate:
    """Read a job.star template; InputError naming the file when it is not one."""
    path = Path(path)
    if not path.exists():
        raise InputError("job template not found", path=path, expected="a RELION job.star")
    blocks = read_blocks(path)
    general = blocks.get("job")
    label = str(general.get("rlnJobTypeLabel", "")).strip() if isinstance(general, dict) else ""
    if not label:
        raise InputError("no job type", path=path, field="data_job _rlnJobTypeLabel",
                         expected="a job type label such as relion.ctffind")
    table = blocks.get("joboptions_values")
    options: dict[str, str] = {}
    if isinstance(table, pd.DataFrame) and all(c in table.columns for c in _OPTION_LABELS):
        options = {str(k): str(v) for k, v in zip(table[_OPTION_LABELS[0]], table[_OPTION_LABELS[1]])}
    elif table is not None and not (isinstance(table, dict) and not table):
        raise InputError("bad options table", path=path, field="data_joboptions_values",
                         expected="a loop with _rlnJobOptionVariable and _rlnJobOptionValue")
    return JobTemplate(path, label, options)


def is_boolean_option(option: str) -> bool:
    """True for RELION's Yes/No options (``do_*``, ``use_*``, ``is_*``)."""
    return option.startswith(BOOLEAN_PREFIXES)


def substituted_options(template: JobTemplate, scheme: Scheme) -> dict[str, str]:
    """Every option with its ``$$variables`` replaced (job paths not yet translated)."""
    return {option: substitute_variables(value, scheme, option=option,
                                         boolean_option=is_boolean_option(option),
                                         where=str(template.path))
            for option, value in template.options.items()}


def prepare_options(template: JobTemplate, scheme: Scheme, project_dir: str | Path) -> dict[str, str]:
    """Options as the job will run: substituted, then with job paths translated."""
    return {option: translate_job_names(value, scheme, Path(project_dir))
            for option, value in substituted_options(template, scheme).items()}


def referenced_jobs(template: JobTemplate, scheme: Scheme) -> set[str]:
    """The scheme's own jobs whose outputs this template reads: ``Schemes/<name>/<job>/`` or the
    job's pipeline directory (a string variable set from a translated path holds that)."""
    own = scheme.name if scheme.name.endswith("/") else scheme.name + "/"
    values = list(substituted_options(template, scheme).values())
    found = set()
    for name, job in scheme.jobs.items():
        marks = [f"{own}{name}/"] + ([job.name] if job.has_started and job.name != name else [])
        if any(mark in value for mark in marks for value in values):
            found.add(name)
    return found


def set_template_option(path: str | Path, option: str, value: str) -> None:
    """Set (or add) one option of a job.star template, keeping everything else; atomic."""
    path = Path(path)
    read_template(path)  # checks it is a job.star
    blocks = read_blocks(path)
    table = blocks.get("joboptions_values")
    if not isinstance(table, pd.DataFrame):
        table = pd.DataFrame({label: pd.Series([], dtype=object) for label in _OPTION_LABELS})
    table = table[list(_OPTION_LABELS)].astype(object).copy()
    names = table[_OPTION_LABELS[0]].astype(str).tolist()
    if option in names:
        table.iloc[names.index(option), 1] = value
    else:
        table.loc[len(table)] = [option, value]
    blocks["joboptions_values"] = table.reset_index(drop=True)
    write_blocks(path, blocks)

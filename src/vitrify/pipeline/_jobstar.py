"""``job.star`` read and write (RELION-4 form: ``data_job`` + ``data_joboptions_values``).

Values stay text exactly as written (``Yes``, ``"7.5 degrees"``, ``$$var``); an empty
value is written ``""`` as RELION does. Options are written sorted by name (RELION
keeps them in a ``std::map``). RELION-3.0 files with an integer ``rlnJobType`` are read
through :data:`LEGACY_TYPES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vitrify.io.errors import InputError
from vitrify.jobs.jobstar_values import is_yes

#: RELION-3.0 integer job types → RELION-4 labels.
LEGACY_TYPES: dict[int, str] = {
    0: "relion.import", 1: "relion.motioncorr", 2: "relion.ctffind", 3: "relion.manualpick",
    4: "relion.autopick", 5: "relion.extract", 7: "relion.select", 8: "relion.class2d",
    9: "relion.class3d", 10: "relion.refine3d", 12: "relion.maskcreate", 13: "relion.joinstar",
    14: "relion.subtract", 15: "relion.postprocess", 16: "relion.localres", 18: "relion.initialmodel",
    19: "relion.multibody", 20: "relion.polish", 21: "relion.ctfrefine", 99: "relion.external",
}


@dataclass(frozen=True)
class JobStar:
    """The content of a job.star: type label, continue flag and option values (all text)."""

    type_label: str
    options: dict[str, str] = field(default_factory=dict)
    is_continue: bool = False


def _type_label(general: dict, path: Path) -> str:
    label = str(general.get("rlnJobTypeLabel", "")).strip()
    if label:
        return label
    legacy = str(general.get("rlnJobType", "")).strip()
    try:
        return LEGACY_TYPES[int(legacy)]
    except (ValueError, KeyError):
        raise InputError("no job type", path=path, field="data_job",
                         expected="_rlnJobTypeLabel (e.g. relion.ctffind)") from None


def _options(blocks: dict, path: Path) -> dict[str, str]:
    table = blocks.get("joboptions_values")
    if table is None or (isinstance(table, pd.DataFrame) and table.empty):
        return {}
    columns = ("rlnJobOptionVariable", "rlnJobOptionValue")
    if not isinstance(table, pd.DataFrame) or any(c not in table.columns for c in columns):
        raise InputError("bad options table", path=path, field="data_joboptions_values",
                         expected="a loop with _rlnJobOptionVariable and _rlnJobOptionValue")
    return {str(k): str(v) for k, v in zip(table[columns[0]], table[columns[1]])}


def read_job_star(path: str | Path) -> JobStar:
    """Read a job.star; InputError naming the file when it is missing or malformed."""
    from vitrify.io.star import read_star

    path = Path(path)
    blocks = read_star(path, as_strings=True)
    general = blocks.get("job")
    if not isinstance(general, dict):
        raise InputError("no data_job block", path=path, field="data_job",
                         expected="a RELION job.star (data_job + data_joboptions_values)")
    is_continue = is_yes(general.get("rlnJobIsContinue", "0"))
    return JobStar(_type_label(general, path), _options(blocks, path), is_continue)


def check_options(options: dict[str, str], path: str | Path | None = None) -> None:
    """InputError for an option name or value that a STAR file cannot hold."""
    for key, value in options.items():
        if not key or any(c.isspace() for c in key) or key.startswith(("_", "#", "data_", "loop_")):
            raise InputError(f"bad job option name {key!r}", path=path, field="data_joboptions_values",
                             expected="a name without spaces, such as input_star_mics")
        if "\n" in value or "\r" in value:
            raise InputError("a job option value cannot contain line breaks", path=path, field=key,
                             expected="a single line of text")


def write_job_star(path: str | Path, job: JobStar) -> None:
    """Write ``job`` atomically in RELION-4 layout (InputError for unwritable options)."""
    from vitrify.io.star import write_star

    check_options(job.options, path)
    names = sorted(job.options)
    table = pd.DataFrame({"rlnJobOptionVariable": names,
                          "rlnJobOptionValue": [str(job.options[n]) for n in names]}, dtype=object)
    general = {"rlnJobTypeLabel": job.type_label, "rlnJobIsContinue": int(job.is_continue),
               "rlnJobIsTomo": 0}
    write_star(path, {"job": general, "joboptions_values": table})

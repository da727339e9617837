"""Job-name translation (RELION's ``changeStringForJobnames``) and ``$$variable`` substitution.

Scheme files refer to the outputs of their own jobs as ``Schemes/<scheme>/<job>/file``; at run
time that prefix is replaced by the job's current pipeline directory (``Select/job005/``).
References to another scheme's jobs are translated through that scheme's ``scheme.star``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.pipeline.schemes.model import Scheme, format_float

PREFIX = "Schemes/"


def translate_job_names(value: str, scheme: Scheme, project_dir: Path,
                        other_jobs: Callable[[str], dict[str, str]] | None = None) -> str:
    """Replace ``Schemes/<s>/<job>/`` in ``value`` by the job's current pipeline name.

    Parameters
    ----------
    value
        Any option or string-variable value.
    scheme
        The running scheme (its own jobs are looked up in ``scheme.jobs``).
    project_dir
        Project directory holding ``Schemes/``.
    other_jobs
        ``name -> {original: current}`` for another scheme (default: read its scheme.star).
    """
    own = f"{scheme.name.rstrip('/')}/"
    if own in value:
        return _replace(value, own, {k: j.name for k, j in scheme.jobs.items()})
    start = value.find(PREFIX)
    if start < 0:
        return value
    rest = value[start + len(PREFIX):]
    if "/" not in rest:
        return value
    other = rest.split("/", 1)[0]
    table = (other_jobs or (lambda n: read_other_scheme_jobs(project_dir, n)))(other)
    return _replace(value, f"{PREFIX}{other}/", table)


def _replace(value: str, prefix: str, names: dict[str, str]) -> str:
    head, _, tail = value.partition(prefix)
    if "/" not in tail:
        return value
    job, _, after = tail.partition("/")
    current = names.get(job)
    if current is None:
        return value
    current = current if current.endswith("/") else current + "/"
    return head + current + after


def read_other_scheme_jobs(project_dir: Path, scheme_name: str, tries: int = 5,
                           wait_s: float = 1.0) -> dict[str, str]:
    """``{original: current}`` of ``Schemes/<scheme_name>/scheme.star`` (retries while empty)."""
    from vitrify.pipeline.schemes.star import read_scheme

    path = Path(project_dir) / PREFIX / scheme_name / "scheme.star"
    if not path.exists():
        raise InputError("scheme referred to by a job path does not exist", path=path)
    for attempt in range(tries):
        jobs = read_scheme(path, validate=False).jobs
        if jobs or attempt == tries - 1:
            return {k: j.name for k, j in jobs.items()}
        time.sleep(wait_s)
    return {}


def substitute_variables(value: str, scheme: Scheme, *, option: str = "",
                         boolean_option: bool = False, where: str = "") -> str:
    """Replace every ``$$name`` in ``value`` by the variable's value (RELION's rules).

    Bools become ``Yes``/``No`` (only in boolean options), floats the shortest decimal
    (not in boolean options), strings their raw text. Unknown variables raise
    :class:`InputError` naming ``where`` and ``option``.
    """
    if "$$" not in value:
        return value
    tokens = value.split(" ")
    out = []
    for token in tokens:
        pos = token.find("$$")
        if pos < 0:
            out.append(token)
            continue
        name = token[pos + 2:]
        out.append(token[:pos] + _variable_text(name, scheme, option, boolean_option, where))
    return " ".join(t for t in out if t != "" or len(out) == 1)


def _variable_text(name: str, scheme: Scheme, option: str, boolean_option: bool,
                   where: str) -> str:
    kind = scheme.variable_kind(name)
    if kind is None:
        raise InputError(f"unknown scheme variable $${name}", path=where or None,
                         field=option or None, expected="a float, bool or string variable")
    if kind == "bool":
        return "Yes" if scheme.bools[name] else "No"
    if boolean_option:
        raise InputError(f"{kind} variable $${name} used in a Yes/No option", path=where or None,
                         field=option or None, expected="a bool variable")
    if kind == "float":
        return format_float(scheme.floats[name])
    return scheme.strings[name]

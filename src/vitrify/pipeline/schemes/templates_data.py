"""vitrify's own prep and proc schemes (package data ``vitrify/data/Schemes/``).

They have RELION 4's graphs and variable names (so ``relion_it``-style keys such as
``prep__do_at_most`` or ``proc__min_nr_parts_3d`` work unchanged) with job templates set up for
vitrify's jobs. ``install_scheme(project, "prep")`` copies one into ``Schemes/prep/``
(``vitrify schemer --scheme prep --init prep``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vitrify.io.atomic import atomic_write
from vitrify.io.errors import InputError

TEMPLATES = ("prep", "proc")


def template_dir(kind: str) -> Path:
    """Directory of a shipped scheme; InputError for an unknown kind."""
    if kind not in TEMPLATES:
        raise InputError(f"no scheme template {kind!r}", field="--init", expected=" | ".join(TEMPLATES))
    return Path(__file__).resolve().parents[2] / "data" / "Schemes" / kind


def install_scheme(project_dir: str | Path, kind: str, name: str | None = None) -> Path:
    """Copy template ``kind`` to ``<project>/Schemes/<name>/`` (default name: ``kind``).

    A different name is written into the copy (its own ``Schemes/<kind>/`` references
    become ``Schemes/<name>/``). An existing scheme is never overwritten.
    """
    name = name or kind
    source = template_dir(kind)
    target = Path(project_dir) / "Schemes" / name
    if target.exists():
        raise InputError("scheme already exists; not overwriting it", path=target,
                         expected="a new scheme name, or remove the directory first")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{name}.installing")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    if name != kind:
        for path in staging.rglob("*.star"):
            text = path.read_text()
            atomic_write(path, text.replace(f"Schemes/{kind}/", f"Schemes/{name}/"))
    staging.rename(target)
    return target / "scheme.star"

"""RELION job type labels → vitrify job modules (names only; nothing is imported here).

A job.star names its job type with a RELION-4 label such as ``relion.ctffind`` or a
dotted sub-label (``relion.import.movies``, ``relion.autopick.log``,
``relion.select.onvalue``). :func:`base_label` strips sub-labels until a known type
remains; :func:`resolve_job` imports the job module that runs it, or raises
:class:`InputError` for types vitrify does not have yet. Labels listed in
:data:`UNAVAILABLE` are RELION types (or sub-types) known to be missing.

>>> base_label("relion.autopick.log")
'relion.autopick'
>>> job_directory("relion.import.movies")
'Import'
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType

from vitrify.io.errors import InputError
from vitrify.jobs.jobstar_values import is_yes

#: RELION (and vitrify) job type label → module under ``vitrify.jobs``.
JOB_MODULES: dict[str, str] = {
    "relion.import": "import_",
    "relion.motioncorr": "motioncorr",
    "relion.ctffind": "ctffind",
    "relion.autopick": "autopick",
    "relion.extract": "extract",
    "relion.select": "select",
    "relion.select.class2dauto": "class_ranker",
    "relion.class2d": "class2d",
    "relion.initialmodel": "initialmodel",
    "relion.class3d": "class3d",
    "relion.refine3d": "refine3d",
    "relion.maskcreate": "mask_create",
    "relion.postprocess": "postprocess",
    "vitrify.simulate": "simulate",
}

#: Job type label → directory of its jobs (``<Dir>/jobNNN/``), RELION's names.
JOB_DIRECTORIES: dict[str, str] = {
    "relion.import": "Import", "relion.motioncorr": "MotionCorr", "relion.ctffind": "CtfFind",
    "relion.manualpick": "ManualPick", "relion.autopick": "AutoPick", "relion.extract": "Extract",
    "relion.select": "Select", "relion.class2d": "Class2D", "relion.class3d": "Class3D",
    "relion.refine3d": "Refine3D", "relion.maskcreate": "MaskCreate", "relion.joinstar": "JoinStar",
    "relion.subtract": "Subtract", "relion.postprocess": "PostProcess", "relion.localres": "LocalRes",
    "relion.initialmodel": "InitialModel", "relion.multibody": "MultiBody", "relion.polish": "Polish",
    "relion.ctfrefine": "CtfRefine", "relion.external": "External", "vitrify.simulate": "Simulate",
}

#: job type -> (Yes/No option, module that runs the job when it is Yes): RELION's proc scheme
#: names automatic 2D selection ``relion.select`` with ``do_class_ranker = Yes``
OPTION_MODULES: dict[str, tuple[tuple[str, str], ...]] = {
    "relion.select": (("do_class_ranker", "class_ranker"),),
}

#: Sub-labels of available types that vitrify cannot run (checked before stripping).
UNAVAILABLE: frozenset[str] = frozenset({
    "relion.select.interactive", "relion.select.split",
    "relion.select.removeduplicates", "relion.select.discard",
    "relion.autopick.ref3d", "relion.class2d.helical", "relion.import.other",
    "relion.extract.helicalsegments"})

#: job type → (Yes/No option whose Yes needs a missing feature, what that feature is)
UNAVAILABLE_OPTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "relion.import": (("do_other", "import of other node types (coordinates, particles, maps)"),),
    "relion.autopick": (("do_ref3d", "3D-reference picking"),),
}


def base_label(type_label: str) -> str:
    """The known job type a (possibly dotted) label belongs to; the label itself if none is known."""
    label = type_label.strip()
    parts = label.split(".")
    for n in range(len(parts), 1, -1):
        candidate = ".".join(parts[:n])
        if candidate in JOB_DIRECTORIES:
            return candidate
    return label


def job_directory(type_label: str) -> str:
    """Directory name for jobs of this type (``relion.class2d`` → ``Class2D``); InputError if unknown."""
    base = base_label(type_label)
    if base not in JOB_DIRECTORIES:
        raise InputError(f"unknown job type {type_label!r}", field="rlnJobTypeLabel",
                         expected="a RELION-4 job type label such as relion.ctffind")
    return JOB_DIRECTORIES[base]


def is_available(type_label: str) -> bool:
    """True when vitrify has a job module for this label."""
    label = type_label.strip()
    return label not in UNAVAILABLE and (label in JOB_MODULES or base_label(label) in JOB_MODULES)


def resolve_job(type_label: str, options: Mapping[str, str] | None = None) -> ModuleType:
    """The job module (``Options``, ``run``, ``options_from_job_star``) for ``type_label``.

    ``options`` are the job.star values: some option values ask for features we lack
    (:data:`UNAVAILABLE_OPTIONS`). Raises :class:`InputError` ("job type X is not available in
    vitrify yet") for missing types.
    """
    if not is_available(type_label):
        raise InputError(f"job type {type_label.strip()} is not available in vitrify yet",
                         field="rlnJobTypeLabel",
                         expected=", ".join(sorted(JOB_MODULES)))
    for option, feature in UNAVAILABLE_OPTIONS.get(base_label(type_label), ()):
        if is_yes((options or {}).get(option, "")):
            raise InputError(f"job type {type_label.strip()} with {option} = yes: {feature} "
                             "is not available in vitrify yet", field=option)
    label = type_label.strip()
    module = JOB_MODULES.get(label) or JOB_MODULES[base_label(label)]
    for option, by_option in OPTION_MODULES.get(base_label(label), ()):
        if is_yes((options or {}).get(option, "")):
            module = by_option
    return importlib.import_module(f"vitrify.jobs.{module}")

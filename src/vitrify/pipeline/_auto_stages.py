"""Stages of ``vitrify auto`` (``--until``), which of them vitrify can run, and the scheme edits.

A stage is the point where the proc scheme goes back to its ``WAIT`` operator instead of going
on: ``ctf`` (prep only: import, motion correction, CTF; proc is not run), ``2d`` (proc up to 2D
classification), ``3d`` (class ranker and initial model), ``refine`` (3D refinement: RELION's
whole proc scheme). A stage can run when every job template it needs names a job type vitrify
has (:mod:`vitrify.jobs.registry`, read without importing any job). The stop is one fork per
stage, added to proc the way ``relion_schemer --add fork`` does and switched by a bool
variable (``auto_stop_after_2d``, ``auto_stop_after_3d``), so RELION's graph stays as it is.
RELION's proc scheme ends at ``refine3d``; for the ``refine`` stage two jobs are added after it
(:data:`AFTER_REFINE`, templates in ``vitrify/data/auto/``): a solvent mask from the refined map
(``relion.maskcreate`` at 0.2 of the map's maximum low-passed to 15 Å, extended 3 px, soft edge
6 px) and the post-processing of the half-maps with it (``relion.postprocess``: FSC-corrected
resolution, sharpened map).
"""

from __future__ import annotations

import re
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.jobs import registry
from vitrify.jobs.jobstar_values import is_yes
from vitrify.pipeline.schemes.build import Addition, add_to_scheme
from vitrify.pipeline.schemes.control import set_job_option, set_variables
from vitrify.pipeline.schemes.star import read_scheme
from vitrify.pipeline.schemes.templates import read_template

STAGES = ("ctf", "2d", "3d", "refine")
#: stage -> the proc job nodes it adds (each stage needs its own and the earlier ones')
_STAGE_NODES: dict[str, tuple[str, ...]] = {
    "ctf": (), "2d": ("select_mics", "autopick", "extract", "class2d"),
    "3d": ("select_parts", "inimodel3d"), "refine": ("refine3d",)}
#: stage -> (job node after which proc goes back to WAIT when the run stops there, its usual next node)
_STOP_FORKS: dict[str, tuple[str, str]] = {"2d": ("class2d", "select_parts"),
                                           "3d": ("inimodel3d", "SET_myref_inimodel")}
WAIT_NODE = "WAIT"
#: job nodes added after proc's refine3d for the ``refine`` stage, in order (new-mode jobs)
AFTER_REFINE = ("mask_create", "postprocess")


def stop_variable(stage: str) -> str:
    """The proc bool variable that ends a round after ``stage``."""
    return f"auto_stop_after_{stage}"


def _missing_job(template_path: Path) -> str | None:
    """What vitrify lacks to run this job template (None: it can run it)."""
    template = read_template(template_path)
    label = template.type_label
    if not registry.is_available(label):
        return label
    for option, feature in registry.UNAVAILABLE_OPTIONS.get(registry.base_label(label), ()):
        if is_yes(template.options.get(option, "")):
            return f"{label} with {option} = Yes ({feature})"
    return None


def missing_for(stage: str, proc_dir: Path) -> list[str]:
    """``node: job type`` for each job of ``stage`` (and earlier stages) vitrify cannot run."""
    nodes = [node for name in STAGES[1: STAGES.index(stage) + 1] for node in _STAGE_NODES[name]]
    missing = [(node, _missing_job(proc_dir / node / "job.star")) for node in nodes]
    return [f"{node}: {what}" for node, what in missing if what]


def choose_stage(until: str | None, proc_dir: Path) -> str:
    """The stage to run to: ``until`` if vitrify has its jobs, else InputError; default the last it has."""
    if until is not None and until not in STAGES:
        raise InputError(f"unknown stage {until!r}", field="--until", expected=" | ".join(STAGES))
    if until is not None:
        missing = missing_for(until, proc_dir)
        if missing:
            available = [s for s in STAGES if not missing_for(s, proc_dir)]
            raise InputError(f"stage {until} needs jobs vitrify does not have yet: {'; '.join(missing)}",
                             field="--until", expected=" | ".join(available))
        return until
    return [s for s in STAGES if not missing_for(s, proc_dir)][-1]


def route_proc(project_dir: Path, stage: str) -> None:
    """Add the stop forks to proc (once) and switch them so a round ends after ``stage``."""
    scheme = read_scheme(project_dir / "Schemes" / "proc" / "scheme.star")
    values = {}
    for name, (node, usual) in _STOP_FORKS.items():
        variable = stop_variable(name)
        if variable not in scheme.bools:
            add_to_scheme(project_dir, "proc", Addition("variable", name=variable, value="False"))
            add_to_scheme(project_dir, "proc", Addition("fork", input1=node, bool_variable=variable,
                                                        output=WAIT_NODE, output2=usual))
        values[variable] = str(name == stage)
    set_variables(project_dir, "proc", values, also_reset=True)
    if stage == "refine":
        add_after_refine(project_dir)


def add_after_refine(project_dir: Path) -> None:
    """Put :data:`AFTER_REFINE` between proc's refine3d and its ``WAIT`` (once)."""
    if AFTER_REFINE[-1] in read_scheme(project_dir / "Schemes" / "proc" / "scheme.star").jobs:
        return
    templates = Path(__file__).resolve().parents[1] / "data" / "auto"
    for node in AFTER_REFINE:
        add_to_scheme(project_dir, "proc", Addition("job", name=node, input1=str(templates / node), mode="new"))
    chain = ("refine3d", *AFTER_REFINE, WAIT_NODE)
    for start, end in zip(chain[:-1], chain[1:]):
        add_to_scheme(project_dir, "proc", Addition("edge", input1=start, output=end))


_OPTIMISER = re.compile(r"run_it\d+_optimiser\.star$")


def match_ranker_input(project_dir: Path) -> str | None:
    """Point select_parts' ``fn_model`` at the optimiser.star class2d will write (relion_it's job).

    RELION's template names ``run_it200_optimiser.star`` (200 VDAM mini-batches); with another
    ``nr_iter_grad`` (or EM's ``nr_iter``) the class ranker would look for a file that never
    comes. Returns the new value (None when nothing needed changing).
    """
    proc = project_dir / "Schemes" / "proc"
    if not (proc / "select_parts" / "job.star").is_file() or not (proc / "class2d" / "job.star").is_file():
        return None
    class2d = read_template(proc / "class2d" / "job.star").options
    key = "nr_iter_grad" if is_yes(class2d.get("do_grad", "Yes")) else "nr_iter"
    try:
        iterations = int(float(class2d.get(key, "")))
    except ValueError:
        return None
    current = read_template(proc / "select_parts" / "job.star").options.get("fn_model", "")
    wanted = _OPTIMISER.sub(f"run_it{iterations:03d}_optimiser.star", current)
    if not _OPTIMISER.search(current) or wanted == current:
        return None
    set_job_option(project_dir, "proc", "select_parts", "fn_model", wanted)
    return wanted

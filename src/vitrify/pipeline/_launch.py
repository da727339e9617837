"""Starting a job process: locally (detached) or through a queue template (SLURM/PBS/...).

Commands are argument lists, never shell strings. The queue template is a script with
RELION's placeholders (``XXXcommandXXX``, ``XXXmpinodesXXX``, ``XXXthreadsXXX``,
``XXXcoresXXX``, ``XXXdedicatedXXX``, ``XXXnodesXXX``, ``XXXqueueXXX``,
``XXXoutfileXXX``, ``XXXerrfileXXX``, ``XXXnameXXX``, ``XXXextra1XXX`` ...); the filled
script is written to ``<job>/run_submit.script`` and submitted as ``[*qsub, script]``. The
command is the same for every job; a job that runs on torch.distributed ranks (class2d) turns the
``XXXmpinodesXXX`` copies that ``mpirun -n XXXmpinodesXXX XXXcommandXXX`` (or ``srun``) starts
into its ranks (:mod:`vitrify.pipeline.ranks`).
"""

from __future__ import annotations

import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.jobs.jobstar_values import is_yes
from vitrify.pipeline.ranks import ADDRESS_FILE

_EXTRA = re.compile(r"XXXextra(\d+)XXX")


def job_command(job_name: str, continue_: bool) -> list[str]:
    """``python -m vitrify run-job --job <job>job.star [--continue]`` as an argument list."""
    command = [sys.executable, "-m", "vitrify", "run-job", "--job", f"{job_name}job.star"]
    return command + (["--continue"] if continue_ else [])


def wants_queue(options: dict[str, str]) -> bool:
    """True when the job.star asks for queue submission (``do_queue Yes``)."""
    return is_yes(options.get("do_queue", "No"))


def launch_local(root: Path, job_name: str, command: list[str]) -> subprocess.Popen:
    """Start ``command`` in ``root`` in its own session; stdout/stderr appended to run.out/run.err."""
    job_dir = root / job_name
    with open(job_dir / "run.out", "ab") as out, open(job_dir / "run.err", "ab") as err:
        return subprocess.Popen(command, cwd=root, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _count(options: dict[str, str], key: str, job_star: Path) -> int:
    raw = str(options.get(key, "1")).strip() or "1"
    try:
        value = int(float(raw))
    except ValueError:
        raise InputError(f"not a number: {raw!r}", path=job_star, field=key, expected="an integer") from None
    return max(value, 1)


def placeholder_values(job_name: str, options: dict[str, str], command: list[str],
                       job_star: Path) -> dict[str, str]:
    """Value of each RELION queue placeholder (without the XXX...XXX) for this job."""
    mpi, threads = _count(options, "nr_mpi", job_star), _count(options, "nr_threads", job_star)
    dedicated = _count(options, "min_dedicated", job_star)
    return {"command": shlex.join(command), "mpinodes": str(mpi), "threads": str(threads),
            "cores": str(mpi * threads), "dedicated": str(dedicated),
            "nodes": str(math.ceil(mpi * threads / dedicated)), "queue": options.get("queuename", ""),
            "outfile": f"{job_name}run.out", "errfile": f"{job_name}run.err", "name": job_name}


def fill_template(template: str, values: dict[str, str], options: dict[str, str]) -> str:
    """Replace every ``XXXkeyXXX``; ``XXXextraNXXX`` takes job option ``qsub_extraN`` (or empty)."""
    for key, value in values.items():
        template = template.replace(f"XXX{key}XXX", value)
    return _EXTRA.sub(lambda m: options.get(f"qsub_extra{m.group(1)}", ""), template)


def submit_to_queue(root: Path, job_name: str, options: dict[str, str], command: list[str]) -> str:
    """Fill the template, write ``run_submit.script``, submit it; returns the submitter's output."""
    from vitrify.io.atomic import atomic_write

    job_star = root / job_name / "job.star"
    template_name = options.get("qsubscript", "").strip()
    template = root / template_name if template_name else None
    if template is None or not template.is_file():
        raise InputError(f"queue template {template_name!r} not found", path=job_star, field="qsubscript",
                         expected="a submission script with XXXcommandXXX placeholders")
    script = root / job_name / "run_submit.script"
    (root / job_name / ADDRESS_FILE).unlink(missing_ok=True)  # an earlier run's rank 0 address
    atomic_write(script, fill_template(template.read_text(), placeholder_values(job_name, options, command,
                                                                                job_star), options))
    script.chmod(0o755)
    submit = shlex.split(options.get("qsub", "").strip() or "qsub") + [f"{job_name}run_submit.script"]
    try:
        done = subprocess.run(submit, cwd=root, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as err:
        raise InputError(f"cannot run the queue command {submit[0]!r}: {err.strerror}", path=job_star,
                         field="qsub", expected="a submit command on PATH such as sbatch or qsub") from None
    if done.returncode != 0:
        raise InputError(f"queue submission failed (exit {done.returncode}): {done.stderr.strip()}",
                         path=job_star, field="qsub")
    return done.stdout

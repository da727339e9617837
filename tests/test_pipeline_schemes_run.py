"""The schemer on real jobs (relion.import and relion.select of a few micrographs).

Loops and forks to completion, continue vs new, a changed option re-running only its job,
failures that do not block independent jobs, abort and restart, kill -9 and restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from _schemes_util import IMPORT, load, make_scheme, processes, raw_micrographs, select_from
from vitrify.pipeline.schemes import control
from vitrify.pipeline.schemes._state import ResumeState, write_state
from vitrify.pipeline.schemes.runner import RunSettings, run_scheme

FAST = RunSettings(poll_s=0.1, echo=False)


def _written_node(root: Path, name: str) -> str:
    """The current node as written (read_scheme turns "undefined" into the start node)."""
    from vitrify.pipeline._star import read_blocks

    return read_blocks(root / "Schemes" / name / "scheme.star")["scheme_general"]["rlnSchemeCurrentNodeName"]


def _runs(root: Path, job: str) -> int:
    """How many times a job was launched (commands appended to its note.txt)."""
    return (root / job / "note.txt").read_text().count("run-job")


def _loop_scheme(root: Path, name: str = "loop") -> None:
    """import (continue) → COUNT → select (new) → INC → CHECK ─true→ import ─false→ end."""
    raw_micrographs(root, "a.mrc", "b.mrc")
    make_scheme(
        root, name, floats={"iter": 0.0, "nmax": 2.0, "nmics": 0.0, "apix": 1.5},
        bools={"more": False},
        strings={"mics": f"Schemes/{name}/import/micrographs.star", "table": "micrographs"},
        operators=[("COUNT", "float=count_images", "nmics", "mics", "table"),
                   ("INC", "float=plus", "iter", "iter", "1"),
                   ("CHECK", "bool=lt", "more", "iter", "nmax")],
        jobs={"import": ("continue", IMPORT[0], {**IMPORT[1], "angpix": "$$apix"}),
              "select": ("new", *select_from(f"Schemes/{name}/import/micrographs.star"))},
        edges=[("import", "COUNT"), ("COUNT", "select"), ("select", "INC"), ("INC", "CHECK"),
               ("CHECK", "undefined", "import", "more")])


def test_loop_with_fork_runs_to_completion(tmp_path):
    _loop_scheme(tmp_path)
    result = run_scheme(tmp_path, "loop", FAST)
    assert result.status == "Succeeded", result.message
    scheme = load(tmp_path, "loop")
    assert scheme.floats["iter"] == 2.0 and scheme.floats["nmics"] == 2.0
    assert _written_node(tmp_path, "loop") == "undefined"
    assert scheme.jobs["import"].name == "Import/job001/" and scheme.jobs["import"].has_started
    assert scheme.jobs["select"].name == "Select/job003/"        # mode new: a new job per visit
    assert processes(tmp_path) == {"Import/job001/": "Succeeded", "Select/job002/": "Succeeded",
                                   "Select/job003/": "Succeeded"}
    assert _runs(tmp_path, "Import/job001/") == 2                  # run, then continued
    assert "--continue" in (tmp_path / "Import/job001/note.txt").read_text()
    from vitrify.pipeline._jobstar import read_job_star

    options = read_job_star(tmp_path / "Select/job002/job.star").options
    assert options["fn_mic"] == "Import/job001/micrographs.star"  # translated job path
    assert read_job_star(tmp_path / "Import/job001/job.star").options["angpix"] == "1.5"
    assert (tmp_path / "Select/job003/micrographs.star").exists()
    status = control.scheme_status(tmp_path, "loop")
    assert status["state"] == "finished" and status["variables"]["iter"] == 2.0
    assert {j["node"]: (j["job"], j["status"]) for j in status["jobs"]} == {
        "import": ("Import/job001/", "Succeeded"), "select": ("Select/job003/", "Succeeded")}
    log = (tmp_path / "Schemes/loop/schemer.log").read_text()
    assert "continuing Import/job001/" in log and "+ INC: iter -> 2" in log


def test_changed_option_reruns_only_that_job(tmp_path):
    raw_micrographs(tmp_path, "a.mrc")
    make_scheme(tmp_path, "chg",
                jobs={"import": ("continue", *IMPORT),
                      "select": ("continue", *select_from("Schemes/chg/import/micrographs.star"))},
                edges=[("import", "select")])
    assert run_scheme(tmp_path, "chg", FAST).status == "Succeeded"
    out = subprocess.run([sys.executable, "-m", "vitrify", "schemer", "--scheme", "chg",
                          "--set_job_option", "select:select_maxval=3", "--project", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert run_scheme(tmp_path, "chg", FAST).status == "Succeeded"
    assert list(processes(tmp_path)) == ["Import/job001/", "Select/job002/", "Select/job003/"]
    assert _runs(tmp_path, "Import/job001/") == 2                 # unchanged: continued
    assert _runs(tmp_path, "Select/job002/") == 1                 # changed: left alone ...
    scheme = load(tmp_path, "chg")
    assert scheme.jobs["select"].name == "Select/job003/"         # ... and re-run as a new job
    assert "select_maxval" in (tmp_path / "Schemes/chg/schemer.log").read_text()


def test_failed_job_does_not_block_independent_work(tmp_path):
    raw_micrographs(tmp_path, "a.mrc")
    make_scheme(tmp_path, "br",
                jobs={"bad": ("continue", IMPORT[0], {**IMPORT[1], "fn_in_raw": "Nothing/*.mrc"}),
                      "dep": ("new", *select_from("Schemes/br/bad/micrographs.star")),
                      "good": ("continue", *IMPORT)},
                edges=[("bad", "dep"), ("dep", "good")])
    result = run_scheme(tmp_path, "br", FAST)
    assert result.status == "Failed" and result.failed_jobs == ("Import/job001/",)
    assert "bad (Import/job001/)" in result.message
    assert processes(tmp_path) == {"Import/job001/": "Failed", "Import/job002/": "Succeeded"}
    assert not load(tmp_path, "br").jobs["dep"].has_started       # skipped: reads bad's output
    log = (tmp_path / "Schemes/br/schemer.log").read_text()
    assert "no files match" in log and "dep: skipped" in log
    assert (tmp_path / "Schemes/br/RELION_JOB_EXIT_FAILURE").exists()


def test_stop_on_failure_stops_at_the_failed_job(tmp_path):
    make_scheme(tmp_path, "st", jobs={"bad": ("continue", IMPORT[0], {**IMPORT[1], "fn_in_raw": "No/*.mrc"}),
                                      "good": ("continue", *IMPORT)},
                edges=[("bad", "good")])
    result = run_scheme(tmp_path, "st", RunSettings(poll_s=0.1, echo=False, stop_on_failure=True))
    assert result.status == "Failed" and result.current_node == "bad"
    assert list(processes(tmp_path)) == ["Import/job001/"]


def test_abort_during_a_job_and_restart_continues_it(tmp_path):
    raw_micrographs(tmp_path, "a.mrc")
    make_scheme(tmp_path, "ab", jobs={"import": ("continue", *IMPORT),
                                      "select": ("new", *select_from("Schemes/ab/import/micrographs.star"))},
                edges=[("import", "select")])
    results = []
    thread = threading.Thread(target=lambda: results.append(run_scheme(tmp_path, "ab", FAST)))
    thread.start()
    deadline = time.monotonic() + 20
    while not (tmp_path / "Import/job001/run.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    touched = control.abort_scheme(tmp_path, "ab")
    assert tmp_path / "Import/job001/RELION_JOB_ABORT_NOW" in touched
    thread.join(timeout=60)
    assert results[0].status == "Aborted" and results[0].current_node == "import"
    assert processes(tmp_path) == {"Import/job001/": "Aborted"}
    assert (tmp_path / "Schemes/ab/RELION_JOB_EXIT_ABORTED").exists()
    result = run_scheme(tmp_path, "ab", FAST)
    assert result.status == "Succeeded", result.message
    assert processes(tmp_path) == {"Import/job001/": "Succeeded", "Select/job002/": "Succeeded"}


@pytest.mark.slow
def test_kill_9_schemer_and_restart_loses_and_repeats_nothing(tmp_path):
    _loop_scheme(tmp_path, "k")
    command = [sys.executable, "-m", "vitrify", "schemer", "--scheme", "k", "--run", "--poll", "0.1"]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (tmp_path / "Select/job002/run.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)                 # the job it started goes on, detached
    first.wait()
    assert (tmp_path / ".relion_lock_scheme_k").exists()  # left behind: taken over below
    second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    scheme = load(tmp_path, "k")
    assert scheme.floats["iter"] == 2.0 and _written_node(tmp_path, "k") == "undefined"
    assert processes(tmp_path) == {"Import/job001/": "Succeeded", "Select/job002/": "Succeeded",
                                   "Select/job003/": "Succeeded"}
    assert _runs(tmp_path, "Select/job002/") == 1 and _runs(tmp_path, "Import/job001/") == 2


def test_job_created_by_a_killed_schemer_is_adopted(tmp_path):
    from vitrify.pipeline.project import Project

    raw_micrographs(tmp_path, "a.mrc")
    make_scheme(tmp_path, "ad", jobs={"import": ("continue", *IMPORT)}, edges=[("import", "undefined")])
    project = Project.open(tmp_path)
    write_state(tmp_path / "Schemes/ad", ResumeState("import", known_jobs=()))
    orphan = project.add_job_from_star(tmp_path / "Schemes/ad/import/job.star")  # killed right after
    result = run_scheme(tmp_path, "ad", FAST)
    assert result.status == "Succeeded"
    assert processes(tmp_path) == {orphan: "Succeeded"}
    assert load(tmp_path, "ad").jobs["import"].name == orphan


def test_loop_back_to_a_failed_job_with_nothing_independent_stops(tmp_path):
    make_scheme(tmp_path, "lp", floats={"n": 0.0},
                operators=[("INC", "float=plus", "n", "n", "1")],
                jobs={"bad": ("continue", IMPORT[0], {**IMPORT[1], "fn_in_raw": "No/*.mrc"}),
                      "dep": ("new", *select_from("Schemes/lp/bad/micrographs.star"))},
                edges=[("bad", "dep"), ("dep", "INC"), ("INC", "bad")])
    result = run_scheme(tmp_path, "lp", FAST)
    assert result.status == "Failed" and result.current_node == "bad"
    assert "no work independent of it" in result.message
    assert load(tmp_path, "lp").floats["n"] == 1.0               # the operators in between ran
    assert list(processes(tmp_path)) == ["Import/job001/"]       # not retried, dep never made


def test_continue_job_recorded_but_not_launched_is_run_on_restart(tmp_path):
    raw_micrographs(tmp_path, "a.mrc")
    make_scheme(tmp_path, "cl", jobs={"import": ("continue", *IMPORT)}, edges=[("import", "undefined")])
    assert run_scheme(tmp_path, "cl", FAST).status == "Succeeded"
    # a later visit chose to continue Import/job001/ and was killed before launching it:
    # the job's earlier success must not be taken for this visit's
    write_state(tmp_path / "Schemes/cl", ResumeState("import", "Import/job001/", continue_=True,
                                                  launched_at_ns=time.time_ns()))
    raw_micrographs(tmp_path, "b.mrc")
    assert run_scheme(tmp_path, "cl", FAST).status == "Succeeded"
    assert _runs(tmp_path, "Import/job001/") == 2 and list(processes(tmp_path)) == ["Import/job001/"]
    names = (tmp_path / "Import/job001/micrographs.star").read_text()
    assert "Raw/b.mrc" in names


def _watching_scheme(root: Path, name: str = "watch") -> None:
    """RELION's prep loop: WAIT (1 h) → EXIT_maxtime (48 h) → import → WAIT."""
    raw_micrographs(root, "a.mrc", "b.mrc")
    make_scheme(
        root, name, floats={"wait_sec": 3600.0, "maxtime_hr": 48.0},
        operators=[("WAIT", "wait", "undefined", "wait_sec"),
                   ("EXIT_maxtime", "exit_maxtime", "undefined", "maxtime_hr")],
        jobs={"import": ("continue", *IMPORT)},
        edges=[("WAIT", "EXIT_maxtime"), ("EXIT_maxtime", "import"), ("import", "WAIT")])


def test_once_stops_after_one_pass_back_at_the_wait(tmp_path):
    _watching_scheme(tmp_path)
    start = time.monotonic()
    result = run_scheme(tmp_path, "watch", RunSettings(poll_s=0.1, echo=False, once=True))
    assert time.monotonic() - start < 60  # never sleeps the hour of wait_sec
    assert (result.status, result.current_node) == ("Succeeded", "WAIT"), result.message
    assert "one pass" in result.message
    assert processes(tmp_path) == {"Import/job001/": "Succeeded"}
    assert (tmp_path / "Schemes" / "watch" / "RELION_JOB_EXIT_SUCCESS").exists()
    # a second one-pass run continues the same import job (nothing new to import)
    assert run_scheme(tmp_path, "watch", RunSettings(poll_s=0.1, echo=False, once=True)).status == "Succeeded"
    assert list(processes(tmp_path)) == ["Import/job001/"] and _runs(tmp_path, "Import/job001/") == 2


def test_once_reports_a_failed_job_of_the_pass(tmp_path):
    _watching_scheme(tmp_path)
    (tmp_path / "Raw" / "a.mrc").unlink()
    (tmp_path / "Raw" / "b.mrc").unlink()  # import finds nothing: the job fails
    result = run_scheme(tmp_path, "watch", RunSettings(poll_s=0.1, echo=False, once=True))
    assert (result.status, result.current_node) == ("Failed", "WAIT"), result.message
    assert "import (Import/job001/)" in result.message

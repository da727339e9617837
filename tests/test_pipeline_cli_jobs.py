"""``vitrify JOBTYPE ... --o JobType/jobNNN`` is a pipeline job; any other --o records nothing.

Also: a job whose process died without an exit marker is noticed through its heartbeat,
queue-submitted jobs included.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from typer.testing import CliRunner

from vitrify.cli._record import pipeline_job_name, type_label_of
from vitrify.cli.main import build_app
from vitrify.pipeline._heartbeat import HEARTBEAT_FILE
from vitrify.pipeline._jobstar import read_job_star
from vitrify.pipeline._pipeline_star import read_pipeline
from vitrify.pipeline.project import Project

MICROGRAPHS_STAR = """
data_optics
loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnMicrographPixelSize #3
_rlnVoltage #4
_rlnSphericalAberration #5
_rlnAmplitudeContrast #6
opticsGroup1 1 1.5 300 2.7 0.1

data_micrographs
loop_
_rlnMicrographName #1
_rlnOpticsGroup #2
_rlnCtfMaxResolution #3
Raw/a.mrc 1 4.0
Raw/b.mrc 1 8.0
Raw/c.mrc 1 5.5
"""


def _vitrify(*args: str):
    return CliRunner().invoke(build_app(), list(args))


def _names(path) -> list[str]:
    from vitrify.io.star import read_star_optics

    return list(read_star_optics(path, "micrographs").data["rlnMicrographName"])


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    """An empty directory, made the current one (the project)."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "mics.star").write_text(MICROGRAPHS_STAR)
    monkeypatch.chdir(root)
    return root


def test_type_labels_are_relion4s():
    from vitrify.jobs import autopick, select

    assert type_label_of("autopick", autopick.Options("m.star", "log")) == "relion.autopick.log"
    assert type_label_of("autopick", autopick.Options("m.star", "topaz")) == "relion.autopick.topaz"
    assert type_label_of("autopick", autopick.Options("m.star", "template", references="r.mrcs")) == \
        "relion.autopick.ref2d"  # picking with 2D class averages as references
    from vitrify.jobs.registry import resolve_job

    job = resolve_job("relion.autopick.ref2d", {"do_refs": "Yes", "fn_refs_autopick": "r.mrcs"})
    assert job.options_from_job_star({"fn_input_autopick": "m.star", "do_refs": "Yes", "do_log": "No",
                                      "fn_refs_autopick": "r.mrcs"}).method == "template"
    assert type_label_of("select", select.Options("m.star")) == "relion.select.onvalue"


def test_job_names_from_out(tmp_path):
    assert pipeline_job_name("Select/job003", "relion.select.onvalue", tmp_path) == "Select/job003/"
    assert pipeline_job_name(tmp_path / "CtfFind/job012/", "relion.ctffind", tmp_path) == "CtfFind/job012/"
    assert pipeline_job_name("./Class2D/job1000", "relion.class2d", tmp_path) == "Class2D/job1000/"
    for out, label in (("CtfFind/job003", "relion.select"), ("Select/job3", "relion.select"),
                       ("Select/run1", "relion.select"), ("x/Select/job003", "relion.select"),
                       ("/tmp/elsewhere/Select/job003", "relion.select"), ("Select", "relion.select")):
        assert pipeline_job_name(out, label, tmp_path) is None, out


def test_select_command_is_recorded_and_continued(project_dir):
    result = _vitrify("select", "--i", "mics.star", "--o", "Select/job004", "--max", "5")
    assert result.exit_code == 0, result.output
    state = read_pipeline(project_dir / "default_pipeline.star")
    name = "Select/job004/"
    assert {p.name: (p.type_label, p.status) for p in state.processes.values()} == \
        {name: ("relion.select.onvalue", "Succeeded")}
    assert state.job_counter == 5
    assert state.input_edges == [("mics.star", name)]
    assert state.output_edges == [(name, f"{name}micrographs.star")]
    assert _names(project_dir / name / "micrographs.star") == ["Raw/a.mrc"]
    job = read_job_star(project_dir / name / "job.star")
    assert (job.type_label, job.options["fn_mic"], job.options["select_maxval"]) == \
        ("relion.select.onvalue", "mics.star", "5")
    assert (project_dir / name / "note.txt").exists() and (project_dir / name / "job_pipeline.star").exists()

    # the same --o again: the same process continued with the new options
    result = _vitrify("select", "--i", "mics.star", "--o", "Select/job004", "--max", "6")
    assert result.exit_code == 0, result.output
    assert "continuing" in result.output
    state = read_pipeline(project_dir / "default_pipeline.star")
    assert list(state.processes) == [name] and state.processes[name].status == "Succeeded"
    assert state.output_edges == [(name, f"{name}micrographs.star")]
    assert _names(project_dir / name / "micrographs.star") == ["Raw/a.mrc", "Raw/c.mrc"]
    # numbering goes on above the given number
    assert Project.open(project_dir).add_job("relion.select", {"fn_mic": "mics.star"}) == "Select/job005/"


def test_run_job_reruns_what_the_command_ran(project_dir):
    assert _vitrify("select", "--i", "mics.star", "--o", "Select/job001", "--max", "5.5").exit_code == 0
    output = project_dir / "Select/job001/micrographs.star"
    first = _names(output)
    output.unlink()
    result = _vitrify("run-job", "--job", "Select/job001/job.star")
    assert result.exit_code == 0, result.output
    assert _names(output) == first == ["Raw/a.mrc", "Raw/c.mrc"]
    assert list(read_pipeline(project_dir / "default_pipeline.star").processes) == ["Select/job001/"]


def test_failing_command_leaves_status_failed(project_dir):
    result = _vitrify("select", "--i", "missing.star", "--o", "Select/job001")
    assert result.exit_code == 1
    job_dir = project_dir / "Select/job001"
    assert (job_dir / "RELION_JOB_EXIT_FAILURE").exists()
    assert "missing.star" in (job_dir / "run.err").read_text()
    state = read_pipeline(project_dir / "default_pipeline.star")
    assert state.processes["Select/job001/"].status == "Failed"
    assert state.input_edges == [("missing.star", "Select/job001/")] and state.output_edges == []


def test_other_out_records_nothing(project_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    assert _vitrify("select", "--i", "mics.star", "--o", str(elsewhere), "--max", "5").exit_code == 0
    assert _names(elsewhere / "micrographs.star") == ["Raw/a.mrc"]
    # a job directory of another job type is not this command's job either
    assert _vitrify("select", "--i", "mics.star", "--o", "CtfFind/job001", "--max", "5").exit_code == 0
    assert (project_dir / "CtfFind/job001/micrographs.star").exists()
    assert not (project_dir / "default_pipeline.star").exists()
    assert not (project_dir / "CtfFind/job001/job.star").exists()


def test_out_naming_a_job_of_another_type_is_refused(project_dir):
    project = Project.open(project_dir)
    project.register_job("Select/job002/", "relion.select", {"fn_mic": "mics.star"})
    from vitrify.io.errors import InputError

    with pytest.raises(InputError, match="Select/job002/ is not a CtfFind job"):
        project.register_job("Select/job002/", "relion.ctffind", {})


@pytest.mark.slow
def test_chained_commands_on_simulated_micrographs(project_dir):
    result = _vitrify("simulate", "micrographs", "--n", "2", "--size", "256", "--particles", "5",
                      "--device", "cpu", "--out", "Raw")
    assert result.exit_code == 0, result.output
    steps = [("import", "--i", "Raw/Micrographs/*.mrc", "--micrographs", "--angpix", "1.5", "--o", "Import/job001"),
             ("ctffind", "--i", "Import/job001/micrographs.star", "--o", "CtfFind/job002", "--box", "128",
              "--resmax", "6", "--dfmax", "30000", "--dfstep", "2500", "--device", "cpu", "--no-diagnostics"),
             ("select", "--i", "CtfFind/job002/micrographs_ctf.star", "--o", "Select/job003",
              "--label", "rlnCtfFigureOfMerit", "--min", "-1")]
    for step in steps:
        result = _vitrify(*step)
        assert result.exit_code == 0, result.output
    imp, ctf, sel = "Import/job001/", "CtfFind/job002/", "Select/job003/"
    state = read_pipeline(project_dir / "default_pipeline.star")
    assert {p.name: p.status for p in state.processes.values()} == \
        {imp: "Succeeded", ctf: "Succeeded", sel: "Succeeded"}
    assert state.input_edges == [(f"{imp}micrographs.star", ctf), (f"{ctf}micrographs_ctf.star", sel)]
    assert (imp, f"{imp}micrographs.star") in state.output_edges
    assert (ctf, f"{ctf}micrographs_ctf.star") in state.output_edges
    assert state.nodes[f"{ctf}micrographs_ctf.star"] == "MicrographsData.star.relion.ctf"
    assert read_job_star(project_dir / ctf / "job.star").options["vitrify_write_diagnostics"] == "No"

    shown = _vitrify("pipeline", "--json")
    assert shown.exit_code == 0, shown.output
    assert all(name in shown.output for name in (imp, ctf, sel))
    graph = json.loads(shown.output)
    assert graph and "Succeeded" in shown.output

    (project_dir / ctf / "micrographs_ctf.star").unlink()
    result = _vitrify("run-job", "--job", f"{ctf}job.star")
    assert result.exit_code == 0, result.output
    assert (project_dir / ctf / "micrographs_ctf.star").exists()
    assert not list((project_dir / ctf).rglob("*_ctf.png"))  # the same options: still no diagnostics
    assert list(read_pipeline(project_dir / "default_pipeline.star").processes) == [imp, ctf, sel]


# ---- a job process that died without an exit marker ------------------------------------------

KILLING_QUEUE = """#!/bin/bash
XXXcommandXXX &
pid=$!
for i in $(seq 1200); do [ -e XXXnameXXX.vitrify_heartbeat ] && break; sleep 0.1; done
kill -9 $pid
"""


def test_queue_job_killed_on_its_node_becomes_failed(project_dir):
    os.mkfifo(project_dir / "blocking.star")  # the job blocks reading it until it is killed
    (project_dir / "queue.sh").write_text(KILLING_QUEUE)
    project = Project.open(project_dir)
    name = project.add_job("relion.select", {"fn_mic": "blocking.star", "do_queue": "Yes",
                                             "qsub": "bash", "qsubscript": "queue.sh"})
    assert project.run_job(name) in ("Running", "Failed")
    assert (project_dir / name / HEARTBEAT_FILE).exists()  # it started, then was killed -9
    assert Project.open(project_dir).job_status(name) == "Failed"
    assert "ended without an exit marker" in (project_dir / name / "run.err").read_text()


def test_heartbeat_from_another_node_goes_stale(project_dir):
    project = Project.open(project_dir)
    name = project.add_job("relion.select", {"fn_mic": "mics.star"})
    project.record_status(name, "Running")  # submitted to a queue, not started yet
    assert project.job_status(name) == "Running"
    beat = project_dir / name / HEARTBEAT_FILE
    beat.write_text(f"4242 not-{socket.gethostname()}\n")
    assert project.job_status(name) == "Running"  # fresh: running on its node
    old = time.time() - 3600
    os.utime(beat, (old, old))
    assert project.job_status(name) == "Failed"
    assert not project.pipeline().processes[name].status == "Running"


def test_command_is_running_while_it_runs_and_failed_after_kill(project_dir):
    import signal
    import subprocess
    import sys

    os.mkfifo(project_dir / "blocking.star")  # select blocks reading it: the job stays in its run
    command = [sys.executable, "-m", "vitrify", "select", "--i", "blocking.star", "--o", "Select/job001"]
    child = subprocess.Popen(command, cwd=project_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        beat = project_dir / "Select/job001" / HEARTBEAT_FILE
        deadline = time.monotonic() + 120
        while not beat.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert beat.exists(), "the command never started its job"
        project = Project.open(project_dir)
        assert project.job_status("Select/job001/") == "Running"
        assert project.job_inputs("Select/job001/") == ["blocking.star"]  # recorded before the run
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert Project.open(project_dir).job_status("Select/job001/") == "Failed"
    assert not (project_dir / "Select/job001" / "RELION_JOB_EXIT_SUCCESS").exists()

"""Running jobs through the project: continue, abort, queue templates, crashes, concurrency, CLI."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import needs_shared, shared_fixtures
from vitrify.io.errors import InputError
from vitrify.pipeline._jobstar import read_job_star
from vitrify.pipeline._pipeline_star import read_pipeline
from vitrify.pipeline.project import Project

FIXTURES = shared_fixtures("relion4_schemes")


def _import_job(project: Project, names: list[str], **extra: str) -> str:
    (project.root / "Raw").mkdir(exist_ok=True)
    for name in names:
        (project.root / "Raw" / name).write_bytes(b"")
    options = {"fn_in_raw": "Raw/*.mrc", "is_multiframe": "No", "angpix": "1.5", "do_queue": "No"}
    return project.add_job("relion.import", {**options, **extra})


def _micrograph_names(path: Path) -> list[str]:
    from vitrify.io.star import read_star_optics

    return [str(n) for n in read_star_optics(path, "micrographs").data["rlnMicrographName"]]


def test_continue_reruns_in_the_same_directory(tmp_path):
    project = Project.open(tmp_path)
    name = _import_job(project, ["a.mrc"])
    assert project.run_job(name, wait=True) == "Succeeded"
    (tmp_path / "Raw" / "b.mrc").write_bytes(b"")
    assert project.run_job(name, continue_=True, wait=True) == "Succeeded"
    assert _micrograph_names(tmp_path / name / "micrographs.star") == ["Raw/a.mrc", "Raw/b.mrc"]
    assert read_job_star(tmp_path / name / "job.star").is_continue is True
    assert "--continue" in (tmp_path / name / "note.txt").read_text()
    state = read_pipeline(tmp_path / "default_pipeline.star")
    assert state.job_counter == 2 and list(state.processes) == [name]
    assert state.output_edges == [(name, f"{name}micrographs.star")]  # recorded once


def test_late_report_of_an_earlier_run_does_not_end_a_rerun(tmp_path):
    project = Project.open(tmp_path)
    name = _import_job(project, ["a.mrc"])
    assert project.run_job(name, wait=True) == "Succeeded"
    project._start(name, continue_=True)  # a rerun begins: markers cleared, status Running
    # the first run's process, slow under load, reports what it saw before the rerun began
    assert project.record_status(name, "Succeeded") == "Running"
    assert read_pipeline(tmp_path / "default_pipeline.star").processes[name].status == "Running"
    (tmp_path / name / "RELION_JOB_EXIT_SUCCESS").touch()  # the rerun's own marker counts
    assert project.record_status(name, "Succeeded") == "Succeeded"


def test_abort_request_ends_job_aborted(tmp_path):
    project = Project.open(tmp_path)
    name = _import_job(project, ["a.mrc"])
    assert project.run_job(name) == "Running"
    project.abort_job(name)
    assert project.wait_job(name, timeout_s=60) == "Aborted"
    assert (tmp_path / name / "RELION_JOB_EXIT_ABORTED").exists()
    assert not (tmp_path / name / "micrographs.star").exists()
    # a later run clears the markers (abort request included) and succeeds
    assert project.run_job(name, wait=True) == "Succeeded"
    assert not (tmp_path / name / "RELION_JOB_EXIT_ABORTED").exists()


def test_finished_job_processes_are_reaped(tmp_path):
    project = Project.open(tmp_path)
    name = _import_job(project, ["a.mrc"])
    assert project.run_job(name, wait=True) == "Succeeded"
    pid = int((tmp_path / name / "run.pid").read_text())
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        project.job_status(name)  # a schemer keeps asking; the ended process must not stay a zombie
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()


def test_killed_job_process_is_failed(tmp_path):
    project = Project.open(tmp_path)
    name = _import_job(project, ["a.mrc"])
    project.run_job(name)
    os.killpg(project._children[name].pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Project.open(tmp_path).job_status(name) == "Running" and time.monotonic() < deadline:
        time.sleep(0.1)  # a second Project sees the death through run.pid
    assert Project.open(tmp_path).job_status(name) == "Failed"
    assert "without an exit marker" in (tmp_path / name / "run.err").read_text()
    assert project.job_status(name) == "Failed"


QUEUE_TEMPLATE = """#!/bin/bash
#SBATCH --ntasks=XXXmpinodesXXX
#SBATCH --cpus-per-task=XXXthreadsXXX
#SBATCH --partition=XXXqueueXXX
#SBATCH --job-name=XXXnameXXX
#SBATCH --time=XXXextra1XXX
#SBATCH --error=XXXerrfileXXX
XXXcommandXXX >> XXXoutfileXXX 2>> XXXerrfileXXX
"""


def _fake_sbatch(tmp_path: Path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text('#!/bin/bash\necho "Submitted batch job 42"\nexec bash "$1"\n')
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return sbatch


def test_queue_template_is_filled_and_submitted(tmp_path, monkeypatch):
    _fake_sbatch(tmp_path, monkeypatch)
    project = Project.open(tmp_path / "project")
    (project.root / "qsub.sh").write_text(QUEUE_TEMPLATE)
    name = _import_job(project, ["a.mrc"], do_queue="Yes", qsub="sbatch", qsubscript="qsub.sh",
                       queuename="gpu-short", nr_mpi="2", nr_threads="3", qsub_extra1="01:00:00")
    assert project.run_job(name, wait=True) == "Succeeded"
    script = (project.root / name / "run_submit.script").read_text()
    assert "XXX" not in script
    for line in ("--ntasks=2", "--cpus-per-task=3", "--partition=gpu-short", "--job-name=Import/job001/",
                 "--time=01:00:00", "--error=Import/job001/run.err"):
        assert line in script
    assert "run-job --job Import/job001/job.star >> Import/job001/run.out" in script
    assert "Submitted batch job 42" in (project.root / name / "run.out").read_text()
    assert _micrograph_names(project.root / name / "micrographs.star") == ["Raw/a.mrc"]


def test_queue_without_template_fails_clearly(tmp_path):
    project = Project.open(tmp_path)
    name = _import_job(project, ["a.mrc"], do_queue="Yes", qsubscript="missing.sh")
    assert project.run_job(name, wait=True) == "Failed"
    assert "queue template 'missing.sh' not found" in (tmp_path / name / "run.err").read_text()
    assert (tmp_path / name / "RELION_JOB_EXIT_FAILURE").exists()


def _add_many(root: str, n: int, tag: str) -> None:
    project = Project.open(root)
    for i in range(n):
        project.add_job("relion.select", {"fn_mic": f"CtfFind/job{i:03d}/micrographs_ctf.star",
                                          "select_label": tag})


def _read_repeatedly(root: str, seconds: float, bad) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            read_pipeline(Path(root) / "default_pipeline.star")
        except Exception:  # noqa: BLE001 - any parse failure is what we count
            bad.value += 1


def test_concurrent_writers_never_corrupt_the_pipeline(tmp_path):
    Project.open(tmp_path)
    ctx = multiprocessing.get_context("fork")
    bad = ctx.Value("i", 0)
    workers = [ctx.Process(target=_add_many, args=(str(tmp_path), 12, tag)) for tag in ("A", "B")]
    reader = ctx.Process(target=_read_repeatedly, args=(str(tmp_path), 3.0, bad))
    for p in workers + [reader]:
        p.start()
    for p in workers + [reader]:
        p.join(120)
        assert p.exitcode == 0
    assert bad.value == 0
    state = read_pipeline(tmp_path / "default_pipeline.star")
    names = list(state.processes)
    assert sorted(names) == [f"Select/job{i:03d}/" for i in range(1, 25)]
    assert state.job_counter == 25
    tags = sorted(Project.open(tmp_path).job_options(n)["select_label"] for n in names)
    assert tags == ["A"] * 12 + ["B"] * 12
    assert len(state.input_edges) == 24


@needs_shared("relion4_schemes")
def test_add_job_from_a_scheme_template(tmp_path):
    template = FIXTURES / "prep" / "ctffind" / "job.star"
    project = Project.open(tmp_path)
    name = project.add_job_from_star(template, {"input_star_mics": "MotionCorr/job002/corrected_micrographs.star"})
    assert name == "CtfFind/job001/"
    options = project.job_options(name)
    original = read_job_star(template).options
    assert options["fn_ctffind_exe"] == original["fn_ctffind_exe"] == "/public/EM/ctffind/ctffind.exe"
    assert options["gpu_ids"] == "" and options["box"] == "512"
    assert options["input_star_mics"] == "MotionCorr/job002/corrected_micrographs.star"
    state = project.pipeline()
    assert state.input_edges == [("MotionCorr/job002/corrected_micrographs.star", name)]
    with pytest.raises(InputError, match="file not found"):
        project.add_job_from_star(tmp_path / "nothing" / "job.star")


def test_cli_run_job_and_pipeline_graph(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from vitrify.cli.main import build_app, main

    project = Project.open(tmp_path)
    name = _import_job(project, ["a.mrc"])
    failing = project.add_job("relion.refine3d", {"fn_img": f"{name}micrographs.star"})
    monkeypatch.chdir(tmp_path)
    app = build_app()
    result = CliRunner().invoke(app, ["run-job", "--job", f"{name}job.star"])
    assert result.exit_code == 0, result.output
    assert f"{name}: Succeeded" in result.output
    with pytest.raises(SystemExit) as exit_info:
        main(["run-job", "--job", f"{failing}job.star"])
    assert exit_info.value.code == 1
    assert (tmp_path / failing / "RELION_JOB_EXIT_FAILURE").exists()
    result = CliRunner().invoke(app, ["pipeline", "--png", "graph.png"])
    assert result.exit_code == 0, result.output
    for text in (name, failing, "Succeeded", "Failed", f"{name}micrographs.star"):
        assert text in result.output
    assert (tmp_path / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = CliRunner().invoke(app, ["pipeline", "--json"])
    assert result.exit_code == 0, result.output
    import json

    graph = json.loads(result.output)
    assert [(j["name"], j["status"]) for j in graph["jobs"]] == [(name, "Succeeded"), (failing, "Failed")]
    assert graph["job_edges"] == [{"from": name, "node": f"{name}micrographs.star", "to": failing}]
    assert {"job": name, "node": f"{name}micrographs.star"} in graph["output_edges"]
    with pytest.raises(SystemExit) as exit_info:
        main(["pipeline", "--project", str(tmp_path / "not_a_project")])
    assert exit_info.value.code == 1 and not (tmp_path / "not_a_project").exists()


def test_error_inside_a_job_is_in_run_err_when_the_marker_appears(tmp_path):
    project = Project.open(tmp_path)
    name = _import_job(project, [])  # nothing to import: the job itself raises an InputError
    assert project.run_job(name, wait=True) == "Failed"
    err = " ".join((tmp_path / name / "run.err").read_text().split())
    assert err.count("no files match the pattern") == 1
    assert "Traceback" not in err
    assert (tmp_path / name / "RELION_JOB_EXIT_FAILURE").exists()
    assert project.pipeline().output_edges == []


def test_a_running_job_is_not_started_twice(tmp_path):
    from vitrify.pipeline._notes import write_pid

    project = Project.open(tmp_path)
    name = _import_job(project, ["a.mrc"])
    project.record_status(name, "Running")
    write_pid(tmp_path, name, os.getpid())  # a live process owns the job
    with pytest.raises(InputError, match="still running"):
        project.run_job(name)
    assert project.job_status(name) == "Running"
    (tmp_path / name / "run.pid").unlink()
    assert project.run_job(name, wait=True) == "Succeeded"  # nobody known to run it: it may start


def test_cli_run_job_from_a_template_makes_a_new_job(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from vitrify.cli.main import build_app
    from vitrify.pipeline._jobstar import JobStar, write_job_star

    (tmp_path / "Raw").mkdir()
    (tmp_path / "Raw" / "a.mrc").write_bytes(b"")
    write_job_star(tmp_path / "Templates" / "imp" / "job.star",
                   JobStar("relion.import.movies", {"fn_in_raw": "Raw/*.mrc", "is_multiframe": "No"}))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(build_app(), ["run-job", "--job", "Templates/imp/job.star"])
    assert result.exit_code == 0, result.output
    assert "Import/job001/: Succeeded" in result.output
    assert _micrograph_names(tmp_path / "Import" / "job001" / "micrographs.star") == ["Raw/a.mrc"]
    assert [r.status for r in Project.open(tmp_path).jobs()] == ["Succeeded"]


def test_mpi_ranks_other_than_zero_do_nothing(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from vitrify.cli.main import build_app

    project = Project.open(tmp_path)
    name = _import_job(project, ["a.mrc"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "2")
    result = CliRunner().invoke(build_app(), ["run-job", "--job", f"{name}job.star"])
    assert result.exit_code == 0 and "rank 2" in result.output
    assert project.job_status(name) == "Scheduled"
    assert not (tmp_path / name / "micrographs.star").exists()
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    (tmp_path / name / "RELION_JOB_ABORT_NOW").touch()  # stale request from an earlier, finished run
    project.record_status(name, "Aborted")
    result = CliRunner().invoke(build_app(), ["run-job", "--job", f"{name}job.star"])
    assert result.exit_code == 0 and project.job_status(name) == "Succeeded"


def test_abort_arriving_while_the_job_process_starts_is_not_lost(tmp_path, monkeypatch):
    from vitrify.pipeline import pipeliner

    project = Project.open(tmp_path)
    name = _import_job(project, ["a.mrc"])
    project.record_status(name, "Running")  # as Project.run_job leaves it for the job process
    original = pipeliner._prepare

    def prepare_then_abort(job_star, continue_):
        prepared = original(job_star, continue_)
        project.abort_job(name)  # the request lands before run_job clears the markers
        return prepared

    monkeypatch.setattr(pipeliner, "_prepare", prepare_then_abort)
    monkeypatch.chdir(tmp_path)
    assert pipeliner.execute_job(f"{name}job.star") == "Aborted"
    assert (tmp_path / name / "RELION_JOB_EXIT_ABORTED").exists()
    assert not (tmp_path / name / "micrographs.star").exists()

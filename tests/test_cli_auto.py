"""`vitrify auto`: bad input in one line; on the fly as a simulated microscope writes movies, a
corrupt movie skipped with its reason, stop and rerun going on without recomputing anything."""

from __future__ import annotations

import json
import threading
import time

import pytest
from typer.testing import CliRunner

from _auto_util import corrected as _corrected
from _auto_util import ctf_movies as _ctf_movies
from _auto_util import jobs as _jobs
from _auto_util import simulate as _simulate
from _auto_util import auto as _auto
from vitrify.cli.main import build_app
from vitrify.jobs import registry
from vitrify.jobs.status import JobStatus
from vitrify.pipeline.auto import auto_dir, request_stop
from vitrify.pipeline.schemes import _state
from vitrify.sim.replay import replay_in_background, session_movies


def _invoke(*args: str):
    return CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "200"})


def _one_line_error(capsys, monkeypatch, args: list[str], *words: str) -> str:
    """Run through ``main`` (InputError -> one line, exit 1), check the line and return it."""
    from vitrify.cli.main import main

    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert exit_info.value.code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error:") and "Traceback" not in captured.err, lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_missing_session_is_one_line(tmp_path, capsys, monkeypatch):
    _one_line_error(capsys, monkeypatch, ["auto", str(tmp_path / "nowhere"), "--project", str(tmp_path / "p")],
                    "nowhere", "session folder not found")
    assert not (tmp_path / "p").exists()


def test_unknown_stage_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "s").mkdir()
    line = _one_line_error(capsys, monkeypatch, ["auto", str(tmp_path / "s"), "--project", str(tmp_path / "p"),
                                                 "--until", "4d"],
                           "--until", "'4d'", "ctf | 2d | 3d | refine")
    assert not (tmp_path / "p").exists(), line   # refused before anything is set up


def test_stage_without_its_jobs_names_what_is_missing(tmp_path, capsys, monkeypatch):
    (tmp_path / "s").mkdir()
    monkeypatch.delitem(registry.JOB_MODULES, "relion.class2d")   # as if vitrify had no 2D classification
    _one_line_error(capsys, monkeypatch, ["auto", str(tmp_path / "s"), "--project", str(tmp_path / "p"),
                                          "--until", "2d"],
                    "stage 2d needs jobs vitrify does not have yet", "class2d: relion.class2d", "expected ctf)")
    assert not (tmp_path / "p").exists()


def test_a_session_that_never_gets_metadata_ends_in_one_line(tmp_path, capsys, monkeypatch):
    from vitrify.cli.main import main

    (tmp_path / "s").mkdir()
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exit_info:       # progress on stdout, then the error alone on stderr
        main(["auto", str(tmp_path / "s"), "--project", str(tmp_path / "p"), "--until", "ctf", "--idle", "0.02",
              "--poll", "0.2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and len(err) == 1 and "no complete metadata file appeared within 1.2 s" in err[0]
    assert not (auto_dir(tmp_path / "p") / "auto.pid").exists()       # nothing left claiming the project


def test_stop_forks_send_proc_back_to_wait_after_the_stage(tmp_path):
    from vitrify.pipeline._auto_stages import match_ranker_input, route_proc
    from vitrify.pipeline.schemes.control import set_job_option
    from vitrify.pipeline.schemes.templates import read_template
    from vitrify.pipeline.schemes.star import read_scheme
    from vitrify.pipeline.schemes.templates_data import install_scheme

    project = tmp_path / "p"
    install_scheme(project, "proc")
    before = read_scheme(project / "Schemes/proc/scheme.star")
    route_proc(project, "2d")
    after = read_scheme(project / "Schemes/proc/scheme.star")
    assert after.next_node("class2d") == "WAIT" and after.next_node("inimodel3d") == "SET_myref_inimodel"
    for node in ("WAIT", "HAS_ctffind", "select_mics", "autopick", "extract", "select_parts", "CHECK_do_3d"):
        assert after.next_node(node) == before.next_node(node)
    route_proc(project, "3d")
    after = read_scheme(project / "Schemes/proc/scheme.star")
    assert after.next_node("class2d") == "select_parts" and after.next_node("inimodel3d") == "WAIT"
    route_proc(project, "refine")
    again = read_scheme(project / "Schemes/proc/scheme.star")
    assert [again.next_node(n) for n in ("refine3d", "mask_create", "postprocess")] == \
        ["mask_create", "postprocess", "WAIT"]                   # mask and post-processing after refine3d
    mask = read_template(project / "Schemes/proc/mask_create/job.star")
    assert mask.type_label == "relion.maskcreate" and mask.options["fn_in"].endswith("refine3d/run_class001.mrc")
    post = read_template(project / "Schemes/proc/postprocess/job.star").options
    assert post["fn_mask"] == "Schemes/proc/mask_create/mask.mrc"
    route_proc(project, "refine")                                # once
    assert read_scheme(project / "Schemes/proc/scheme.star").edges == again.edges
    assert match_ranker_input(project) is None                   # 200 VDAM iterations: RELION's own name
    set_job_option(project, "proc", "class2d", "nr_iter_grad", "40")
    assert match_ranker_input(project) == "Schemes/proc/class2d/run_it040_optimiser.star"
    ranker = read_template(project / "Schemes/proc/select_parts/job.star")
    assert ranker.options["fn_model"].endswith("run_it040_optimiser.star")
    assert len(again.edges) == len(before.edges) + 2 + 3         # one fork per stage, added once; refine's chain
    assert all(again.next_node(n) == before.next_node(n) for n in ("class2d", "inimodel3d"))


def test_stop_without_a_run_is_one_line(tmp_path, capsys, monkeypatch):
    line = _one_line_error(capsys, monkeypatch, ["auto", "--stop", "--project", str(tmp_path)],
                           "not a project set up by vitrify auto")
    assert str(tmp_path) in line and list(tmp_path.iterdir()) == []   # names the folder, writes nothing


@pytest.mark.slow
def test_on_the_fly_skip_stop_and_rerun(tmp_path):
    source, session, project = _simulate(tmp_path, 5), tmp_path / "session", tmp_path / "project"
    movies = session_movies(source)
    staged = tmp_path / "first"          # the microscope's first three movies, and one it never finishes
    (staged / "Movies").mkdir(parents=True)
    for movie in movies[:3]:                                         # the movie, its .xml and .mdoc
        for path in movie.parent.glob(movie.name.split(".")[0] + ".*"):
            (staged / "Movies" / path.name).symlink_to(path)
    (staged / "Movies" / "gain.mrc").symlink_to(source / "Movies" / "gain.mrc")
    (session / "Movies").mkdir(parents=True)
    (session / "Movies" / "mov_00099.tiff").write_bytes(movies[0].read_bytes()[:3000])
    microscope = replay_in_background(staged, session, interval_s=1.5, chunks=3, chunk_s=0.4)

    first = _auto(session, project, "--particle-diameter", "60")
    microscope.join()
    assert first.exit_code == 0, first.output
    assert _ctf_movies(project) == ["mov_00001.mrc", "mov_00002.mrc", "mov_00003.mrc"]
    skipped = json.loads((auto_dir(project) / "Ready" / "movies.json").read_text())["skipped"]
    assert list(skipped) == ["Movies/mov_00099.tiff"]
    assert "truncated or corrupt TIFF" in skipped["Movies/mov_00099.tiff"]
    assert "skipped Movies/mov_00099.tiff: " in first.output
    log = (auto_dir(project) / "auto.log").read_text()
    assert log.index("prep round 1: 1 in") < log.index("movie ready: Movies/mov_00003.tiff")   # on the fly
    jobs, corrected = _jobs(project), _corrected(project)
    assert jobs == ["CtfFind/job003/", "Import/job001/", "MotionCorr/job002/"] and len(corrected) == 3

    again = _auto(session, project, "--dashboard")                   # nothing new: nothing runs
    assert again.exit_code == 0, again.output
    assert "prep 0 round(s)" in again.output and "dashboard open: http://127.0.0.1:" in again.output
    assert "dashboard stopped" in again.output
    assert _jobs(project) == jobs and _corrected(project) == corrected

    for path in movies[3:]:                                          # two more movies; stopped mid-round
        for part in sorted(path.parent.glob(path.name.split(".")[0] + ".*")):
            (session / "Movies" / part.name).write_bytes(part.read_bytes())

    def stop_when_prep_starts() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if "prep round 1: 5 in" in (auto_dir(project) / "auto.log").read_text():
                request_stop(project)
                return
            time.sleep(0.05)
    stopper = threading.Thread(target=stop_when_prep_starts)
    stopper.start()
    stopped = _auto(session, project)
    stopper.join()
    assert stopped.exit_code == 0, stopped.output
    assert "vitrify auto stopped" in stopped.output
    assert _state.scheme_exit_status(project / "Schemes" / "prep") == JobStatus.ABORTED
    assert len(_ctf_movies(project)) < 5

    last = _auto(session, project)
    assert last.exit_code == 0, last.output
    assert _ctf_movies(project) == [f"mov_0000{i}.mrc" for i in range(1, 6)]
    assert _jobs(project) == jobs                                     # the same jobs, continued
    now = _corrected(project)
    assert {k: now[k] for k in corrected} == corrected and len(now) == 5   # the first three not redone

"""Faults around `vitrify auto`: a job that crashes (retried once, then failed, the rest goes on,
shown on the dashboard; not retried on bad input), a full disk (one line, nothing half-written, a rerun continues), the
session folder gone (waits, then stops; a rerun continues); nothing finished is recomputed.

The job processes get their faults from ``tests/_faults/sitecustomize.py`` (a SIGKILL at the
first output a job writes, or ``ENOSPC`` on every output it opens).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from _auto_util import auto, corrected, ctf_movies, jobs, runs, set_faults, simulate
from _schemes_util import IMPORT, make_scheme, processes, raw_micrographs, select_from
from vitrify.pipeline.auto import auto_dir
from vitrify.pipeline.schemes.runner import RunSettings, run_scheme
from vitrify.web import _jobs

RETRY = RunSettings(poll_s=0.1, echo=False, retries=1)


def test_a_crashed_job_is_run_again_once_in_its_own_directory(tmp_path, monkeypatch):
    raw_micrographs(tmp_path, "a.mrc")
    make_scheme(tmp_path, "r", jobs={"import": ("continue", *IMPORT)}, edges=[("import", "undefined")])
    plan = set_faults(monkeypatch, tmp_path, {"kill": {"Import/": 1}})
    result = run_scheme(tmp_path, "r", RETRY)
    assert result.status == "Succeeded", result.message
    assert processes(tmp_path) == {"Import/job001/": "Succeeded"}          # no second job
    assert runs(tmp_path, "Import/job001/") == 2 and '"Import/": 0' in plan.read_text()
    log = (tmp_path / "Schemes/r/schemer.log").read_text()
    assert "(Import/job001/) failed: vitrify: the job process ended without an exit marker; retrying it (1 of 1)" \
        in log
    assert (tmp_path / "Import/job001/micrographs.star").is_file()


def test_a_job_failing_twice_is_failed_shown_and_the_rest_goes_on(tmp_path, monkeypatch):
    raw_micrographs(tmp_path, "a.mrc")
    make_scheme(tmp_path, "x", jobs={"bad": ("continue", *IMPORT),
                                     "dep": ("new", *select_from("Schemes/x/bad/micrographs.star")),
                                     "good": ("continue", *IMPORT)},
                edges=[("bad", "dep"), ("dep", "good")])
    set_faults(monkeypatch, tmp_path, {"kill": {"Import/job001/": 2}})
    result = run_scheme(tmp_path, "x", RETRY)
    assert result.status == "Failed" and result.failed_jobs == ("Import/job001/",)
    assert processes(tmp_path) == {"Import/job001/": "Failed", "Import/job002/": "Succeeded"}   # dep skipped
    assert runs(tmp_path, "Import/job001/") == 2                           # run, retried once, no more
    shown = [f for f in _jobs.failures(tmp_path, _jobs.job_rows(tmp_path)) if f["kind"] == "failed"]
    assert [f["job"] for f in shown] == ["Import/job001/"]
    assert shown[0]["message"].startswith("failed also when retried:\n")
    assert "ended without an exit marker" in shown[0]["message"]


def test_a_job_failing_on_bad_input_is_not_run_again(tmp_path):
    make_scheme(tmp_path, "b", jobs={"bad": ("continue", IMPORT[0], {**IMPORT[1], "fn_in_raw": "Nothing/*.mrc"})},
                edges=[("bad", "undefined")])
    result = run_scheme(tmp_path, "b", RETRY)
    assert result.status == "Failed" and runs(tmp_path, "Import/job001/") == 1
    assert "failed on bad input: not retried" in (tmp_path / "Schemes/b/schemer.log").read_text()


def _stage(source: Path, session: Path, *numbers: int) -> None:
    """Copy movies (with their .xml/.mdoc) and the gain into the session, as the microscope writes them."""
    (session / "Movies").mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "Movies" / "gain.mrc", session / "Movies" / "gain.mrc")
    for number in numbers:
        for path in (source / "Movies").glob(f"mov_{number:05d}.*"):
            shutil.copy(path, session / "Movies" / path.name)


def _temp_files(project: Path) -> list[Path]:
    return [p for p in project.rglob(".*.tmp*") if p.is_file()]


def _move_away_during_the_run(session: Path, away: Path, project: Path, come_back: bool) -> threading.Thread:
    """Once the next run has started, move the session away (and back, then away again)."""
    starts = (auto_dir(project) / "auto.log").read_text().count("vitrify auto: ")

    def move() -> None:
        deadline = time.monotonic() + 60
        while (auto_dir(project) / "auto.log").read_text().count("vitrify auto: ") == starts:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        time.sleep(0.5)
        session.rename(away)
        if come_back:
            time.sleep(0.6)
            away.rename(session)
            time.sleep(0.6)
            session.rename(away)
    thread = threading.Thread(target=move)
    thread.start()
    return thread


@pytest.mark.slow
def test_auto_through_a_full_disk_and_a_lost_session(tmp_path, monkeypatch):
    source, session, project = simulate(tmp_path, 3), tmp_path / "session", tmp_path / "project"
    _stage(source, session, 1, 2)
    first = auto(session, project, "--particle-diameter", "60")
    assert first.exit_code == 0, first.output
    assert ctf_movies(project) == ["mov_00001.mrc", "mov_00002.mrc"]
    made, before = jobs(project), corrected(project)

    _stage(source, session, 3)                                        # the disk fills during motion correction
    set_faults(monkeypatch, tmp_path, {"disk_full": ["MotionCorr/"]})
    full = auto(session, project)
    assert full.exit_code == 1, full.output
    assert "vitrify auto failed" in full.output and "the disk is full (MotionCorr/job002/ ran out of space, " \
        "also when retried" in full.output and "then the same command again" in full.output
    assert _temp_files(project) == [] and corrected(project) == before    # nothing half-written, nothing redone
    assert jobs(project) == made and ctf_movies(project) == ["mov_00001.mrc", "mov_00002.mrc"]
    shown = {f["job"]: f["message"] for f in _jobs.failures(project, _jobs.job_rows(project)) if f["kind"] == "failed"}
    assert "No space left on device" in shown["MotionCorr/job002/"] and "retried" in shown["MotionCorr/job002/"]
    assert runs(project, "MotionCorr/job002/") == 1 + 2                 # the first round, then run and retried
    assert f"{project}: the disk is full (MotionCorr/job002/" in shown["vitrify auto"]

    set_faults(monkeypatch, tmp_path, {})                             # space freed: the same command goes on
    again = auto(session, project)
    assert again.exit_code == 0, again.output
    assert ctf_movies(project) == ["mov_00001.mrc", "mov_00002.mrc", "mov_00003.mrc"] and jobs(project) == made
    now = corrected(project)
    assert {k: now[k] for k in before} == before and len(now) == 3
    assert not [f for f in _jobs.failures(project, _jobs.job_rows(project)) if f["kind"] == "failed"]

    away = tmp_path / "unmounted"                                     # the session goes, comes back, goes for good
    mover = _move_away_during_the_run(session, away, project, come_back=True)
    lost = auto(session, project)
    mover.join()
    assert lost.exit_code == 1, lost.output
    log = (auto_dir(project) / "auto.log").read_text()
    assert log.count("has gone (unmounted or moved?)") == 2 and log.count("is back after") == 1
    assert f"{session}: the session folder has gone (for " in lost.output, lost.output
    assert _jobs.failures(project, [])[0]["message"].startswith(f"{session}: the session folder has gone")
    away.rename(session)                                              # back: nothing left to do, nothing redone
    last = auto(session, project)
    assert last.exit_code == 0, last.output
    assert jobs(project) == made and corrected(project) == now and "prep 0 round(s)" in last.output


def test_a_full_disk_met_by_vitrify_auto_itself_ends_the_run_in_one_line(tmp_path, monkeypatch):
    """Its own records (``Auto/Ready/movies.json``) cannot be written: the error names the disk; a log
    that cannot be written still says its lines; the session folder gone is waited for, then an error."""
    import errno

    from vitrify.pipeline import auto as auto_module
    from vitrify.pipeline import movie_watch
    from vitrify.pipeline.schemes.templates_data import install_scheme

    project, session = tmp_path / "p", tmp_path / "s"
    install_scheme(project, "prep")
    (session / "Movies").mkdir(parents=True)
    (session / "Movies" / "mov_1.tiff").write_bytes(b"II*\0not a movie")      # skipped: recorded
    (project / "Auto").mkdir()
    (project / "Auto" / "auto.log").mkdir()                                   # the log cannot be written
    said = []
    log = auto_module._Log(project / "Auto" / "auto.log", said.append)

    def no_space(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(movie_watch, "atomic_write", no_space)
    run = auto_module._Session(project, session, "Movies/*.tiff", "ctf",
                               auto_module.AutoSettings(stable_s=0, poll_s=0.1, idle_s=5), log)
    run.step()
    error = run.failed()
    assert error is not None and str(error).startswith(f"{project}: the disk is full (writing ")
    assert "movies.json" in str(error) and "MiB free now" in str(error) and any("disk is full" in s for s in said)
    assert not (project / "Auto" / "Ready" / "movies.json").exists()

    ticks = iter([0.0, 1.0, 6.0])                                            # the session folder goes
    gone = auto_module._Session(project, session, "Movies/*.tiff", "ctf",
                                auto_module.AutoSettings(stable_s=0, poll_s=0.1, idle_s=5), log)
    gone.presence.clock = lambda: next(ticks)
    session.rename(tmp_path / "away")
    gone.scan()
    gone.scan()
    assert gone.failed() is None and not gone.done()                        # waits up to --idle
    gone.scan()
    assert "the session folder has gone (for 6 s)" in str(gone.failed())


def test_the_dashboard_shows_a_session_gone_while_waited_for_and_the_last_stop_reason(tmp_path):
    from vitrify.web._auto import auto_problems

    log = tmp_path / "Auto" / "auto.log"
    log.parent.mkdir()
    lines = ["vitrify auto: /s -> /p, until stage ctf, idle 600 s",
             "the session folder /s has gone (unmounted or moved?): no new movie is read; ...",
             "the session folder /s is back after 5 s: reading movies again",
             "the session folder /s has gone (unmounted or moved?): no new movie is read; ..."]

    def write(*messages: str) -> list[str]:
        log.write_text("".join(f"2026-12-07 01:00:00.000 +1.0s {m}\n" for m in messages))
        return [p["message"] for p in auto_problems(tmp_path)]
    assert write(*lines[:3]) == []                                           # gone, then back: nothing
    assert write(*lines) == [lines[3]]                                       # gone now: shown while waited for
    assert write(*lines, "vitrify auto failed: /s: the session folder has gone (for 600 s)") == \
        ["/s: the session folder has gone (for 600 s)"]                      # the run's stop reason
    assert write(*lines, "vitrify auto failed: x", "vitrify auto: /s -> /p, until stage ctf") == []   # a new run

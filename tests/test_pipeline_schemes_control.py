"""The schemer without jobs: operator-only loops, the CLI, lock, reset, set_var, status, abort."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from _schemes_util import load, make_scheme
from vitrify.cli.main import build_app
from vitrify.io.errors import InputError
from vitrify.pipeline.schemes import control
from vitrify.pipeline.schemes.lock import SchemeLock, lock_dir
from vitrify.pipeline.schemes.runner import RunSettings, run_scheme

FAST = RunSettings(poll_s=0.05, echo=False, lock_timeout_s=0.5)


def _counter(root, limit=3.0, name="ops"):
    """INC → CHECK ─true→ INC, ─false→ STOP (exit). Empty jobs table."""
    return make_scheme(
        root, name, floats={"count": 0.0, "limit": limit}, bools={"more": False},
        strings={"flag": "flags/done.txt"},
        operators=[("INC", "float=plus", "count", "count", "1"),          # literal 1 (not 0)
                   ("CHECK", "bool=lt", "more", "count", "limit"),
                   ("TOUCH", "touch_file", "undefined", "flag", "undefined"),
                   ("STOP", "exit", "undefined", "undefined", "undefined")],
        edges=[("INC", "CHECK"), ("CHECK", "TOUCH", "INC", "more"), ("TOUCH", "STOP")])


def _invoke(*args):
    return CliRunner().invoke(build_app(), list(args))


def test_operator_only_loop_runs_from_the_cli(tmp_path):
    _counter(tmp_path)
    result = _invoke("schemer", "--scheme", "ops", "--run", "--project", str(tmp_path))
    assert result.exit_code == 0, result.output
    scheme = load(tmp_path, "ops")
    assert scheme.floats["count"] == 3.0 and scheme.bools["more"] is False
    assert scheme.floats_reset["count"] == 0.0
    assert scheme.current_node == "STOP"
    assert (tmp_path / "flags/done.txt").exists()
    assert (tmp_path / "Schemes/ops/RELION_JOB_EXIT_SUCCESS").exists()
    log = (tmp_path / "Schemes/ops/schemer.log").read_text()
    assert log.count("+ INC: count ->") == 3 and "stopped by STOP" in log
    assert log.count("CHECK -> INC") == 2 and log.count("CHECK -> TOUCH") == 1
    assert not lock_dir(tmp_path, "ops").exists()
    assert not (tmp_path / "default_pipeline.star").exists()   # no jobs: no pipeline needed


def test_reset_set_var_and_status_json(tmp_path):
    _counter(tmp_path)
    run_scheme(tmp_path, "ops", FAST)
    out = _invoke("schemer", "--scheme", "ops", "--reset", "--set_var", "limit=5", "--status", "--json",
                  "--project", str(tmp_path))
    assert out.exit_code == 0, out.output
    status = json.loads(out.output[out.output.index("{"):])
    assert status["current_node"] == "INC" and status["state"] == "finished"
    assert status["variables"]["count"] == 0.0 and status["variables"]["limit"] == 5.0
    assert (tmp_path / "Schemes/ops/scheme.star.bck").exists()
    run_scheme(tmp_path, "ops", FAST)
    assert load(tmp_path, "ops").floats["count"] == 5.0
    bad = _invoke("schemer", "--scheme", "ops", "--set_var", "more=maybe", "--project", str(tmp_path))
    assert bad.exit_code == 1 and "more" in str(bad.exception or bad.output)


def test_set_current_node_restarts_there(tmp_path):
    _counter(tmp_path)
    control.set_current_node(tmp_path, "ops", "TOUCH")
    run_scheme(tmp_path, "ops", FAST)
    scheme = load(tmp_path, "ops")
    assert scheme.floats["count"] == 0.0 and (tmp_path / "flags/done.txt").exists()
    with pytest.raises(InputError, match="no node 'NOPE'"):
        control.set_current_node(tmp_path, "ops", "NOPE")


def test_a_locked_scheme_cannot_run_twice(tmp_path):
    _counter(tmp_path)
    with SchemeLock(tmp_path, "ops"):
        with pytest.raises(InputError, match="locked by process"):
            run_scheme(tmp_path, "ops", FAST)
        with pytest.raises(InputError, match="locked"):
            control.set_variables(tmp_path, "ops", {"limit": "1"}, also_reset=False)
        assert control.scheme_status(tmp_path, "ops")["state"] == "running"
    assert run_scheme(tmp_path, "ops", FAST).status == "Succeeded"


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    _counter(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    directory = lock_dir(tmp_path, "ops")
    directory.mkdir()
    import socket

    (directory / "lock_scheme").write_text(f"{dead.pid} {socket.gethostname()}\n")
    assert control.scheme_status(tmp_path, "ops")["state"] != "running"
    assert run_scheme(tmp_path, "ops", FAST).status == "Succeeded"
    assert not directory.exists()


def test_abort_stops_a_waiting_scheme_and_restart_goes_on(tmp_path):
    make_scheme(tmp_path, "w", floats={"secs": 60.0, "n": 0.0},
                operators=[("W1", "wait", "undefined", "secs", "undefined"),
                           ("INC", "float=plus", "n", "n", "1"),
                           ("W2", "wait", "undefined", "secs", "undefined"),
                           ("DONE", "float=plus", "n", "n", "10")],
                edges=[("W1", "INC"), ("INC", "W2"), ("W2", "DONE")])
    results = []
    thread = threading.Thread(target=lambda: results.append(run_scheme(tmp_path, "w", FAST)))
    thread.start()
    deadline = time.monotonic() + 10
    while load(tmp_path, "w").floats["n"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    start = time.monotonic()
    control.abort_scheme(tmp_path, "w")
    thread.join(timeout=15)
    assert results[0].status == "Aborted" and time.monotonic() - start < 5
    assert (tmp_path / "Schemes/w/RELION_JOB_EXIT_ABORTED").exists()
    assert load(tmp_path, "w").current_node == "DONE"
    assert control.scheme_status(tmp_path, "w")["state"] == "aborted"
    result = run_scheme(tmp_path, "w", FAST)        # restart: the abort marker is cleared
    assert result.status == "Succeeded" and load(tmp_path, "w").floats["n"] == 11.0


def test_operator_error_at_run_time_fails_with_the_node(tmp_path):
    make_scheme(tmp_path, "bad", floats={"x": 0.0}, strings={"spec": "missing.star,t,rlnX"},
                operators=[("READ", "float=read_star", "x", "spec", "undefined")], edges=[("READ", "READ")])
    result = run_scheme(tmp_path, "bad", FAST)
    assert result.status == "Failed" and "READ" in result.message and "missing.star" in result.message
    out = _invoke("schemer", "--scheme", "bad", "--run", "--project", str(tmp_path))
    assert out.exit_code == 1


def test_missing_scheme_is_an_input_error(tmp_path):
    out = _invoke("schemer", "--scheme", "nope", "--status", "--project", str(tmp_path))
    assert out.exit_code != 0
    with pytest.raises(InputError, match="no scheme nope"):
        run_scheme(tmp_path, "nope", FAST)


def test_init_copies_the_template_into_the_project(tmp_path):
    out = _invoke("schemer", "--scheme", "prep", "--init", "prep", "--set_var", "wait_sec=5",
                  "--status", "--json", "--project", str(tmp_path))
    assert out.exit_code == 0, out.output
    status = json.loads(out.output[out.output.index("{"):])
    assert status["current_node"] == "WAIT" and status["variables"]["wait_sec"] == 5.0
    assert [j["node"] for j in status["jobs"]] == ["ctffind", "importmovies", "motioncorr"]
    assert all(j["status"] == "not started" for j in status["jobs"])


def test_relion_schemer_forms_of_the_edits(tmp_path):
    _counter(tmp_path)
    project = ["--project", str(tmp_path)]
    out = _invoke("schemer", "--scheme", "ops", "--set_var", "limit", "--value", "7",
                  "--original_value", "6", *project)
    assert out.exit_code == 0, out.output
    scheme = load(tmp_path, "ops")
    assert scheme.floats["limit"] == 7.0 and scheme.floats_reset["limit"] == 6.0
    out = _invoke("schemer", "--scheme", "ops", "--set_var", "flag=x.txt", "--also_reset", *project)
    assert out.exit_code == 0 and load(tmp_path, "ops").strings_reset["flag"] == "x.txt"
    out = _invoke("schemer", "--scheme", "ops", "--set_job_mode", "nojob", "--value", "new", *project)
    assert out.exit_code == 1 and "no job 'nojob'" in str(out.exception)
    out = _invoke("schemer", "--scheme", "ops", "--set_has_started", "nojob", *project)
    assert out.exit_code == 1 and "needs --value" in str(out.exception)


def test_set_job_mode_and_has_started(tmp_path):
    from _schemes_util import IMPORT

    make_scheme(tmp_path, "j", jobs={"imp": ("continue", *IMPORT)}, edges=[("imp", "undefined")])
    project = ["--project", str(tmp_path)]
    assert _invoke("schemer", "--scheme", "j", "--set_job_mode", "imp", "--value", "new", *project).exit_code == 0
    assert _invoke("schemer", "--scheme", "j", "--set_has_started", "imp", "--value", "True", *project).exit_code == 0
    job = load(tmp_path, "j").jobs["imp"]
    assert job.mode == "new" and job.has_started is True
    out = _invoke("schemer", "--scheme", "j", "--set_job_mode", "imp", "--value", "later", *project)
    assert out.exit_code == 1 and "new or continue" in str(out.exception)


def test_build_a_scheme_with_add_and_run_it(tmp_path):
    from _schemes_util import IMPORT, write_template

    p = ["--scheme", "b", "--project", str(tmp_path)]
    steps = [["--add", "variable", "--name", "n", "--value", "0"],
             ["--add", "variable", "--name", "limit", "--value", "2"],
             ["--add", "variable", "--name", "more", "--value", "false"],
             ["--add", "operator", "--name", "INC", "--type", "float=plus", "--i", "n", "--i2", "1", "--o", "n"],
             ["--add", "operator", "--name", "CHECK", "--type", "bool=lt", "--i", "n", "--i2", "limit",
              "--o", "more"],
             ["--add", "operator", "--name", "STOP", "--type", "exit"],
             ["--add", "edge", "--i", "INC", "--o", "CHECK"],
             ["--add", "fork", "--i", "CHECK", "--bool", "more", "--o", "INC", "--o2", "STOP"]]
    for step in steps:
        out = _invoke("schemer", *p, *step)
        assert out.exit_code == 0, (step, out.output, out.exception)
    scheme = load(tmp_path, "b")
    assert scheme.bools == {"more": False} and scheme.current_node == "INC"
    bad = _invoke("schemer", *p, "--add", "operator", "--name", "X", "--type", "float=plus", "--i", "nope",
                  "--o", "n")
    assert bad.exit_code == 1 and "'nope' is not a float variable" in str(bad.exception)
    bad = _invoke("schemer", *p, "--add", "edge", "--i", "STOP", "--o", "NOWHERE")
    assert bad.exit_code == 1 and "NOWHERE" in str(bad.exception)
    assert load(tmp_path, "b") == scheme                           # refused additions not written
    write_template(tmp_path / "tpl" / "job.star", *IMPORT)
    out = _invoke("schemer", *p, "--add", "job", "--i", str(tmp_path / "tpl"), "--mode", "new")
    assert out.exit_code == 0 and load(tmp_path, "b").jobs["tpl"].mode == "new"
    assert (tmp_path / "Schemes/b/tpl/job.star").exists()
    assert run_scheme(tmp_path, "b", FAST).status == "Succeeded"
    assert load(tmp_path, "b").floats["n"] == 2.0

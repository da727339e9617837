"""Errors, atomic writes, job markers and the CLI's handling of user errors."""

from __future__ import annotations

import os
import stat

import subprocess
import sys

import pytest

from vitrify.io.atomic import atomic_path, atomic_write
from vitrify.io.errors import InputError
from vitrify.jobs.base import EXIT_ABORTED, EXIT_FAILURE, EXIT_SUCCESS, ABORT_NOW, JobAborted, check_abort, run_job


def test_input_error_names_file_field_and_expectation():
    err = InputError("not a number", path="a.star", field="rlnVoltage", expected="a float")
    assert str(err) == "a.star: rlnVoltage: not a number (expected a float)"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write(target, "first")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("killed")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_gives_files_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        target = atomic_write(tmp_path / "shared.star", "data_\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # group can read a shared project


def _succeed(options, job_dir):
    (job_dir / "result.txt").write_text(str(options))
    return 42


def _fail(options, job_dir):
    raise ValueError("boom")


def _abort(options, job_dir):
    (job_dir / ABORT_NOW).touch()
    check_abort(job_dir)


@pytest.mark.parametrize("func, marker, exc", [
    (_succeed, EXIT_SUCCESS, None),
    (_fail, EXIT_FAILURE, ValueError),
    (_abort, EXIT_ABORTED, JobAborted),
])
def test_run_job_writes_exactly_one_exit_marker(tmp_path, func, marker, exc):
    job_dir = tmp_path / "Job" / "job001"
    if exc is None:
        assert run_job(func, "opts", job_dir) == 42
    else:
        with pytest.raises(exc):
            run_job(func, "opts", job_dir)
    markers = {p.name for p in job_dir.iterdir() if p.name.startswith("RELION_JOB_EXIT")}
    assert markers == {marker}
    assert (job_dir / "run.log").read_text()


def test_cli_help_lists_commands_and_user_errors_exit_1_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vitrify", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "simulate" in out.stdout
    bad = tmp_path / "missing.pdb"
    out = subprocess.run([sys.executable, "-m", "vitrify", "simulate", "particles", "--structure", str(bad),
                          "--n", "2", "--box", "32", "--pixel-size", "2", "--snr", "1", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "missing.pdb" in out.stderr

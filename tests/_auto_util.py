"""Helpers for the `vitrify auto` tests: a tiny simulated session, the command, what it made, faults."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from vitrify.cli.main import build_app
from vitrify.io.star import read_star

FAULTS_DIR = Path(__file__).parent / "_faults"


def invoke(*args: str):
    return CliRunner().invoke(build_app(), list(args), env={"COLUMNS": "200"})


def simulate(tmp_path: Path, n: int) -> Path:
    """``n`` movies of adk (128² px, 2 frames, 1 particle) with EPU XML, mdoc and gain; their folder."""
    source = tmp_path / "microscope"
    result = invoke("--quiet", "simulate", "movies", "--structure", "adk", "--n", str(n), "--size", "128",
                    "--frames", "2", "--particles", "1", "--device", "cpu", "--seed", "3", "--out", str(source))
    assert result.exit_code == 0, result.output
    return source


def auto(session: Path, project: Path, *extra: str):
    """``vitrify auto`` to the CTF stage, with short waits."""
    return invoke("auto", str(session), "--project", str(project), "--until", "ctf", "--idle", "0.04",
                  "--stable", "0.5", "--poll", "0.2", *extra)


def ctf_movies(project: Path) -> list[str]:
    table = read_star(project / "CtfFind" / "job003" / "micrographs_ctf.star")["micrographs"]
    return sorted(name.rsplit("/", 1)[-1] for name in table["rlnMicrographName"])


def corrected(project: Path) -> dict[str, int]:
    """{motion-corrected micrograph: mtime (ns)}."""
    return {p.name: p.stat().st_mtime_ns for p in (project / "MotionCorr" / "job002").rglob("mov_?????.mrc")}


def jobs(project: Path) -> list[str]:
    return sorted(read_star(project / "default_pipeline.star")["pipeline_processes"]["rlnPipeLineProcessName"])


def runs(project: Path, job: str) -> int:
    """How many times a job was launched (commands in its note.txt)."""
    return (project / job / "note.txt").read_text().count("run-job")


def set_faults(monkeypatch, tmp_path: Path, plan: dict) -> Path:
    """Job processes started from now on follow ``plan`` (``tests/_faults/sitecustomize.py``)."""
    path = tmp_path / "faults.json"
    path.write_text(json.dumps(plan))
    monkeypatch.setenv("VITRIFY_TEST_FAULTS", str(path))
    paths = [str(FAULTS_DIR), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(dict.fromkeys(paths)))
    return path

"""`vitrify demo` end to end on a tiny session: simulate movies, written into the session over time
while vitrify auto (mdcatch, prep and proc in rounds) processes them → 2D classes; then the report's
numbers checked against the truth files and the job outputs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from vitrify.cli._demo_pipeline import PipelineDemo, run_pipeline_demo
from vitrify.cli._demo_pipeline_report import print_pipeline_report
from vitrify.io.star import read_star


def _picks(project: Path, autopick_dir: str) -> int:
    files = read_star(project / autopick_dir / "autopick.star")["coordinate_files"]
    return sum(len(next(iter(read_star(project / name).values()))) for name in files["rlnMicrographCoordinates"])


@pytest.mark.slow
def test_tiny_demo_runs_to_2d_and_reports_truth(tmp_path):
    from vitrify.pipeline.project import Project
    from vitrify.pipeline.schemes import control

    out = tmp_path / "demo"
    demo = PipelineDemo(movies=2, size_px=768, particles_per_movie=12, frames=4, classes=2, iterations=5,
                        interval_s=2.0, idle_min=0.1, batch=1, until="2d")
    summary = run_pipeline_demo(Console(quiet=True), out, demo)
    project = out / "project"

    # vitrify auto ran the schemes in rounds through the pipeliner; proc went back to WAIT after 2D
    proc = control.scheme_status(project, "proc")
    assert proc["state"] == "finished" and proc["current_node"] == "WAIT"
    assert summary["schemes"]["proc"] == {"state": "finished", "current_node": "WAIT", "current_nr_parts": 0.0,
                                          "min_nr_parts_3d": demo.min_particles_3d}   # stopped after 2D
    assert summary["schemes"]["prep"]["current_node"] == "WAIT"
    assert {j["node"]: j["has_started"] for j in proc["jobs"]}["select_parts"] is False
    statuses = {record.name: record.status for record in Project.open(project).jobs()}
    assert summary["jobs"]["class2d"].startswith("Class2D/") and summary["failed"] == {}
    assert all(status == "Succeeded" for status in statuses.values())
    classified = sum(name.startswith("Class2D/") for name in statuses)
    assert len(statuses) == 6 + classified and classified >= 1    # import ... extract once, 2D per round
    fly = summary["on_the_fly"]
    assert fly["movies_written"] == 2 and fly["stage"] == "2d" and fly["behind_s"] > 0
    assert fly["rounds"][0]["scheme"] == "prep" and all(r["status"] == "succeeded" for r in fly["rounds"])
    assert sum(r["scheme"] == "proc" for r in fly["rounds"]) >= classified

    # the report's numbers against the truth and the job outputs, recomputed here
    truth = read_star(out / "microscope" / "truth.star")
    assert summary["movies"] == 2 == len(truth["micrographs"])
    assert summary["true_particles"] == len(truth["particles"]) == truth["micrographs"]["vtfParticleCount"].sum()
    assert summary["picking"]["picks"] == _picks(project, summary["jobs"]["autopick"])
    assert 0 < summary["picking"]["found"] <= min(summary["picking"]["picks"], summary["true_particles"])
    extracted = read_star(project / summary["jobs"]["extract"] / "particles.star")["particles"]
    assert summary["extracted"] == len(extracted) and summary["extracted_real"] <= summary["extracted"]
    classes = summary["class2d"]["table"]
    data = read_star(summary["class2d"]["data_star"])["particles"]
    assert sum(row["particles"] for row in classes) == len(data) == summary["extracted"]
    assert Path(summary["class2d"]["gallery_png"]).is_file()
    real = sum(row["particles"] * row["real"] for row in classes)
    assert np.isclose(real, summary["extracted_real"])

    # physics: the drift and the defocus found are close to the simulated ones
    assert summary["motion"]["movies"] == 2 and summary["motion"]["median_rms_px"] < 0.5
    assert summary["motion"]["median_drift_px"] == pytest.approx(6.0, abs=0.5)   # the simulator's 6 px path
    assert summary["ctf"]["median_abs_defocus_error_nm"] < 100

    assert json.loads((out / "demo_report.json").read_text())["extracted"] == summary["extracted"]
    assert [t["step"] for t in summary["steps"]] == ["simulate", "auto"]
    assert summary["cpu_s"] >= sum(t["cpu_s"] for t in summary["steps"]) > 0
    text = io.StringIO()
    print_pipeline_report(Console(file=text, width=300), summary)
    assert summary["class2d"]["gallery_png"] in text.getvalue()
    assert "vitrify schemer --scheme proc --status" in text.getvalue() and "On the fly." in text.getvalue()

"""A real chain in a project: simulated micrographs → Import → CtfFind, then an abort mid-run."""

from __future__ import annotations

import time

import pytest

from vitrify.pipeline._pipeline_star import read_pipeline
from vitrify.pipeline.project import Project


def _wait_for_start(path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and " start " in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never showed the job start")


@pytest.mark.slow
def test_simulated_micrographs_through_import_and_ctffind(tmp_path):
    from typer.testing import CliRunner

    from vitrify.cli.main import build_app
    from vitrify.io.star import read_star_optics

    result = CliRunner().invoke(build_app(), [
        "simulate", "micrographs", "--n", "2", "--size", "256", "--particles", "5", "--device", "cpu",
        "--out", str(tmp_path / "Raw")])
    assert result.exit_code == 0, result.output
    project = Project.open(tmp_path)
    imp = project.add_job("relion.import", {
        "fn_in_raw": "Raw/Micrographs/*.mrc", "is_multiframe": "No", "angpix": "1.5", "kV": "300",
        "Cs": "2.7", "Q0": "0.1"})
    ctf_options = {"input_star_mics": f"{imp}micrographs.star", "box": "128", "resmin": "30",
                   "resmax": "6", "dfmin": "5000", "dfmax": "30000", "dfstep": "2500", "dast": "100"}
    ctf = project.add_job("relion.ctffind.ctffind4", ctf_options)
    assert [project.run_job(name, wait=True) for name in (imp, ctf)] == ["Succeeded", "Succeeded"]

    table = read_star_optics(tmp_path / ctf / "micrographs_ctf.star", "micrographs").merged
    assert list(table["rlnMicrographName"]) == ["Raw/Micrographs/mic_00001.mrc", "Raw/Micrographs/mic_00002.mrc"]
    assert (table["rlnDefocusU"] >= 5000).all() and (table["rlnDefocusU"] <= 30000 * 1.5).all()
    state = read_pipeline(tmp_path / "default_pipeline.star")
    assert {p.name: p.status for p in state.processes.values()} == {imp: "Succeeded", ctf: "Succeeded"}
    assert state.input_edges == [(f"{imp}micrographs.star", ctf)]
    assert (ctf, f"{ctf}micrographs_ctf.star") in state.output_edges
    assert state.nodes[f"{ctf}micrographs_ctf.star"] == "MicrographsData.star.relion.ctf"
    assert state.nodes[f"{imp}micrographs.star"] == "MicrographsData.star.relion"

    again = project.add_job("relion.ctffind", ctf_options)
    assert again == "CtfFind/job003/"
    assert project.run_job(again) == "Running"
    _wait_for_start(tmp_path / again / "run.log")
    assert project.job_status(again) == "Running"
    project.abort_job(again)
    assert project.wait_job(again, timeout_s=120) == "Aborted"
    assert (tmp_path / again / "RELION_JOB_EXIT_ABORTED").exists()
    assert not (tmp_path / again / "micrographs_ctf.star").exists()
    assert [r.status for r in project.jobs()] == ["Succeeded", "Succeeded", "Aborted"]

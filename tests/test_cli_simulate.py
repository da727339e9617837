"""``vitrify simulate ...`` from the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vitrify.cli.main import build_app, main
from vitrify.io.mrc import read_mrc
from vitrify.io.star import read_star


def test_simulate_particles_writes_the_contract_files(tmp_path):
    out = tmp_path / "sim"
    result = CliRunner().invoke(build_app(), [
        "simulate", "particles", "--structure", "adk", "--n", "30", "--box", "48",
        "--pixel-size", "2.0", "--snr", "0.2", "--junk", "0.2", "--seed", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("particles.star", "particles.mrcs", "truth_map.mrc", "truth.star",
                 "RELION_JOB_EXIT_SUCCESS", "run.log"):
        assert (out / name).exists(), name
    images, pixel = read_mrc(out / "particles.mrcs")
    assert images.shape == (30, 48, 48) and pixel == pytest.approx(2.0)
    truth = read_star(out / "truth.star")["particles"]
    assert {"rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
            "rlnOriginYAngst", "vtfMapIndex", "vtfJunkKind"} <= set(truth.columns)


def test_compressed_structure_file_and_no_ctf(tmp_path, adk_pdb):
    import bz2

    packed = tmp_path / "adk.pdb.bz2"
    packed.write_bytes(bz2.compress(adk_pdb.read_bytes()))
    out = tmp_path / "sim"
    result = CliRunner().invoke(build_app(), [
        "simulate", "particles", "--structure", str(packed), "--n", "8", "--box", "48",
        "--pixel-size", "2", "--snr", "1", "--no-ctf", "--no-noise", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "rlnDefocusU" not in read_star(out / "particles.star")["particles"].columns


@pytest.mark.parametrize("argv,needle", [
    (["--structure", "missing.pdb"], "structure file not found"),
    (["--snr", "0"], "SNR must be > 0"),
    (["--box", "33"], "--box"),
    (["--noise", "pink"], "noise colour"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "particles", "--n", "4", "--out", str(tmp_path / "x"), *argv])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_demo_runs_end_to_end_small(tmp_path):
    from rich.console import Console

    from vitrify.cli._demo_report import print_report
    from vitrify.cli.demo import run_demo

    out = tmp_path / "demo"
    summary = run_demo(out, structure="adk", n=60, box=32, pixel=3.0, snr=1.0, junk=0.2, classes=2,
                       iterations=1, device="cpu")
    assert (out / "Simulate" / "job001" / "RELION_JOB_EXIT_SUCCESS").exists()
    assert (out / "Reconstruct" / "job002" / "reconstruction.mrc").exists()
    assert summary["resolution_05"] < 30.0
    truth = read_star(out / "Simulate" / "job001" / "truth.star")["particles"]
    assert summary["junk_images"] == (truth["vtfJunkKind"] != "none").sum() > 0
    console = Console(record=True, width=100)
    print_report(console, out, summary, 3.0)
    text = " ".join(console.export_text().split())  # paragraphs are wrapped
    assert str(out / "Reconstruct" / "job002" / "reconstruction.mrc") in text
    assert f"agree down to {summary['resolution_05']:.1f} Å (FSC 0.5)" in text
    assert "twice the pixel size" in text and "6.0 Å" in text
    assert f"0.5 at {summary['resolution_05']:.2f} A" in (out / "Reconstruct" / "job002" / "run.log").read_text()
    if "class2d_data" in summary:
        assert (out / "Class2D" / "job003" / "RELION_JOB_EXIT_SUCCESS").exists()
        table = summary["class_table"]
        data = read_star(summary["class2d_data"])["particles"]
        assert table["particles"].sum() == len(data) == 60
        assert (table["particles"] * table["junk"]).round().sum() == summary["junk_images"]
        assert table["share"].sum() == pytest.approx(1.0)
        assert f"{summary['junk_images']} of the 60 images were simulated junk" in text


@pytest.mark.parametrize("kind,star", [("micrographs", "micrographs.star"), ("movies", "movies.star")])
def test_simulate_micrographs_and_movies_commands(tmp_path, kind, star):
    out = tmp_path / kind
    result = CliRunner().invoke(build_app(), [
        "simulate", kind, "--n", "1", "--size", "128", "--particles", "3", "--frames", "3",
        "--pixel-size", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    blocks = read_star(out / star)
    assert list(blocks)[0] == "optics" and len(blocks[list(blocks)[1]]) == 1
    truth = read_star(out / "truth.star")
    assert {"micrographs", "particles"} <= set(truth)
    if kind == "movies":
        assert len(truth["global_motion"]) == 3 and (out / "Movies" / "gain.mrc").exists()


def _vitrify(*argv: str, env: dict) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "vitrify", *argv], capture_output=True, text=True,
                          env=env, timeout=300)


def test_progress_bars_quiet_and_the_job_log(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k != "VITRIFY_QUIET"} | {"FORCE_COLOR": "1"}
    args = ["simulate", "particles", "--n", "12", "--box", "32", "--pixel-size", "3", "--snr", "1",
            "--junk", "0.25", "--device", "cpu"]
    loud = _vitrify(*args, "--out", str(tmp_path / "loud"), env=env)
    assert loud.returncode == 0, loud.stderr
    assert "projecting particles" in loud.stdout  # a bar is drawn on a (forced) terminal
    quiet = _vitrify("--quiet", *args, "--out", str(tmp_path / "quiet"), env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "projecting" not in quiet.stdout + quiet.stderr
    assert quiet.stdout.strip().startswith("wrote 12 images")
    log = (tmp_path / "quiet" / "run.log").read_text()
    assert "simulate particles on cpu" in log and "finished" in log
    junk = (read_star(tmp_path / "quiet" / "truth.star")["particles"]["vtfJunkKind"] != "none").sum()
    assert f"wrote 12 images ({junk} junk) to particles.star + particles.mrcs" in log


def test_no_bar_off_a_terminal(capsys, monkeypatch):
    from vitrify import _progress

    monkeypatch.setitem(_progress._state, "quiet", False)  # bars on, as without --quiet
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    assert list(_progress.track(range(3), "counting")) == [0, 1, 2]
    assert capsys.readouterr().out == ""  # captured output is not a terminal: no bar, no blank lines


def test_seed_fixes_the_data_set(tmp_path):
    def simulate(name: str, seed: str):
        out = tmp_path / name
        result = CliRunner().invoke(build_app(), [
            "--quiet", "simulate", "particles", "--n", "6", "--box", "32", "--pixel-size", "3",
            "--snr", "0.5", "--seed", seed, "--out", str(out)])
        assert result.exit_code == 0, result.output
        return read_mrc(out / "particles.mrcs")[0], read_star(out / "truth.star")["particles"]

    (a, truth_a), (b, truth_b), (c, truth_c) = simulate("a", "3"), simulate("b", "3"), simulate("c", "4")
    assert (a == b).all() and truth_a.equals(truth_b)
    assert not (a == c).all() and not truth_a["rlnAngleRot"].equals(truth_c["rlnAngleRot"])


@pytest.mark.parametrize("kind,argv,needle", [
    ("movies", ["--format", "png"], "--format"),
    ("micrographs", ["--size", "32"], "--size"),
    ("movies", ["--frames", "0"], "--frames"),
    ("micrographs", ["--structure", "nowhere.cif"], "nowhere.cif"),
])
def test_bad_micrograph_input_is_one_line_and_exit_1(tmp_path, capsys, kind, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", kind, "--n", "1", "--out", str(tmp_path / "x"), *argv])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_float16_stack_is_mode_12_and_matches_the_float32_one(tmp_path):
    from vitrify.io.mrc import read_mrc_header

    stacks = {}
    for name, extra in (("f32", []), ("f16", ["--float16"])):
        result = CliRunner().invoke(build_app(), [
            "--quiet", "simulate", "particles", "--n", "6", "--box", "32", "--pixel-size", "3",
            "--snr", "0.5", "--seed", "2", "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
        stacks[name] = read_mrc(tmp_path / name / "particles.mrcs", dtype=None)[0]
    assert read_mrc_header(tmp_path / "f16" / "particles.mrcs")["mode"] == 12
    assert stacks["f16"].dtype == "float16"
    assert abs(stacks["f16"].astype("float32") - stacks["f32"]).max() < 2e-3 * abs(stacks["f32"]).max()

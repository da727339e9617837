"""`vitrify demo` pipeline mode, fast parts: truth comparisons, progress following, the demo's
commands (vitrify auto watching the session the microscope thread writes), output directory rules
and the command line (no simulation here; the whole chain runs in tests/test_cli_demo_pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vitrify.cli import _demo_truth as truth_cmp
from vitrify.cli._demo_pipeline import MARKER, PipelineDemo, demo_steps, prepare_out
from vitrify.cli._demo_steps import SchemeWatcher, Step, StepFailed, run_step
from vitrify.io.errors import InputError
from vitrify.io.star import write_star


def test_match_to_truth_is_one_to_one_and_within_tolerance():
    truth = np.array([[100.0, 100.0], [300.0, 300.0], [500.0, 100.0]])
    picks = np.array([[103.0, 98.0],     # truth 0
                      [101.0, 100.0],    # truth 0 again, closer: it wins, the other is a duplicate
                      [320.0, 300.0],    # truth 1 at 20 px: outside a 10 px tolerance
                      [900.0, 900.0]])   # nothing there
    matched = truth_cmp.match_to_truth(picks, truth, tolerance_px=10.0)
    assert matched.tolist() == [False, True, False, False]
    assert truth_cmp.match_to_truth(picks, truth, tolerance_px=25.0).tolist() == [False, True, True, False]
    assert truth_cmp.match_to_truth(np.zeros((0, 2)), truth, 10.0).shape == (0,)


def test_mark_true_particles_per_micrograph_and_binning():
    truth = pd.DataFrame({"rlnMicrographName": ["Movies/mov_00001.tiff", "Movies/mov_00002.tiff"],
                          "rlnCoordinateX": [200.0, 200.0], "rlnCoordinateY": [200.0, 400.0]})
    # coordinates in micrographs binned by 2: (100, 100) is (200, 200) in movie pixels
    picks = pd.DataFrame({"rlnMicrographName": ["MotionCorr/job002/Movies/mov_00001.mrc",
                                                "MotionCorr/job002/Movies/mov_00002.mrc",
                                                "MotionCorr/job002/Movies/mov_00002.mrc"],
                          "rlnCoordinateX": [100.0, 100.0, 100.0], "rlnCoordinateY": [100.0, 100.0, 200.0]})
    assert truth_cmp.mark_true_particles(picks, truth, 5.0, scale=2.0).tolist() == [True, False, True]


def test_motion_rms_is_the_error_of_the_trajectory_not_its_offset(rng):
    frames, points = 8, 16
    drift = np.cumsum(rng.normal(0, 1, (frames, 2)), axis=0)
    local = rng.normal(0, 0.3, (frames, points, 2))
    whole = drift + local.mean(axis=1)
    exact = -whole + np.array([3.0, -2.0])           # another reference frame: same trajectory
    assert truth_cmp.motion_rms_px(exact, drift, local) == pytest.approx(0.0, abs=1e-9)
    wrong = exact.copy()
    wrong[:, 0] += np.where(np.arange(frames) % 2 == 0, 0.5, -0.5)   # ±0.5 px in x, zero mean
    assert truth_cmp.motion_rms_px(wrong, drift, local) == pytest.approx(0.5)


def _write_ctf_files(tmp_path: Path) -> tuple[Path, dict]:
    fitted = pd.DataFrame({"rlnMicrographName": ["CtfFind/job003/Movies/mov_00001.mrc",
                                                 "CtfFind/job003/Movies/mov_00002.mrc"],
                           "rlnDefocusU": [15100.0, 20000.0], "rlnDefocusV": [14900.0, 19000.0],
                           "rlnCtfMaxResolution": [5.0, 9.0]})
    path = tmp_path / "micrographs_ctf.star"
    write_star(path, {"optics": pd.DataFrame({"rlnOpticsGroup": [1]}), "micrographs": fitted})
    truth = {"micrographs": pd.DataFrame({"rlnMicrographName": ["Movies/mov_00002.tiff", "Movies/mov_00001.tiff"],
                                          "rlnDefocusU": [20500.0, 15000.0], "rlnDefocusV": [19500.0, 15000.0]})}
    return path, truth


def test_ctf_errors_against_truth(tmp_path):
    path, truth = _write_ctf_files(tmp_path)
    table = truth_cmp.ctf_errors(path, truth).set_index("movie")
    assert table.loc["mov_00001", "defocus_error_nm"] == pytest.approx(0.0)
    assert table.loc["mov_00002", "defocus_error_nm"] == pytest.approx(-50.0)   # 19500 vs 20000 Å
    assert table.loc["mov_00001", "astig_error_nm"] == pytest.approx(20.0)      # 200 Å found, none there
    assert table.loc["mov_00002", "defocus_true_nm"] == pytest.approx(2000.0)


def test_class_purity_counts_real_particles_per_class(tmp_path):
    truth = {"particles": pd.DataFrame({"rlnMicrographName": ["Movies/mov_00001.tiff"] * 3,
                                        "rlnCoordinateX": [100.0, 300.0, 500.0],
                                        "rlnCoordinateY": [100.0, 100.0, 100.0]})}
    data = pd.DataFrame({"rlnMicrographName": ["MotionCorr/job002/Movies/mov_00001.mrc"] * 5,
                         "rlnCoordinateX": [101.0, 299.0, 502.0, 800.0, 900.0],
                         "rlnCoordinateY": [100.0, 100.0, 98.0, 800.0, 900.0],
                         "rlnClassNumber": [1, 1, 1, 2, 1]})
    data_star = tmp_path / "run_it005_data.star"
    write_star(data_star, {"optics": pd.DataFrame({"rlnOpticsGroup": [1]}), "particles": data})
    write_star(tmp_path / "run_it005_model.star",
               {"model_classes": pd.DataFrame({"rlnReferenceImage": ["1@c.mrcs", "2@c.mrcs"],
                                               "rlnEstimatedResolution": [12.0, 30.0]})})
    table = truth_cmp.class_purity(data_star, truth, tolerance_px=10.0)
    assert table["class"].tolist() == [1, 2]
    assert table["particles"].tolist() == [4, 1]
    assert table["real"].tolist() == [pytest.approx(0.75), 0.0]
    assert table["resolution_angst"].tolist() == [12.0, 30.0]


def _run_cli(argv: list[str]) -> None:
    from vitrify.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code in (0, None)


def test_the_demo_is_simulate_then_vitrify_auto_with_the_microscope_started_first(tmp_path):
    calls = []
    steps = demo_steps(PipelineDemo(movies=4, interval_s=2.0, idle_min=0.2), tmp_path, 80.0, lambda: calls.append(1))
    assert [step.argvs[0][0] for step in steps] == ["simulate", "auto"]
    assert steps[0].argvs[0][-2:] == ("--out", "microscope") and steps[0].before is None
    auto = steps[1].argvs[0]
    assert auto[:4] == ("auto", "session", "--project", "project")
    assert auto[auto.index("--particle-diameter") + 1] == "80" and auto[auto.index("--idle") + 1] == "0.2"
    assert "--until" not in auto                       # the last stage vitrify has jobs for
    assert "proc__extract__rescale=50" not in auto                            # MDCatch's box unless asked
    small = demo_steps(PipelineDemo(small_box_px=50, inimodel_order="1"), tmp_path, 80.0)[1].argvs[0]
    assert {"proc__extract__rescale=50", "proc__inimodel3d__vitrify_healpix_order=1"} <= set(small)
    assert [p.parent.name for p in steps[1].watch] == ["prep", "proc"]
    steps[1].before()
    assert calls == [1]


def test_scheme_watcher_reports_finished_jobs(tmp_path):
    log = tmp_path / "schemer.log"
    log.write_text("2026-01-01 10:00:00 scheme prep: running from node WAIT\n")
    watcher = SchemeWatcher(log)               # starts at the end: earlier runs are not reported
    with log.open("a") as handle:
        handle.write("2026-01-01 10:00:01 job motioncorr: running MotionCorr/job002/\n")
    assert watcher.poll() == [] and watcher.current == "motioncorr: running MotionCorr/job002/"
    with log.open("a") as handle:
        handle.write("2026-01-01 10:00:09 job motioncorr: MotionCorr/job002/ succeeded\n"
                     "2026-01-01 10:00:10 job ctffind: CtfFind/job003/ failed\n"
                     "2026-01-01 10:00:11 job autopi")             # half a line: read next time
    finished = watcher.poll()
    assert [ok for ok, _ in finished] == [True, False]
    assert finished[0][1].startswith("motioncorr: MotionCorr/job002/ succeeded")
    with log.open("a") as handle:
        handle.write("ck: running AutoPick/job004/\n")
    assert watcher.poll() == [] and watcher.current == "autopick: running AutoPick/job004/"


def test_failed_command_names_itself_and_its_last_output(tmp_path):
    from rich.console import Console

    step = Step("status of a scheme that is not there", (("schemer", "--scheme", "nothere", "--status"),),
                tmp_path)
    log = tmp_path / "step.log"
    with pytest.raises(StepFailed, match=r"vitrify schemer --scheme nothere --status' failed \(exit 1\)"):
        run_step(Console(quiet=True), step, log, poll_s=0.05)
    assert "nothere" in log.read_text()


def test_prepare_out_replaces_only_an_earlier_demo(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    with pytest.raises(InputError, match="not an earlier vitrify demo"):
        prepare_out(other, overwrite=True)
    demo = tmp_path / "demo"
    prepare_out(demo, overwrite=False)
    (demo / "project").mkdir()
    (demo / "project" / "default_pipeline.star").write_text("x")
    with pytest.raises(InputError, match="--overwrite"):
        prepare_out(demo, overwrite=False)
    prepare_out(demo, overwrite=True)
    assert not (demo / "project").exists() and (demo / MARKER).is_file() and (demo / "logs").is_dir()


@pytest.mark.parametrize("field, value", [("movies", 0), ("size_px", 64), ("pixel_size_angst", 0.0),
                                          ("max_ctf_resolution_angst", 2.0), ("small_box_px", 49),
                                          ("inimodel_order", "7")])
def test_pipeline_settings_are_validated(field, value):
    with pytest.raises(InputError):
        PipelineDemo(**{field: value})


def test_cli_rejects_unknown_mode(tmp_path, capsys):
    from vitrify.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--mode", "movies", "--out", str(tmp_path / "d")])
    assert exit_.value.code == 1
    assert "pipeline | particles" in capsys.readouterr().err


def test_step_counts_its_output_files(tmp_path):
    step = Step("simulate", (("simulate", "movies"),), tmp_path, count=("Movies/mov_*.tiff", 3, "movies"))
    assert step.counted() == " · 0/3 movies"
    (tmp_path / "Movies").mkdir()
    for name in ("mov_00001.tiff", "mov_00002.tiff", ".mov_00003.tiff.x.tmp.tiff", "gain.mrc"):
        (tmp_path / "Movies" / name).write_text("")
    assert step.counted() == " · 2/3 movies"          # temporary files of atomic writes do not count


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="Linux subreaper")
def test_cpu_of_jobs_left_behind_by_a_finished_parent_is_counted(tmp_path):
    """A schemer may exit before reaping its jobs: their CPU time must still reach the demo's count."""
    import subprocess
    import sys

    from vitrify.cli._demo_steps import counting_orphans, cpu_seconds, reap_orphans

    done = tmp_path / "done"
    burn = (f"import time, pathlib\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
            f"pathlib.Path({str(done)!r}).write_text('x')")
    parent = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {burn!r}])"
    before = cpu_seconds()
    with counting_orphans():
        subprocess.run([sys.executable, "-c", parent], check=True)    # exits at once, child orphaned
        reap_orphans(timeout_s=60)                                     # waits for the orphan to end
    assert done.exists()
    assert cpu_seconds() - before >= 0.6


def test_structure_file_is_passed_with_an_absolute_path(tmp_path, monkeypatch):
    """The simulation runs inside --out: a structure file named relative to the caller must still be found."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.pdb").write_text("")
    simulate = demo_steps(PipelineDemo(structure="my.pdb"), Path("out"), 150.0)[0].argvs[0]
    assert simulate[simulate.index("--structure") + 1] == str(tmp_path / "my.pdb")
    simulate = demo_steps(PipelineDemo(structure="adk"), Path("out"), 150.0)[0].argvs[0]
    assert simulate[simulate.index("--structure") + 1] == "adk"


def test_particles_mode_is_the_old_demo(tmp_path, capsys):
    from vitrify.cli.main import main

    out = tmp_path / "old"
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--mode", "particles", "--structure", "adk", "--n", "40", "--box", "32", "--snr", "1.0",
              "--classes", "2", "--iter", "2", "--out", str(out), "--device", "cpu"])
    assert exit_.value.code in (0, None)
    assert (out / "Reconstruct" / "job002" / "reconstruction.mrc").is_file()
    assert (out / "Class2D" / "job003" / "RELION_JOB_EXIT_SUCCESS").is_file()
    assert "FSC" in capsys.readouterr().err


@pytest.mark.slow
def test_map_against_truth_aligns_a_turned_shifted_mirrored_map(tmp_path):
    """The demo's FSC to the truth must not depend on the model's orientation, origin or hand."""
    import torch

    from vitrify.cli._demo_map import map_against_truth
    from vitrify.io.mrc import write_mrc
    from vitrify.sim.maps import MapOptions, simulate_map
    from vitrify.sim.structures import load_structure

    truth = simulate_map(load_structure("adk"), MapOptions(24, 5.0))
    turned = torch.flip(torch.rot90(torch.as_tensor(truth), 1, dims=(1, 2)), dims=(0,))   # another pose and hand
    turned = torch.roll(turned, shifts=(2, -1, 1), dims=(0, 1, 2)).numpy()
    job = tmp_path / "InitialModel" / "job009"
    job.mkdir(parents=True)
    write_mrc(job / "initial_model.mrc", turned, 5.0)
    found = map_against_truth(tmp_path, job, "adk")
    assert found["fsc_0143_angst"] == pytest.approx(10.0, abs=0.5)         # Nyquist: the same map
    assert found["fsc_05_angst"] < 11.0 and found["box_px"] == 24 and found["hand_flipped"] is True
    assert (tmp_path / "truth_map.mrc").is_file() and (tmp_path / "initial_model_aligned.mrc").is_file()


def test_stage_times_add_up_each_nodes_runs_from_the_scheme_logs(tmp_path):
    from vitrify.cli._demo_refine import stage_times

    (tmp_path / "Schemes" / "proc").mkdir(parents=True)
    (tmp_path / "Schemes" / "proc" / "schemer.log").write_text(
        "2026-12-07 01:00:00 scheme proc: running from node WAIT\n"
        "2026-12-07 01:00:01 job class2d: running Class2D/job006/\n"
        "2026-12-07 01:00:31 job class2d: Class2D/job006/ succeeded\n"
        "2026-12-07 01:00:32 job refine3d: running Refine3D/job009/\n"
        "2026-12-07 01:02:02 job refine3d: Refine3D/job009/ failed\n"
        "2026-12-07 01:02:03 job refine3d: running Refine3D/job009/\n"          # retried
        "2026-12-07 01:03:03 job refine3d: Refine3D/job009/ succeeded\n"
        "2026-12-07 01:05:00 job class2d: running Class2D/job010/\n"
        "2026-12-07 01:05:40 job class2d: Class2D/job010/ succeeded\n"
        "2026-12-07 01:06:00 job inimodel3d: running InitialModel/job011/\n")  # still running: not counted
    assert stage_times(tmp_path) == [
        {"node": "class2d", "stage": "2D classification", "runs": 2, "seconds": 70.0},
        {"node": "refine3d", "stage": "3D refinement", "runs": 2, "seconds": 150.0}]

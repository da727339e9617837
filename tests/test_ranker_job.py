"""The class-ranker job, its selection rules, weights handling, bad inputs and training, on a job
whose good and junk classes are known (tests/_ranker_jobs.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import _ranker_jobs as R
from vitrify.cli.main import main
from vitrify.io.star import read_star
from vitrify.jobs import class_ranker
from vitrify.jobs.base import run_job
from vitrify.ranker.network import RankerNet, load_model, save_model
from vitrify.ranker.selection import select_classes

OUTPUTS = ("particles.star", "class_averages.star", "rank_optimiser.star", "rank_model.star", "rank_data.star",
           "features.star", "backup_selection.star", "rank_classes.png")


@pytest.fixture(scope="module")
def job_opt(tmp_path_factory) -> Path:
    return R.write_job(tmp_path_factory.mktemp("class2d") / "Class2D" / "job002")


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    return save_model(RankerNet(), tmp_path_factory.mktemp("model") / "model.pt", {"what": "untrained"})


def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    return exit_.value.code


def test_selection_threshold_and_top_up_rules():
    scores = np.array([0.9, 0.2, 0.6, -999.0, 0.4])
    counts = np.array([100, 50, 10, 5, 20])
    assert select_classes(scores, counts, 0.5).tolist() == [True, False, True, False, False]
    assert select_classes(scores, counts, 0.5, min_classes=3).tolist() == [True, False, True, False, True]
    sel = select_classes(scores, counts, 0.95, min_particles=115)  # 100, then +10 (0.6), then +20 (0.4)
    assert sel.tolist() == [True, False, True, False, True]
    assert not select_classes(scores, counts, 0.0, min_classes=10)[3]  # unranked: never selected


def test_job_writes_relion_outputs_consistent_with_the_scores(job_opt, random_model, tmp_path):
    out = tmp_path / "Select" / "job003"
    run_job(class_ranker.run, class_ranker.Options(str(job_opt), min_score=0.0, model=str(random_model)), out)
    assert all((out / name).is_file() for name in OUTPUTS) and (out / "RELION_JOB_EXIT_SUCCESS").is_file()
    classes = read_star(out / "class_averages.star")[""]
    scores = classes["rlnClassScore"].to_numpy()
    assert np.all(np.diff(scores) <= 0) and len(classes) == 8  # every class, best first
    assert classes.set_index("rlnClassNumber").loc[R.SMALL, "rlnClassScore"] == -999.0  # n_k <= 10: not ranked
    chosen = set(classes.loc[classes["rlnSelected"] == 1, "rlnClassNumber"])
    assert chosen == set(range(1, 8))  # min score 0 keeps every ranked class
    particles = read_star(out / "particles.star")["particles"]
    data = read_star(job_opt.parent / "run_it010_data.star")["particles"]
    expected = data[data["rlnClassNumber"].isin(chosen)].reset_index(drop=True)
    pd.testing.assert_frame_equal(particles[expected.columns], expected, check_dtype=False)  # all columns kept
    features = read_star(out / "features.star")["class_features"]
    assert len(features) == 7 and {"rlnProteinCAR", "vtfGranulo6", "rlnWeightedResolution"} <= set(features)
    optimiser = read_star(out / "rank_optimiser.star")["optimiser_general"]
    assert optimiser["rlnModelStarFile"].endswith("rank_model.star")
    assert "rlnClassScore" in read_star(out / "rank_model.star")["model_classes"]


def test_threshold_above_every_score_with_min_particles_top_up(job_opt, random_model, tmp_path):
    out = tmp_path / "rank"
    run_job(class_ranker.run, class_ranker.Options(str(job_opt), min_score=1.0, min_particles=50,
                                                   model=str(random_model)), out)
    classes = read_star(out / "class_averages.star")[""]
    assert classes["rlnSelected"].tolist()[:2] == [1, 1] and classes["rlnSelected"].sum() == 2  # 30 + 30 >= 50
    assert len(read_star(out / "particles.star")["particles"]) == 60


@pytest.mark.parametrize("problem", ["no_ctf", "no_model_star", "tiny_box", "corrupt_weights", "missing_weights",
                                     "bad_score"])
def test_bad_input_is_one_line_exit_1_failure_marker_and_no_outputs(problem, tmp_path, random_model, capsys):
    opt = R.write_job(tmp_path / "c2d", do_ctf=problem != "no_ctf", with_model=problem != "no_model_star",
                      model_pixel_angst=0.5 if problem == "tiny_box" else R.PIXEL_ANGST)  # 48 px of 0.5 Å
    model = random_model
    if problem == "corrupt_weights":
        model = tmp_path / "bad.pt"
        model.write_bytes(random_model.read_bytes()[:-10] + b"0123456789")
        (tmp_path / "bad.pt.json").write_text(Path(str(random_model) + ".json").read_text())
    elif problem == "missing_weights":
        model = tmp_path / "nothing.pt"
    out = tmp_path / "out"
    args = ["class-ranker", "--opt", str(opt), "--o", str(out), "--model", str(model)]
    code = _cli(args + (["--min-score", "1.5"] if problem == "bad_score" else []))
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "Traceback" not in err
    expected = {"no_ctf": "without CTF correction", "no_model_star": "model file", "tiny_box": "cannot be ranked",
                "corrupt_weights": "checksum",
                "missing_weights": "weights not found", "bad_score": "score threshold"}[problem]
    assert expected in err
    if problem != "bad_score":  # a bad option fails before any job directory exists
        assert (out / "RELION_JOB_EXIT_FAILURE").is_file()
    assert not any((out / name).exists() for name in OUTPUTS)


def test_weights_round_trip_and_manifest(random_model):
    net, manifest = load_model(random_model)
    assert manifest["format_version"] == 1 and len(manifest["sha256"]) == 64
    x, f = torch.randn(3, 1, 64, 64), torch.randn(3, 24)
    torch.manual_seed(3)
    assert torch.allclose(net(x, f), RankerNet().eval()(x, f))


def test_shipped_model_scores_good_classes_above_junk(job_opt, tmp_path):
    from vitrify.ranker.inputs import read_class2d_job
    from vitrify.ranker.selection import score_job

    net, manifest = load_model()  # the weights inside the package, checksum verified
    scores = score_job(read_class2d_job(job_opt), net).scores
    good, junk = scores[[k - 1 for k in R.GOOD]], scores[[k - 1 for k in R.JUNK]]
    assert good.min() > junk.max(), (good, junk)
    assert manifest["info"]["trained_on"]["jobs"] >= 10


def test_train_command_learns_the_labelled_job(job_opt, tmp_path):
    from vitrify.ranker.network import NetworkConfig
    from vitrify.ranker.train import TrainSettings, load_training_set, mean_squared_error, read_job_list, train_model

    targets = pd.DataFrame({"rlnClassNumber": range(1, 9), "rlnClassScore": [1, 1, 1, 1, 0, 0, 0, 1]})
    from vitrify.io.star import write_star

    write_star(tmp_path / "targets.star", targets)
    (tmp_path / "jobs.txt").write_text(f"# one job\n{job_opt} {tmp_path / 'targets.star'}\n")
    data = load_training_set(read_job_list(tmp_path / "jobs.txt"))
    assert len(data) == 7 and data.targets.tolist() == [1, 1, 1, 1, 0, 0, 0]
    features_only = NetworkConfig(use_images=False, dropout=0.0)  # the CNN's share is timed, not tested, here
    torch.manual_seed(0)
    before = mean_squared_error(RankerNet(features_only), data)
    net, history = train_model(data, features_only, TrainSettings(epochs=25, batch_size=4, learning_rate=1e-3, seed=1))
    assert mean_squared_error(net, data) < min(before, 0.05)
    assert _cli(["class-ranker", "train", "--jobs", str(tmp_path / "jobs.txt"), "--o", str(tmp_path / "m.pt"),
                 "--epochs", "1"]) in (0, None)
    assert load_model(tmp_path / "m.pt")[1]["info"]["classes"] == 7


def test_proc_scheme_select_parts_runs_the_class_ranker():
    """RELION's proc scheme names the ranker ``relion.select`` + ``do_class_ranker = Yes``."""
    from vitrify.jobs.jobstar_values import options_from_values
    from vitrify.jobs.registry import resolve_job
    from vitrify.pipeline._jobstar import read_job_star

    job_star = Path(class_ranker.__file__).parents[1] / "data" / "Schemes" / "proc" / "select_parts" / "job.star"
    job = read_job_star(job_star)
    module = resolve_job(job.type_label, job.options)
    assert module is class_ranker
    options = options_from_values(module, job.options)
    assert options.input_optimiser.endswith("class2d/run_it200_optimiser.star")
    assert (options.min_score, options.min_classes, options.min_particles) == (0.25, 0, -1)

"""The Class2D job and CLI: RELION-4 outputs, continue, job.star options, bad input before compute."""

from __future__ import annotations

import numpy as np
import pytest
from _ml_synth import write_star_dataset

from vitrify.io.errors import InputError
from vitrify.io.mrc import read_mrc
from vitrify.io.star import read_star, write_star
from vitrify.jobs.class2d import Options, options_from_job_star, run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_star_dataset(tmp_path_factory.mktemp("parts"), n_per_class=40, n=32, snr=3.0, seed=2)


def _options(star, **kw):
    base = dict(input_star=str(star), n_classes=3, particle_diameter_angst=84.0, psi_step_deg=15.0,
                offset_range_px=2.0, offset_step_px=1.0, ini_subset=40, fin_subset=90, seed=2, threads=1)
    base.update(kw)
    return Options(**base)


def test_vdam_job_writes_relion_outputs_and_continues(dataset, tmp_path):
    star, labels = dataset
    out = run(_options(star, algorithm="vdam", nr_iter=12, grad_write_iter=5), tmp_path)
    assert out.name == "run_it012_data.star"
    for it in (0, 5, 10, 12):
        for suffix in ("classes.mrcs", "model.star", "data.star", "optimiser.star", "1moment.mrcs"):
            assert (tmp_path / f"run_it{it:03d}_{suffix}").exists()
    assert not (tmp_path / "run_it011_data.star").exists()
    assert (tmp_path / "run_it012_classes.png").stat().st_size > 1000
    data = read_star(out)
    parts = data["particles"]
    assert len(parts) == len(labels) and "optics" in data
    assert parts["rlnClassNumber"].between(1, 3).all()
    for col in ("rlnAnglePsi", "rlnOriginXAngst", "rlnMaxValueProbDistribution",
                "rlnNrOfSignificantSamples", "rlnLogLikeliContribution", "rlnDefocusU"):
        assert col in parts.columns
    model = read_star(tmp_path / "run_it012_model.star")
    assert abs(model["model_classes"]["rlnClassDistribution"].sum() - 1) < 1e-4
    assert (model["model_optics_group_1"]["rlnSigma2Noise"] > 0).all()
    # expected accuracies (snr 3, 32 px): fractions of the 7.5 degree fine step and of a pixel
    acc = model["model_classes"]
    assert ((acc["rlnAccuracyRotations"] > 0.05) & (acc["rlnAccuracyRotations"] < 10)).all()
    assert ((acc["rlnAccuracyTranslationsAngst"] > 0.01) & (acc["rlnAccuracyTranslationsAngst"] < 3)).all()
    refs, pixel = read_mrc(tmp_path / "run_it012_classes.mrcs")
    assert refs.shape == (3, 32, 32) and abs(pixel - 3.0) < 1e-4
    opt = read_star(tmp_path / "run_it010_optimiser.star")["optimiser_general"]
    assert int(opt["rlnCurrentIteration"]) == 10 and int(opt["rlnDoGradientRefine"]) == 1
    # continue from iteration 10 to 14
    cont = tmp_path / "cont"
    out2 = run(Options(continue_from=str(tmp_path / "run_it010_optimiser.star"), nr_iter=14, threads=1), cont)
    assert out2.name == "run_it014_data.star" and not (cont / "run_it000_data.star").exists()
    assert len(read_star(out2)["particles"]) == len(labels)


def test_em_job_separates_the_classes(dataset, tmp_path):
    star, labels = dataset
    out = run(_options(star, algorithm="em", nr_iter=8), tmp_path)
    cls = read_star(out)["particles"]["rlnClassNumber"].to_numpy()
    purity = sum(np.bincount(labels.numpy()[cls == c]).max() for c in np.unique(cls)) / len(cls)
    assert purity > 0.9
    assert (tmp_path / "run_it008_optimiser.star").exists()


def test_tempered_posterior_is_broader_and_still_separates(dataset, tmp_path):
    """--posterior-power < 1: softer posteriors (lower pmax, more significant poses), same classes."""
    star, labels = dataset
    figures = {}
    for power in (1.0, 0.3):
        out = run(_options(star, algorithm="em", nr_iter=8, posterior_power=power), tmp_path / str(power))
        parts = read_star(out)["particles"]
        cls = parts["rlnClassNumber"].to_numpy()
        purity = sum(np.bincount(labels.numpy()[cls == c]).max() for c in np.unique(cls)) / len(cls)
        figures[power] = (parts["rlnMaxValueProbDistribution"].mean(), parts["rlnNrOfSignificantSamples"].mean(),
                          purity)
    assert figures[0.3][0] < figures[1.0][0] - 0.1 and figures[0.3][1] > figures[1.0][1]
    assert figures[0.3][2] > 0.9
    for bad in (0.0, 1.5):
        with pytest.raises(InputError):
            _options(star, posterior_power=bad)


def test_cli_class2d_runs_and_reports_bad_input(dataset, tmp_path, capsys):
    from vitrify.cli.main import main

    star, labels = dataset
    with pytest.raises(SystemExit) as err:
        main(["class2d", "--i", str(star), "--o", str(tmp_path / "bad"), "--K", "1000",
              "--particle-diameter", "84"])
    assert err.value.code == 1 and "classes" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ok:
        main(["class2d", "--i", str(star), "--o", str(tmp_path / "ok"), "--K", "2", "--algorithm", "em",
              "--iter", "2", "--particle-diameter", "84", "--threads", "1", "--device", "cpu", "--seed", "3",
              "--psi-step", "30"])
    assert ok.value.code in (0, None)
    parts = read_star(tmp_path / "ok" / "run_it002_data.star")["particles"]
    assert len(parts) == len(labels) and parts["rlnClassNumber"].notna().all()


def _broken_copy(star, tmp_path, edit):
    blocks = read_star(star)
    edit(blocks)
    path = tmp_path / "broken.star"
    write_star(path, blocks)
    return path


@pytest.mark.parametrize("case", ["no_ctf_columns", "wrong_size", "missing_stack", "corrupt_stack", "too_many"])
def test_bad_input_is_reported_before_compute(dataset, tmp_path, case):
    star, _ = dataset

    def drop_ctf(b):
        b["particles"] = b["particles"].drop(columns=["rlnDefocusU"])

    def wrong_size(b):
        b["optics"]["rlnImageSize"] = 48

    def missing(b):
        b["particles"]["rlnImageName"] = "000001@" + str(tmp_path / "nope.mrcs")

    def corrupt(b):
        (tmp_path / "bad.mrcs").write_bytes(b"not an mrc file at all" * 10)
        b["particles"]["rlnImageName"] = "000001@" + str(tmp_path / "bad.mrcs")

    edits = {"no_ctf_columns": drop_ctf, "wrong_size": wrong_size, "missing_stack": missing,
             "corrupt_stack": corrupt, "too_many": lambda b: None}
    path = _broken_copy(star, tmp_path, edits[case])
    k = 10 ** 6 if case == "too_many" else 3
    with pytest.raises(InputError):
        run(_options(path, n_classes=k, nr_iter=1, algorithm="em"), tmp_path / "job")
    assert not (tmp_path / "job" / "run_it000_classes.mrcs").exists()


def test_options_validate_and_map_from_job_star():
    with pytest.raises(InputError):
        Options(input_star="p.star", n_classes=3, particle_diameter_angst=0.0)
    with pytest.raises(InputError):
        Options(input_star="p.star", n_classes=3, particle_diameter_angst=100, algorithm="sgd")
    opts = options_from_job_star({"fn_img": "Extract/job007/particles.star", "nr_classes": "20",
                                  "do_grad": "Yes", "nr_iter_grad": "150", "particle_diameter": "180",
                                  "psi_sampling": "6", "offset_range": "5", "offset_step": "1",
                                  "tau_fudge": "2", "do_ctf_correction": "Yes", "nr_threads": "2"})
    assert (opts.algorithm, opts.n_classes, opts.nr_iter, opts.psi_step_deg, opts.offset_step_px) == \
        ("vdam", 20, 150, 12.0, 2.0)
    em = options_from_job_star({"fn_img": "p.star", "nr_classes": "5", "do_grad": "No", "nr_iter": "25",
                                "particle_diameter": "100"})
    assert em.algorithm == "em" and em.iterations == 25


def test_ignore_ctf_until_first_peak_flattens_the_low_frequencies(dataset):
    import torch

    from vitrify.jobs._class2d_data import load_particles, validate_input
    from vitrify.ml.window import make_window

    star, _ = dataset
    inp = validate_input(star, 3, True)
    win = make_window(inp.box_px)
    full = load_particles(inp, win, 28.0, True, False, torch.device("cpu"))
    intact = load_particles(inp, win, 28.0, True, True, torch.device("cpu"))
    low = win.pixels_within(2)  # well before the first CTF peak at these defoci
    assert torch.allclose(intact.ctf[:, :low], torch.ones_like(intact.ctf[:, :low]))
    assert float(full.ctf[:, :low].max()) < 0.9  # the real CTF is far from 1 there
    beyond = win.pixels_within(win.radius) - 50  # high frequencies are untouched
    assert torch.allclose(intact.ctf[:, beyond:], full.ctf[:, beyond:])
    assert torch.allclose(intact.ft, full.ft)


def test_data_too_large_for_the_memory_is_refused_before_compute(dataset, tmp_path, monkeypatch):
    from vitrify.jobs import _class2d_data

    star, _ = dataset
    # 100 classes x 100,000 particles of 64 px fit a 24 GiB machine with room to spare
    assert _class2d_data.resident_bytes(100_000, 64) < 0.25 * 24 * 2 ** 30
    monkeypatch.setattr(_class2d_data, "available_bytes", lambda device: 64 * 2 ** 20)
    with pytest.raises(InputError, match="resident"):
        run(_options(star, nr_iter=1, algorithm="em"), tmp_path / "job")
    assert not (tmp_path / "job" / "run_it000_classes.mrcs").exists()


def test_reference_stack_starts_each_class_from_its_image(dataset, tmp_path):
    """--ref: class k starts from image k, so one EM iteration puts each particle into the class of
    its true shape (with blob starts the class numbers would be an arbitrary permutation)."""
    from _ml_synth import shapes

    from vitrify.io.mrc import write_mrc

    star, labels = dataset
    write_mrc(tmp_path / "refs.mrcs", shapes(32).numpy(), 3.0)
    out = run(_options(star, algorithm="em", nr_iter=1, reference_stack=str(tmp_path / "refs.mrcs")),
              tmp_path / "job")
    classes = read_star(out)["particles"]["rlnClassNumber"].to_numpy() - 1
    assert (classes == np.asarray(labels)).mean() > 0.9
    refs, _ = read_mrc(tmp_path / "job" / "run_it000_classes.mrcs")
    truth = shapes(32).numpy()
    corr = [np.corrcoef(refs[k].ravel(), truth[k].ravel())[0, 1] for k in range(3)]
    assert min(corr) > 0.8  # iteration 0 is the given stack (masked, scaled), not blobs


@pytest.mark.parametrize("shape, pixel, nan, expected", [
    ((2, 32, 32), 3.0, False, "3 images (--K) of 32x32 px"),
    ((3, 24, 24), 3.0, False, "3 images (--K) of 32x32 px"),
    ((3, 32, 32), 4.0, False, "the particles' 3 Å"),
    ((3, 32, 32), 3.0, True, "finite values"),
])
def test_reference_stack_bad_input_refused_before_compute(dataset, tmp_path, shape, pixel, nan, expected):
    from vitrify.io.mrc import write_mrc

    star, _ = dataset
    images = np.ones(shape, np.float32)
    if nan:
        images[0, 0, 0] = np.nan
    write_mrc(tmp_path / "refs.mrcs", images, pixel)
    with pytest.raises(InputError) as err:
        run(_options(star, algorithm="em", nr_iter=1, reference_stack=str(tmp_path / "refs.mrcs")), tmp_path / "job")
    assert "--ref" in str(err.value) and expected in str(err.value)
    assert not list((tmp_path / "job").glob("run_it*"))

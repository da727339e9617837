"""Masks and post-processing against ground truth: a simulated adenylate-kinase map plus noise.

Half-maps are the truth plus independent white noise of a known level (so the spectral SNR is the
truth's power per shell over the noise's); the reported resolutions are checked against the FSC of
the averaged map with the truth at 0.5 (the half-map 0.143 criterion's equivalent).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitrify.cli.main import main
from vitrify.core.filters import lowpass_filter
from vitrify.core.fsc import fsc, resolution_at_threshold
from vitrify.core.masks import distance_from_centre, mask_from_map
from vitrify.core.sharpen import corrected_fsc, fit_guinier, log_amplitude_shells, phase_randomize, \
    randomize_from_shell
from vitrify.core.fourier import rfft3_centered
from vitrify.io.mrc import read_mrc, write_mrc
from vitrify.io.star import read_star
from vitrify.jobs.options.postprocess import Options
from vitrify.jobs.postprocess import analyse

BOX, PIXEL = 64, 1.2


@pytest.fixture(scope="module")
def truth(adk_pdb) -> torch.Tensor:
    from vitrify.io.atomic_model import read_atomic_model
    from vitrify.sim.maps import MapOptions, simulate_map

    volume = simulate_map(read_atomic_model(adk_pdb), MapOptions(BOX, PIXEL, bfactor_angst2=50.0))
    return torch.from_numpy(volume).double()


def _halves(truth: torch.Tensor, noise_rel: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sigma = noise_rel * float(truth.std())
    return tuple(truth + sigma * torch.randn(truth.shape, generator=g, dtype=torch.float64) for _ in range(2))


def _soft_mask(truth: torch.Tensor) -> torch.Tensor:
    low = lowpass_filter(truth.float(), 10.0, PIXEL, ndim=3).double()
    return mask_from_map(low, 0.1 * float(low.max()), 3.0, 4.0)


def _within_shell_or_10pct(reported: float, expected: float) -> bool:
    shell = lambda res: BOX * PIXEL / res  # noqa: E731
    return abs(shell(reported) - shell(expected)) <= 1.0 or abs(reported - expected) <= 0.1 * expected


@pytest.mark.parametrize("noise_rel", [1.0, 2.0])
def test_reported_resolution_agrees_with_the_truth(truth, noise_rel):
    half1, half2 = _halves(truth, noise_rel, seed=int(noise_rel * 10))
    mask = _soft_mask(truth)
    result = analyse(half1, half2, mask, PIXEL, Options("h1.mrc", mask="m.mrc"))
    average = (half1 + half2) / 2
    truth_masked = resolution_at_threshold(fsc(average * mask, truth * mask), BOX, PIXEL, 0.5)
    truth_unmasked = resolution_at_threshold(fsc(average, truth), BOX, PIXEL, 0.5)
    assert _within_shell_or_10pct(result["resolution"], truth_masked), (result["resolution"], truth_masked)
    assert _within_shell_or_10pct(result["unmasked_resolution"], truth_unmasked)
    assert result["resolution"] > 2 * PIXEL + 0.1  # not simply Nyquist


def test_phase_randomisation_removes_the_inflation_of_a_tight_mask(truth):
    half1, half2 = _halves(truth, 2.0, seed=7)
    average = (half1 + half2) / 2
    soft = _soft_mask(truth)
    truth_res = resolution_at_threshold(fsc(average * soft, truth * soft), BOX, PIXEL, 0.5)
    # a hard mask thresholded from the noisy average itself: shaped by (correlated with) the noise
    tight = mask_from_map(lowpass_filter(average.float(), 4.0, PIXEL, ndim=3).double(), 1.5 * float(average.std()))
    result = analyse(half1, half2, tight, PIXEL, Options("h1.mrc", mask="m.mrc"))
    assert result["masked_resolution"] < 0.8 * truth_res  # inflated towards Nyquist
    assert result["resolution"] >= 0.9 * truth_res  # corrected: not better than the truth supports
    assert _within_shell_or_10pct(result["resolution"], truth_res)


def test_corrected_fsc_formula_and_randomise_shell():
    masked = torch.tensor([1.0, 0.9, 0.7, 0.5, 0.3])
    randomized = torch.tensor([1.0, 0.9, 0.5, 0.5, 0.0])
    out = corrected_fsc(masked, randomized, 2)
    assert torch.allclose(out, torch.tensor([1.0, 0.9, 0.4, 0.0, 0.3]))
    assert randomize_from_shell(torch.tensor([1.0, 0.95, 0.85, 0.79, 0.2])) == 3


def test_phase_randomisation_keeps_amplitudes_and_decorrelates(truth):
    random = phase_randomize(truth, 10, torch.Generator().manual_seed(3))
    f0, f1 = rfft3_centered(truth)[..., 1:-1], rfft3_centered(random)[..., 1:-1]  # kx=0 / Nyquist planes: Hermitian
    assert torch.allclose(f0.abs(), f1.abs(), rtol=1e-6, atol=1e-9 * float(f0.abs().max()))
    curve = fsc(truth, random)
    assert float(curve[1:9].min()) > 0.999 and float(curve[12:].abs().max()) < 0.2


def test_bfactor_of_a_known_blur_is_recovered(adk_pdb):
    from vitrify.io.atomic_model import read_atomic_model
    from vitrify.sim.maps import MapOptions, simulate_map

    atoms = read_atomic_model(adk_pdb)
    fits = []
    for blur in (0.0, 150.0):
        volume = torch.from_numpy(simulate_map(atoms, MapOptions(BOX, PIXEL, bfactor_angst2=blur))).double()
        fits.append(fit_guinier(log_amplitude_shells(rfft3_centered(volume), BOX), BOX, PIXEL, 10.0, 3.5)[0])
    assert fits[0] - fits[1] == pytest.approx(150.0, rel=0.2), fits


def test_mask_create_sphere_geometry(tmp_path, capsys):
    radius, extend, edge = 10.0, 3.0, 4.0
    r = distance_from_centre(48, 3)
    write_mrc(tmp_path / "sphere.mrc", (r <= radius).float().numpy(), 1.5)
    code = _cli(["mask-create", "--i", str(tmp_path / "sphere.mrc"), "--o", str(tmp_path / "m"), "--lowpass", "0",
                 "--ini-threshold", "0.5", "--extend-inimask", str(extend), "--width-soft-edge", str(edge)])
    assert code == 0
    mask, pixel = read_mrc(tmp_path / "m" / "mask.mrc")
    assert pixel == pytest.approx(1.5) and mask.min() >= 0 and mask.max() <= 1
    r = r.numpy()
    assert (mask[r <= radius + extend - 0.5] == 1).all()
    assert (mask[r >= radius + extend + edge + 1.0] == 0).all()
    halfway = mask[np.abs(r - (radius + extend + edge / 2)) < 0.3]
    assert halfway.mean() == pytest.approx(0.5, abs=0.15)


def test_mask_create_threshold_follows_the_map_scale(tmp_path):
    """--threshold-of-max 0.2: the same mask from a map at any scale (0.2 x its maximum)."""
    r = distance_from_centre(32, 3)
    shell = torch.clamp(1.0 - r / 12.0, min=0.0)                      # a cone: 1 at the centre, 0 at r = 12
    masks = []
    for scale in (1.0, 1e-3):
        write_mrc(tmp_path / "map.mrc", (scale * shell).float().numpy(), 2.0)
        out = tmp_path / f"m{scale:g}"
        assert _cli(["mask-create", "--i", str(tmp_path / "map.mrc"), "--o", str(out), "--lowpass", "0",
                     "--threshold-of-max", "0.2", "--extend-inimask", "0", "--width-soft-edge", "0"]) == 0
        masks.append(read_mrc(out / "mask.mrc")[0])
    assert np.array_equal(masks[0], masks[1])
    inside = masks[0] >= 0.5
    assert inside[r.numpy() <= 9.5].all() and not inside[r.numpy() >= 9.7].any()   # 1 - r/12 >= 0.2: r <= 9.6


def _cli(argv: list[str]) -> int:
    try:
        main(["-q", *argv])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


@pytest.fixture(scope="module")
def job_inputs(truth, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pp")
    half1, half2 = _halves(truth, 1.0, seed=3)
    write_mrc(folder / "run_half1_class001_unfil.mrc", half1.numpy(), PIXEL)
    write_mrc(folder / "run_half2_class001_unfil.mrc", half2.numpy(), PIXEL)
    write_mrc(folder / "mask.mrc", _soft_mask(truth).numpy(), PIXEL)
    return folder


def test_postprocess_job_writes_relion_outputs(job_inputs, tmp_path):
    out = tmp_path / "PostProcess"
    code = _cli(["postprocess", "--i", str(job_inputs / "run_half1_class001_unfil.mrc"),
                 "--mask", str(job_inputs / "mask.mrc"), "--o", str(out)])
    assert code == 0
    star = read_star(out / "postprocess.star")
    general, table = star["general"], star["fsc"]
    assert 2.6 < float(general["rlnFinalResolution"]) < 4.0
    assert float(general["rlnBfactorUsedForSharpening"]) < 0
    assert len(table) == BOX // 2 + 1 and "rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps" in table
    assert {"rlnResolutionSquared", "rlnLogAmplitudesSharpened"} <= set(star["guinier"].columns)
    for name in ("postprocess.mrc", "postprocess_masked.mrc"):
        data, pixel = read_mrc(out / name)
        assert data.shape == (BOX,) * 3 and pixel == pytest.approx(PIXEL) and np.isfinite(data).all()
    assert (out / "postprocess_fsc.png").stat().st_size > 1000
    assert (out / "RELION_JOB_EXIT_SUCCESS").exists()


def _bad(folder, tmp_path, case: str) -> list[str]:
    h1, h2, mask = (folder / "run_half1_class001_unfil.mrc", folder / "run_half2_class001_unfil.mrc",
                    folder / "mask.mrc")
    data, _ = read_mrc(h1)
    bad = tmp_path / "bad"
    bad.mkdir()
    if case == "sizes":
        write_mrc(bad / "x_half1.mrc", data, PIXEL)
        write_mrc(bad / "x_half2.mrc", data[:32, :32, :32], PIXEL)
        return ["--i", str(bad / "x_half1.mrc"), "--mask", str(mask)]
    if case == "mask_size":
        write_mrc(bad / "m.mrc", np.ones((32, 32, 32), np.float32), PIXEL)
        return ["--i", str(h1), "--mask", str(bad / "m.mrc")]
    if case == "mask_values":
        write_mrc(bad / "m.mrc", 2 * read_mrc(mask)[0], PIXEL)
        return ["--i", str(h1), "--mask", str(bad / "m.mrc")]
    if case == "nan":
        data = data.copy()
        data[3, 4, 5] = np.nan
        write_mrc(bad / "y_half1.mrc", data, PIXEL)
        write_mrc(bad / "y_half2.mrc", data, PIXEL)
        return ["--i", str(bad / "y_half1.mrc"), "--mask", str(mask)]
    write_mrc(bad / "z_half1.mrc", data, PIXEL)  # missing half2
    return ["--i", str(bad / "z_half1.mrc"), "--mask", str(mask), "--i2", str(h2).replace("half2", "nothing")] \
        if case == "missing_i2" else ["--i", str(bad / "z_half1.mrc"), "--mask", str(mask)]


@pytest.mark.parametrize("case", ["sizes", "mask_size", "mask_values", "nan", "missing_half2", "missing_i2"])
def test_bad_input_is_one_line_and_writes_nothing(job_inputs, tmp_path, capsys, case):
    args = _bad(job_inputs, tmp_path, case)
    out = tmp_path / "out"
    capsys.readouterr()
    code = _cli(["postprocess", *args, "--o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    written = {p.name for p in out.iterdir()} if out.exists() else set()
    assert not written & {"postprocess.mrc", "postprocess_masked.mrc", "postprocess.star", "postprocess_fsc.png",
                          "RELION_OUTPUT_NODES.star", "RELION_JOB_EXIT_SUCCESS"}, written


def test_unmasked_fsc_follows_the_known_spectral_snr(truth):
    """Expected half-map FSC per shell = S / (S + N): S the truth's power, N = sigma² n³ per voxel."""
    from vitrify.core.fourier import shell_index_3d, shell_sums

    noise_rel = 1.0
    half1, half2 = _halves(truth, noise_rel, seed=11)
    shells = shell_index_3d(BOX, rfft=False)
    signal = shell_sums(torch.fft.fftn(truth).abs() ** 2, shells, BOX // 2 + 1)
    count = shell_sums(torch.ones(truth.shape, dtype=torch.float64), shells, BOX // 2 + 1)
    noise = (noise_rel * float(truth.std())) ** 2 * BOX**3 * count
    expected = signal / (signal + noise)
    measured = fsc(half1, half2)
    assert float((measured[2:] - expected[2:]).abs().max()) < 0.1
    reported = resolution_at_threshold(measured, BOX, PIXEL, 0.143)
    assert _within_shell_or_10pct(reported, resolution_at_threshold(expected, BOX, PIXEL, 0.143))


def test_mtf_division_raises_the_amplitudes(job_inputs, tmp_path):
    mtf = tmp_path / "mtf.star"
    mtf.write_text("data_\nloop_\n_rlnResolutionInversePixel\n_rlnMtfValue\n0.0 0.5\n0.5 0.5\n")
    star = {}
    for name, extra in (("plain", []), ("mtf", ["--mtf", str(mtf)])):
        out = tmp_path / name
        assert _cli(["postprocess", "--i", str(job_inputs / "run_half1_class001_unfil.mrc"),
                     "--mask", str(job_inputs / "mask.mrc"), "--o", str(out), *extra]) == 0
        star[name] = read_star(out / "postprocess.star")["guinier"]
    shift = star["mtf"]["rlnLogAmplitudesMTFCorrected"] - star["mtf"]["rlnLogAmplitudesOriginal"]
    assert np.allclose(shift, np.log(2.0), atol=1e-6)
    assert "rlnLogAmplitudesMTFCorrected" not in star["plain"]


@pytest.mark.parametrize("case", ["nan", "threshold", "missing"])
def test_mask_create_bad_input_is_one_line(tmp_path, capsys, case):
    volume = distance_from_centre(32, 3).numpy().astype(np.float32)
    if case == "nan":
        volume[1, 2, 3] = np.nan
    path = tmp_path / "map.mrc"
    if case != "missing":
        write_mrc(path, volume, 1.0)
    threshold = "1e6" if case == "threshold" else "5"
    capsys.readouterr()
    code = _cli(["mask-create", "--i", str(path), "--o", str(tmp_path / "m"), "--ini-threshold", threshold])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert not (tmp_path / "m" / "mask.mrc").exists()

"""3D initial model (``vitrify initialmodel``) and ``vitrify align-symmetry`` against ground truth.

The data come from our simulator (a real structure, CTF, noise); the de novo map is aligned to the
true map (rotation, shift and hand searched) and its FSC to the truth must reach 0.5 beyond 4
Fourier shells (the issue's success criterion) — a blob start alone does not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vitrify.cli.main import build_app
from vitrify.core.fsc import fsc
from vitrify.io.mrc import read_mrc, read_mrc_header
from vitrify.io.star import read_star
from vitrify.sim.particles import ParticleOptions, simulate_particles

BOX, PIX = 32, 5.0


@pytest.fixture(scope="module")
def cftr_set(tmp_path_factory):
    """600 CTF-modulated particles of CFTR (asymmetric, elongated), 32 px at 5 Å, SNR 0.2."""
    out = tmp_path_factory.mktemp("cftr3d")
    simulate_particles(ParticleOptions(structures=("cftr",), n_particles=600, box_px=BOX, pixel_size_angst=PIX,
                                       snr=0.2, seed=3), out)
    return out


def _fsc_shell(volume: np.ndarray, truth: np.ndarray) -> tuple[int, bool]:
    """First Fourier shell where FSC(aligned volume, truth) < 0.5, and whether the hand was flipped."""
    from vitrify.ml.mapalign import align_maps

    al = align_maps(torch.as_tensor(volume).float(), torch.as_tensor(truth).float())
    curve = fsc(al.aligned, torch.as_tensor(truth).float())
    below = torch.nonzero(curve[1:] < 0.5).flatten()
    return (int(below[0]) + 1 if below.numel() else BOX // 2), al.mirrored


def _run(args: list[str]):
    return CliRunner().invoke(build_app(), args, catch_exceptions=False)


@pytest.mark.slow
def test_initial_model_reaches_the_truth_and_writes_relion_files(cftr_set, tmp_path):
    out = tmp_path / "InitialModel" / "job001"
    result = _run(["initialmodel", "--i", str(cftr_set / "particles.star"), "--o", str(out),
                   "--particle-diameter", "150", "--iter", "16", "--ini-subset", "100", "--fin-subset", "300",
                   "--healpix-order", "1", "--grad-write-iter", "8", "--seed", "2"])
    assert result.exit_code == 0, result.output
    truth = read_mrc(cftr_set / "truth_map.mrc")[0]
    start = read_mrc(out / "run_it000_class001.mrc")[0]
    final, pixel = read_mrc(out / "initial_model.mrc")
    assert abs(pixel - PIX) < 1e-3 and read_mrc_header(out / "run_it016_class001.mrc")["pixel_size_angst"] == \
        pytest.approx(PIX, abs=1e-3)
    shell_final, _ = _fsc_shell(final, truth)
    shell_start, _ = _fsc_shell(start, truth)
    # issue 17's success: FSC 0.5 beyond 4 shells (measured: the model at 6-8, the blob start at 3-4; Nyquist 16)
    assert shell_final > 4 and shell_final >= shell_start + 2, (shell_final, shell_start)
    data = read_star(out / "run_it016_data.star")["particles"]
    for col in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnClassNumber"):
        assert col in data.columns
    model = read_star(out / "run_it016_model.star")
    assert int(model["model_general"]["rlnReferenceDimensionality"]) == 3
    assert model["model_classes"]["rlnReferenceImage"].iloc[0].endswith("run_it016_class001.mrc")
    optimiser = read_star(out / "run_it016_optimiser.star")["optimiser_general"]
    assert int(optimiser["rlnCurrentIteration"]) == 16
    assert (out / "run_it008_slices.png").stat().st_size > 1000 and (out / "RELION_JOB_EXIT_SUCCESS").exists()


def _main(argv: list[str], capsys) -> tuple[int, str]:
    """``vitrify -q ARGV`` in this process: (exit status, stdout + stderr)."""
    from vitrify.cli.main import main

    capsys.readouterr()
    try:
        main(["-q", *argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out + err


def test_bad_inputs_fail_in_one_line(tmp_path, capsys):
    from vitrify.io.mrc import write_mrc
    from vitrify.io.star import write_star

    sim = tmp_path / "few"
    simulate_particles(ParticleOptions(structures=("adk",), n_particles=20, box_px=BOX, pixel_size_angst=PIX,
                                       seed=1), sim)
    write_mrc(tmp_path / "ref.mrc", np.zeros((16, 16, 16), np.float32), PIX)
    tables = read_star(sim / "particles.star")
    write_star(tmp_path / "no_ctf.star", {"optics": tables["optics"],
                                          "particles": tables["particles"].drop(columns=["rlnDefocusU"])})
    star = str(sim / "particles.star")
    cases = {
        "unknown point group": ([star, "--sym", "X7"], "C1, Cn, Dn"),
        "fewer particles than one mini-batch": ([star], "mini-batch"),
        "reference of the wrong box": ([star, "--ref", str(tmp_path / "ref.mrc"), "--ini-subset", "10"], "box"),
        "no CTF columns": ([str(tmp_path / "no_ctf.star")], "CTF"),
    }
    for name, (args, text) in cases.items():
        code, output = _main(["initialmodel", "--i", *args, "--o", str(tmp_path / name.replace(" ", "_")),
                              "--particle-diameter", "80"], capsys)
        lines = [ln for ln in output.strip().splitlines() if ln.strip()]
        assert code == 1 and len(lines) == 1 and text in lines[0], (name, output)


def test_align_symmetry_puts_a_rotated_d2_map_in_the_standard_orientation(tmp_path):
    from vitrify.core.euler import euler_to_matrix
    from vitrify.core.symmetry import rotate_volume, symmetry_matrices
    from vitrify.io.mrc import write_mrc
    from vitrify.sim.maps import MapOptions, simulate_map
    from vitrify.sim.structures import load_structure

    truth = torch.as_tensor(simulate_map(load_structure("adk", symmetry="D2"), MapOptions(32, 4.0))).float()
    turn = euler_to_matrix(torch.tensor([37.0]), torch.tensor([71.0]), torch.tensor([-23.0])).float()
    rotated = rotate_volume(truth, turn)[0]
    write_mrc(tmp_path / "c1.mrc", rotated.numpy(), 4.0)
    result = _run(["align-symmetry", "--i", str(tmp_path / "c1.mrc"), "--sym", "D2", "--o",
                   str(tmp_path / "aligned.mrc")])
    assert result.exit_code == 0, result.output
    aligned = torch.as_tensor(read_mrc(tmp_path / "aligned.mrc")[0])
    assert read_mrc(tmp_path / "aligned.mrc")[1] == pytest.approx(4.0)
    # D2's standard orientation has its 2-folds on x, y and z, in any order: compare under the cube's rotations
    cube = symmetry_matrices("O")
    candidates = rotate_volume(truth, cube)
    cc = [float(np.corrcoef(aligned.flatten().numpy(), c.flatten().numpy())[0, 1]) for c in candidates]
    before = float(np.corrcoef(rotated.flatten().numpy(), truth.flatten().numpy())[0, 1])
    assert max(cc) > 0.95 > before + 0.2, (max(cc), before)
    assert "correlation with the symmetrised map" in result.output


def test_symmetry_axes_of_an_off_centre_map_are_found_after_centring():
    import scipy.ndimage as ndi

    from vitrify.core.euler import euler_to_matrix
    from vitrify.core.symmetry import rotate_volume
    from vitrify.ml.mapalign import find_symmetry_axes
    from vitrify.sim.maps import MapOptions, simulate_map
    from vitrify.sim.structures import load_structure

    truth = torch.as_tensor(simulate_map(load_structure("adk", symmetry="D2"), MapOptions(32, 4.0))).float()
    turn = euler_to_matrix(torch.tensor([37.0]), torch.tensor([71.0]), torch.tensor([-23.0])).float()
    moved = np.fft.ifftn(ndi.fourier_shift(np.fft.fftn(rotate_volume(truth, turn)[0].double().numpy()),
                                           (1.6, -2.3, 1.2))).real
    found = find_symmetry_axes(torch.as_tensor(moved).float(), "D2")
    as_given = find_symmetry_axes(torch.as_tensor(moved).float(), "D2", keep_centre=True)
    assert found.correlation > 0.9 > as_given.correlation + 0.05, (found.correlation, as_given.correlation)
    assert np.allclose(found.shift_px, (-1.6, 2.3, -1.2), atol=0.5), found.shift_px

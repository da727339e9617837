"""3D classification (``vitrify class3d``): bad inputs, the reference's rescaling, outputs and ``--continue``.

Data come from our simulator (real structures from an installed package, CTF, noise).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitrify.io.mrc import read_mrc, write_mrc
from vitrify.io.star import read_star
from vitrify.sim.particles import ParticleOptions, simulate_particles

BOX, PIX = 32, 5.0


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


@pytest.fixture(scope="module")
def few(tmp_path_factory):
    """20 particles of adenylate kinase (32 px at 5 Å) and its true map."""
    out = tmp_path_factory.mktemp("few3d")
    simulate_particles(ParticleOptions(structures=("adk",), n_particles=20, box_px=BOX, pixel_size_angst=PIX,
                                       seed=1), out)
    return out


def test_bad_inputs_fail_in_one_line_before_any_output(few, tmp_path, capsys):
    star, ref = str(few / "particles.star"), str(few / "truth_map.mrc")
    write_mrc(tmp_path / "small_mask.mrc", np.ones((16, 16, 16), np.float32), PIX)
    write_mrc(tmp_path / "hot_mask.mrc", np.full((BOX,) * 3, 2.0, np.float32), PIX)
    (tmp_path / "one_ref.star").write_text(f"data_\nloop_\n_rlnReferenceImage\n{ref}\n")
    cases = {
        "references not one per class": (["--ref", str(tmp_path / "one_ref.star"), "--K", "2"],
                                         "1 references for 2 classes"),
        "mask of another size": (["--solvent-mask", str(tmp_path / "small_mask.mrc")], "mask box 16 differs"),
        "mask values outside [0, 1]": (["--solvent-mask", str(tmp_path / "hot_mask.mrc")], "values in [0, 1]"),
        "fewer particles than classes": (["--K", "30"], "30 classes requested for 20 particles"),
        "missing reference": (["--ref", str(tmp_path / "nothing.mrc")], "file not found"),
        "unknown point group": (["--sym", "X7"], "C1, Cn, Dn"),
        "local searches without poses": (["--sigma-ang", "5"], "need the particles' poses"),
    }
    for name, (args, text) in cases.items():
        out = tmp_path / name.replace(" ", "_")
        argv = ["class3d", "--i", star, "--ref", ref, "--o", str(out), "--particle-diameter", "80", *args]
        code, output = _main(argv, capsys)
        lines = [ln for ln in output.strip().splitlines() if ln.strip()]
        assert code == 1 and len(lines) == 1 and text in lines[0], (name, output)
        assert not list(out.glob("run_it*")), name


def test_a_reference_of_another_pixel_size_is_rescaled_onto_the_particles_grid(tmp_path):
    import logging
    from types import SimpleNamespace

    from vitrify.jobs._class3d_input import read_reference
    from vitrify.sim.maps import MapOptions, simulate_map
    from vitrify.sim.structures import load_structure

    atoms = load_structure("adk")
    grid = SimpleNamespace(box_px=BOX, pixel_size_angst=PIX)  # the particles' grid
    write_mrc(tmp_path / "fine.mrc", simulate_map(atoms, MapOptions(64, 2.5)), 2.5)
    coarse = torch.as_tensor(simulate_map(atoms, MapOptions(BOX, PIX)))
    fitted = read_reference(tmp_path / "fine.mrc", grid, logging.getLogger("test"))
    cc = float(np.corrcoef(fitted.flatten().numpy(), coarse.flatten().numpy())[0, 1])
    assert fitted.shape == (BOX,) * 3 and cc > 0.95, cc
    write_mrc(tmp_path / "small.mrc", coarse[8:24, 8:24, 8:24].numpy(), PIX)
    padded = read_reference(tmp_path / "small.mrc", grid, logging.getLogger("test"))
    assert padded.shape == (BOX,) * 3 and torch.equal(padded[8:24, 8:24, 8:24], coarse[8:24, 8:24, 8:24])


def test_outputs_and_continue(few, tmp_path, capsys):
    """Two classes, two EM iterations at order 0 from a reference of another box (rescaled, logged);
    RELION's files; a continued third iteration equals the uninterrupted run's."""
    from vitrify.sim.maps import MapOptions, simulate_map
    from vitrify.sim.structures import load_structure

    big = simulate_map(load_structure("adk"), MapOptions(40, PIX))
    write_mrc(tmp_path / "ref40.mrc", big, PIX)
    common = ["--i", str(few / "particles.star"), "--ref", str(tmp_path / "ref40.mrc"), "--K", "2",
              "--particle-diameter", "80", "--healpix-order", "0", "--offset-range", "2", "--offset-step", "2"]
    code, output = _main(["class3d", *common, "--o", str(tmp_path / "a"), "--iter", "3"], capsys)
    assert code == 0, output
    code, output = _main(["class3d", *common, "--o", str(tmp_path / "b"), "--iter", "2"], capsys)
    assert code == 0, output
    log = (tmp_path / "b" / "run.log").read_text()
    assert "cropped to the particles' 32 px" in log and "random class seeds" in log
    code, output = _main(["class3d", "--continue", str(tmp_path / "b" / "run_it002_optimiser.star"), "--o",
                          str(tmp_path / "b"), "--iter", "3"], capsys)
    assert code == 0, output
    a, b = tmp_path / "a", tmp_path / "b"
    for k in (1, 2):
        va, pix = read_mrc(a / f"run_it003_class{k:03d}.mrc")
        vb, _ = read_mrc(b / f"run_it003_class{k:03d}.mrc")
        assert pix == pytest.approx(PIX) and np.allclose(va, vb, atol=1e-5 * np.abs(va).max())
    data = read_star(b / "run_it003_data.star")["particles"]
    for col in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
                "rlnClassNumber", "rlnMaxValueProbDistribution"):
        assert col in data.columns, col
    assert set(data["rlnClassNumber"]) <= {1, 2}
    model = read_star(b / "run_it003_model.star")
    classes = model["model_classes"]
    assert int(model["model_general"]["rlnReferenceDimensionality"]) == 3
    assert np.isclose(classes["rlnClassDistribution"].sum(), 1.0)
    assert "rlnEstimatedResolution" in classes.columns
    assert classes["rlnReferenceImage"].iloc[1].endswith("run_it003_class002.mrc")
    assert (b / "run_it003_slices.png").stat().st_size > 1000 and (b / "RELION_JOB_EXIT_SUCCESS").exists()


@pytest.fixture(scope="module")
def complex_and_subunit(tmp_path_factory):
    """800 particles, half of a two-chain complex (PDB 1A28), half of its chain A alone: 16 px at 9 Å, SNR 1."""
    from vitrify.io.atomic_model import write_atomic_model
    from vitrify.sim.structures import load_structure

    out = tmp_path_factory.mktemp("complex3d")
    chain_a = write_atomic_model(out / "chain_a.pdb", load_structure("1a28").select_chain("A"))
    simulate_particles(ParticleOptions(structures=("1a28", str(chain_a)), n_particles=800, box_px=16,
                                       pixel_size_angst=9.0, snr=1.0, seed=4), out)
    return out


def _right_class(folder, job, it: int) -> float:
    truth = read_star(folder / "truth.star")["particles"]["vtfMapIndex"].to_numpy()
    cls = read_star(job / f"run_it{it:03d}_data.star")["particles"]["rlnClassNumber"].to_numpy()
    return float((cls == truth).mean())


def test_two_references_sort_a_complex_from_its_subunit(complex_and_subunit, tmp_path, capsys):
    """K references listed in a STAR file (RELION's --ref): each is put on the data's greyscale, then
    EM sorts the particles; >= 85 % land in their state's class after 5 iterations (chance: 50 %)."""
    folder = complex_and_subunit
    (tmp_path / "refs.star").write_text("data_\nloop_\n_rlnReferenceImage\n"
                                        f"{folder / 'truth_map.mrc'}\n{folder / 'truth_map_002.mrc'}\n")
    job = tmp_path / "job"
    code, output = _main(["class3d", "--i", str(folder / "particles.star"), "--ref", str(tmp_path / "refs.star"),
                          "--o", str(job), "--K", "2", "--particle-diameter", "110", "--iter", "5",
                          "--healpix-order", "0", "--ini-high", "40", "--offset-step", "1"], capsys)
    assert code == 0, output
    assert _right_class(folder, job, 5) >= 0.85


def test_local_searches_from_poses_sort_a_complex_from_its_subunit(complex_and_subunit, tmp_path, capsys):
    """One reference, K 2, local searches (--sigma-ang 5, HEALPix order 2) around poses given with the
    particles (here the true ones, as a consensus refinement would give): the random seeds separate into
    the two states; >= 90 % of the particles in their state's class after 4 iterations (measured 96.5 %;
    chance: 50 %)."""
    folder = complex_and_subunit
    job = tmp_path / "job"
    code, output = _main(["class3d", "--i", str(folder / "truth.star"), "--ref", str(folder / "truth_map.mrc"),
                          "--o", str(job), "--K", "2", "--particle-diameter", "110", "--iter", "4",
                          "--healpix-order", "2", "--sigma-ang", "5", "--offset-step", "1"], capsys)
    assert code == 0, output
    assert max(_right_class(folder, job, 4), 1 - _right_class(folder, job, 4)) >= 0.9

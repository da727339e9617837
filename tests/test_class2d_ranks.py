"""class2d data-parallel under torchrun (gloo on CPU) gives what one process gives.

One process (the default) and ``torchrun --standalone --nproc-per-node 2 -m vitrify class2d``
with the same seed: each rank reads only its shard of the particles and runs the E-step of the
selected particles it holds, the E-step sums are all-reduced, rank 0 gathers the assignments and
writes. The outputs must agree: ≥ 98 % of the particles in the same class and the class averages
within float tolerance (the sums are only added in a different order). A run continued under
torchrun goes on as the uninterrupted one. A NaN image that only rank 1 reads stops both ranks
with its message (rank 0 reports it instead of waiting). More ranks than particles is a user
error, reported before any rank joins. The shards themselves (rows, halves, the starting model's rows) are checked
without torchrun.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from vitrify.io.errors import InputError
from vitrify.jobs._class2d_data import start_rows
from vitrify.ml.model import ParticleSet
from vitrify.ml.optimiser import shard_rows
from vitrify.ml.starts import initial_sigma2, random_psi_averages
from vitrify.ml.window import make_window

SRC = Path(__file__).resolve().parents[1] / "src"
ARGS = ["class2d", "--i", "sim/particles.star", "--K", "2", "--iter", "4", "--grad-write-iter", "2",
        "--particle-diameter", "100", "--psi-step", "15", "--threads", "1", "--device", "cpu", "--seed", "1"]


def _run(command: list[str], cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "VITRIFY_QUIET": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_ranks_classify_as_one_process(tmp_path):
    from vitrify.io.star import read_star

    vitrify = [sys.executable, "-m", "vitrify"]
    _run([*vitrify, "simulate", "particles", "--n", "60", "--box", "32", "--pixel-size", "4", "--seed", "1",
          "--device", "cpu", "--out", "sim"], tmp_path)
    _run([*vitrify, *ARGS, "--o", "one"], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    _run([*torchrun, "-m", "vitrify", *ARGS, "--o", "two"], tmp_path)
    _run([*torchrun, "-m", "vitrify", "class2d", "--continue", "two/run_it002_optimiser.star", "--iter", "4",
          "--threads", "1", "--o", "cont"], tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    a, b = (read_star(d / "run_it004_data.star")["particles"] for d in (one, two))
    assert (a["rlnClassNumber"].to_numpy() == b["rlnClassNumber"].to_numpy()).mean() >= 0.98
    refs_one, refs_two = (mrcfile.read(d / "run_it004_classes.mrcs") for d in (one, two))
    np.testing.assert_allclose(refs_two, refs_one, atol=1e-4 * float(np.abs(refs_one).max()))
    ll = [float(read_star(d / "run_it004_model.star")["model_general"]["rlnLogLikelihood"]) for d in (one, two)]
    assert ll[1] == pytest.approx(ll[0], rel=1e-6)
    log = (two / "run.log").read_text()  # rank 0's log; the other rank writes nothing
    assert "iteration 4" in log
    assert "rank 0 of 2 held 30 of 60 particles" in log and "rank 1 of 2 held 30 of 60 particles" in log
    assert "rank 0 of 1 held 60 of 60 particles" in (one / "run.log").read_text()
    c = read_star(tmp_path / "cont" / "run_it004_data.star")["particles"]
    assert (c["rlnClassNumber"].to_numpy() == b["rlnClassNumber"].to_numpy()).all()
    np.testing.assert_allclose(mrcfile.read(tmp_path / "cont" / "run_it004_classes.mrcs"), refs_two,
                               atol=1e-5 * float(np.abs(refs_two).max()))


@pytest.mark.slow
def test_a_bad_image_in_one_ranks_shard_stops_every_rank_with_its_message(tmp_path):
    """Rank 1 alone reads the NaN image (the second half); rank 0 must not wait for it."""
    from _ml_synth import write_star_dataset

    write_star_dataset(tmp_path / "sim", n_per_class=2, n=32)  # 6 particles: rows 0-1 rank 0, 2-5 rank 1
    with mrcfile.open(tmp_path / "sim/particles.mrcs", "r+") as stack:
        stack.data[5, 5, 5] = np.nan
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "VITRIFY_QUIET": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "vitrify", "class2d", "--i", "sim/particles.star", "--K", "1", "--particle-diameter",
                           "84", "--threads", "1", "--o", "bad"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240, check=False)
    assert done.returncode != 0
    log = (tmp_path / "bad" / "run.log").read_text()  # rank 0's
    assert "particles.mrcs" in log and "(read by rank 1)" in log and "finite" in log, log[-2000:]
    assert (tmp_path / "bad" / "RELION_JOB_EXIT_FAILURE").exists()


def test_more_ranks_than_particles_is_a_user_error(monkeypatch):
    import torch

    from vitrify.jobs.class2d import _join_ranks

    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(InputError, match="3 ranks for 2 particles"):
        _join_ranks(torch.device("cpu"), 2)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _join_ranks(torch.device("cpu"), 2) == (None, torch.device("cpu"))


@pytest.mark.parametrize("n, world", [(60, 2), (61, 3), (1000, 7), (5, 2)])
def test_shards_cover_every_particle_once_with_even_starts(n, world):
    rows = [shard_rows(n, world, r) for r in range(world)]
    assert rows[0][0] == 0 and rows[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:]))  # contiguous, no gap, no overlap
    assert all(start % 2 == 0 for start, _ in rows)  # local parity = row parity: the same VDAM halves
    sizes = [stop - start for start, stop in rows]
    assert max(sizes) - min(sizes) <= 2


def test_the_starting_rows_alone_give_the_starting_model_of_all_particles():
    gen = torch.Generator().manual_seed(0)
    n, box, k = 40, 16, 3
    window = make_window(box)
    p = int(window.shell.shape[0])
    group = torch.tensor([0] * 12 + [1] * 3 + [0] * 5 + [1] * 20)  # group 1 starts late
    ft = torch.randn(n, p, generator=gen, dtype=torch.complex64)
    full = ParticleSet(ft=ft, ctf=torch.rand(n, p, generator=gen) + 0.5, group=group, n_groups=2,
                       offset_px=torch.zeros(n, 2))
    rows = torch.as_tensor(start_rows(group.numpy(), n_use=8))
    assert len(rows) < n
    part = ParticleSet(ft=full.ft[rows], ctf=full.ctf[rows], group=group[rows], n_groups=2,
                       offset_px=torch.zeros(len(rows), 2))
    torch.testing.assert_close(initial_sigma2(part, window, n_per_group=8),
                               initial_sigma2(full, window, n_per_group=8), rtol=0, atol=0)
    averages = [random_psi_averages(s, window, k, 2, torch.Generator().manual_seed(3), n_use=8) for s in (part, full)]
    torch.testing.assert_close(averages[0], averages[1], rtol=0, atol=0)
    wrong = ParticleSet(ft=full.ft[-len(rows):], ctf=full.ctf[-len(rows):], group=group[-len(rows):], n_groups=2,
                        offset_px=torch.zeros(len(rows), 2))  # other rows: another model (the check can fail)
    assert not torch.equal(initial_sigma2(wrong, window, n_per_group=8), initial_sigma2(full, window, n_per_group=8))


def test_each_rank_can_check_only_the_stacks_of_its_own_rows(tmp_path):
    from _ml_synth import write_star_dataset

    from vitrify.io.star import read_star_optics, write_star_optics
    from vitrify.jobs._class2d_data import check_rows, validate_input

    star, _ = write_star_dataset(tmp_path, n_per_class=2, n=32)
    table = read_star_optics(star, "particles")
    data = table.data.copy()
    data.loc[data.index[-1], "rlnImageName"] = "000001@missing.mrcs"  # the last row: the last rank's shard
    write_star_optics(star, table.optics, data, "particles")
    with pytest.raises(InputError, match="missing.mrcs"):
        validate_input(star, 2, True)
    inp = validate_input(star, 2, True, check_stacks=False)  # ranks: metadata here, stacks per shard
    check_rows(inp, np.arange(len(data) - 1))
    with pytest.raises(InputError, match="missing.mrcs: image stack not found"):
        check_rows(inp, np.arange(len(data) - 1, len(data)))

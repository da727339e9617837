"""class2d data-parallel under torchrun (gloo on CPU) gives what one process gives.

One process (the default) and ``torchrun --standalone --nproc-per-node 2 -m vitrify class2d``
with the same seed: every rank takes half of each iteration's particles, the E-step sums and
assignments are all-reduced, rank 0 writes. The outputs must agree: ≥ 98 % of the particles in
the same class and the class averages within float tolerance (the sums are only added in a
different order). More ranks than particles is a user error, reported before any rank joins.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from vitrify.io.errors import InputError

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
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "vitrify",
          *ARGS, "--o", "two"], tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    a, b = (read_star(d / "run_it004_data.star")["particles"] for d in (one, two))
    assert (a["rlnClassNumber"].to_numpy() == b["rlnClassNumber"].to_numpy()).mean() >= 0.98
    refs_one, refs_two = (mrcfile.read(d / "run_it004_classes.mrcs") for d in (one, two))
    np.testing.assert_allclose(refs_two, refs_one, atol=1e-4 * float(np.abs(refs_one).max()))
    ll = [float(read_star(d / "run_it004_model.star")["model_general"]["rlnLogLikelihood"]) for d in (one, two)]
    assert ll[1] == pytest.approx(ll[0], rel=1e-6)
    assert "iteration 4" in (two / "run.log").read_text()  # rank 0's log; the other rank writes nothing


def test_more_ranks_than_particles_is_a_user_error(monkeypatch):
    import torch

    from vitrify.jobs.class2d import _join_ranks

    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(InputError, match="3 ranks for 2 particles"):
        _join_ranks(torch.device("cpu"), 2)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _join_ranks(torch.device("cpu"), 2) == (None, torch.device("cpu"))

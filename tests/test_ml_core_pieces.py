"""ml builds on core's masks, filters and shell sums, and its modules import each other one way."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import torch

import vitrify.ml
from vitrify.core.filters import lowpass_profile
from vitrify.core.fourier import radius_grid_2d, shell_index_2d, shell_sums
from vitrify.core.masks import apply_soft_mask
from vitrify.ml.starts import flatten_solvent, lowpass
from vitrify.ml.window import make_window, pack, window_shell_sums

ML = Path(vitrify.ml.__file__).parent


def test_solvent_flattening_is_cores_soft_mask():
    refs = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(flatten_solvent(refs, 9.0, 4.0), apply_soft_mask(refs, 9.0, 4.0, background="zero"),
                               rtol=0, atol=0)


def test_starting_lowpass_keeps_shells_up_to_the_cutoff_and_drops_those_past_the_edge():
    refs = torch.randn(2, 32, 32, generator=torch.Generator().manual_seed(1))
    f_in, f_out = torch.fft.rfft2(refs), torch.fft.rfft2(lowpass(refs, 5, 2))
    r = radius_grid_2d(32)
    assert torch.allclose(f_out[:, r <= 5], f_in[:, r <= 5], atol=1e-4)
    assert float(f_out[:, r >= 7].abs().max()) < 1e-4
    edge = (r > 5) & (r < 7)
    torch.testing.assert_close(f_out[:, edge], f_in[:, edge] * lowpass_profile(r[edge], 6.0, 2.0), atol=1e-4,
                               rtol=1e-4)
    assert math.isclose(float(lowpass_profile(torch.tensor(6.0), 6.0, 2.0)), 0.5, abs_tol=1e-7)


def test_window_shell_sums_are_cores_over_the_window():
    window = make_window(24)
    grid = torch.rand(2, 24, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    packed = pack(grid, window)
    radius = window.radius
    expected = shell_sums(grid, shell_index_2d(24), radius + 1)
    expected[:, 0] = 0.0  # the window leaves out the DC pixel
    torch.testing.assert_close(window_shell_sums(packed, window), expected)


def _imported_modules(path: Path) -> set[str]:
    """Every module imported anywhere in ``path`` (module level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_estep_does_not_import_finepass():
    """finepass builds on estep; the block runner (ml.block) joins them, so there is no cycle."""
    assert "vitrify.ml.estep" in _imported_modules(ML / "finepass.py")
    assert "vitrify.ml.finepass" not in _imported_modules(ML / "estep.py")
    assert {"vitrify.ml.estep", "vitrify.ml.finepass"} <= _imported_modules(ML / "block.py")

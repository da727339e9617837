"""Class2D output helpers: the gallery mosaic and the PNG."""

from __future__ import annotations

import numpy as np
import torch

from vitrify.jobs._class2d_output import gallery_mosaic, write_gallery


def test_gallery_mosaic_puts_each_class_scaled_in_its_tile_in_order():
    g = torch.Generator().manual_seed(0)
    refs = torch.randn(5, 8, 8, generator=g) * torch.arange(1, 6)[:, None, None]
    order = [3, 0, 4, 1, 2]
    out = gallery_mosaic(refs, order, cols=2)
    assert out.shape == (3 * 9 + 1, 2 * 9 + 1)
    for i, c in enumerate(order):
        r, q = divmod(i, 2)
        tile = out[1 + 9 * r: 9 + 9 * r, 1 + 9 * q: 9 + 9 * q]
        img = refs[c].numpy()
        np.testing.assert_allclose(tile, (img - img.min()) / (img.max() - img.min()), atol=1e-6)
    assert np.all(out[1 + 9 * 2: 9 + 9 * 2, 1 + 9: 9 + 9] == 1.0)  # the empty sixth tile


def test_write_gallery_writes_a_png(tmp_path):
    path = tmp_path / "g.png"
    write_gallery(path, torch.randn(12, 16, 16), torch.full((12,), 1 / 12))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

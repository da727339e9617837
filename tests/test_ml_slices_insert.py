"""Slice insertion through the transposed CSR matrix equals the per-corner scatter it replaced."""

from __future__ import annotations

import torch

from vitrify.core.euler import euler_to_matrix
from vitrify.ml.slices import fold_plane0, insert_slices, make_slice_table, slice_radius, subset_rows


def _insert_by_corners(data2d, weight2d, table):
    """Reference: every trilinear corner added with ``index_add_`` (the former implementation)."""
    c, d, m, half = data2d.shape
    col = torch.ones(half)
    col[0] = 0.5
    d2 = (data2d * col).reshape(c, d, -1)[:, :, table.flat2d].reshape(c, -1)
    w2 = (weight2d * col).reshape(c, d, -1)[:, :, table.flat2d].reshape(c, -1)
    d2 = torch.where(table.conj, d2.conj(), d2)
    src = torch.cat([d2.real, d2.imag, w2.float()]).t()
    contrib = (src[:, None, :] * table.weight[..., None]).reshape(-1, 3 * c)
    g = table.g
    acc = torch.zeros(g * g * (g // 2 + 1), 3 * c).index_add_(0, table.index.reshape(-1), contrib)
    data = torch.complex(acc[:, :c].t(), acc[:, c:2 * c].t()).reshape(c, g, g, g // 2 + 1)
    return fold_plane0(data), fold_plane0(acc[:, 2 * c:].t().reshape(c, g, g, g // 2 + 1))


def test_insert_slices_matches_the_corner_scatter():
    gen = torch.Generator().manual_seed(3)
    angles = torch.rand(7, 3, generator=gen, dtype=torch.float64) * torch.tensor([360.0, 180.0, 360.0])
    table = make_slice_table(euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2]).float(), 12,
                             slice_radius(4))
    m = table.m
    data = torch.randn(2, 7, m, m // 2 + 1, dtype=torch.complex64, generator=gen)
    weight = torch.rand(2, 7, m, m // 2 + 1, generator=gen)
    for tab, sel in ((table, slice(None)), (subset_rows(table, torch.tensor([1, 4, 5])), [1, 4, 5])):
        got, want = insert_slices(data[:, sel], weight[:, sel], tab), _insert_by_corners(data[:, sel], weight[:, sel],
                                                                                         tab)
        assert want[1].abs().max() > 0
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)


def test_frame_to_slices_matches_the_per_direction_scatter():
    from vitrify.ml.inimodel import frame_to_slices
    from vitrify.ml.orient3d import make_orientations, select_directions
    from vitrify.ml.templates import make_rotation_table, scatter_stacked_to_grids
    from vitrify.ml.window import make_window

    gen = torch.Generator().manual_seed(4)
    o, win, h, k = make_orientations(0), make_window(12), 2, 2
    d, n_psi = o.directions_deg.shape[0], o.psi_deg.shape[0]
    p = win.pixels_within(4)
    for fine, psi, rows in ((False, o.psi_deg, k * d * n_psi), (True, o.fine_psi_deg, 8 * k * d * n_psi)):
        table = make_rotation_table(psi, win, 2, p)
        data, weight = torch.randn(h, rows, 2 * p, generator=gen), torch.rand(h, rows, p, generator=gen)
        dirs = torch.arange(4 * d if fine else d)
        dsel = select_directions(data, dirs, k, d, n_psi, fine).reshape(-1, psi.shape[0], 2 * p)
        wsel = select_directions(weight, dirs, k, d, n_psi, fine).reshape(-1, psi.shape[0], p)
        want = scatter_stacked_to_grids(dsel[..., :p], dsel[..., p:], wsel, table)
        got = frame_to_slices(data, weight, k, d, fine, table)
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-4)

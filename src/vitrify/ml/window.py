"""Shell-sorted Fourier windows: the pixel layout every E-step array lives in.

A :class:`FourierWindow` lists the pixels of a half-plane rfft grid ``(n, n//2+1)``
(torch's layout, DC at index 0) whose shell index ``round(|k|)`` lies in ``1..radius``,
sorted by shell. A window of a smaller radius is then a *prefix* of the packed vector,
so resolution changes are slices, and per-shell sums are segment sums.

The half plane holds every independent Fourier component once, except the ``kx = 0``
column, whose ``ky`` and ``-ky`` entries are complex conjugates; they carry the weight
``h = 1/2`` so that sums over the window equal sums over independent components.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vitrify.core.fourier import shell_sums


@dataclass(frozen=True)
class FourierWindow:
    """Packed pixel layout of radius ``radius`` for images of ``box_px`` pixels.

    Attributes
    ----------
    box_px
        Image size n (square images).
    radius
        Largest shell kept (``1 <= radius <= n//2 - 1``).
    kx, ky
        ``(P,)`` float32 frequencies in pixels (cycles per box), ``ky`` signed.
    flat_index
        ``(P,)`` long, index into the flattened rfft grid ``(n * (n//2+1))``.
    shell
        ``(P,)`` long, ``round(|k|)``, non-decreasing.
    half_weight
        ``(P,)`` float32, ``h``: 0.5 on the ``kx = 0`` column, else 1.
    shell_end
        ``(radius+1,)`` long, number of packed pixels with shell <= s (``shell_end[0] = 0``).
    """

    box_px: int
    radius: int
    kx: torch.Tensor
    ky: torch.Tensor
    flat_index: torch.Tensor
    shell: torch.Tensor
    half_weight: torch.Tensor
    shell_end: torch.Tensor

    @property
    def size(self) -> int:
        """Number of packed pixels P."""
        return int(self.kx.shape[0])

    def pixels_within(self, radius: int) -> int:
        """Number of packed pixels with shell <= ``radius`` (the prefix length)."""
        radius = max(0, min(int(radius), self.radius))
        return int(self.shell_end[radius])

    def to(self, device: torch.device) -> "FourierWindow":
        """The same window with its tensors on ``device``."""
        move = {k: getattr(self, k).to(device) for k in
                ("kx", "ky", "flat_index", "shell", "half_weight", "shell_end")}
        return FourierWindow(self.box_px, self.radius, **move)


def make_window(box_px: int, radius: int | None = None) -> FourierWindow:
    """Build the shell-sorted window of ``radius`` (default ``n//2 - 1``) for an ``n``-pixel box.

    Examples
    --------
    >>> w = make_window(16)
    >>> w.radius, int(w.shell[0]), bool((w.shell[1:] >= w.shell[:-1]).all())
    (7, 1, True)
    """
    n = int(box_px)
    r_max = n // 2 - 1
    radius = r_max if radius is None else int(radius)
    if not 1 <= radius <= r_max:
        raise ValueError(f"window radius {radius} outside 1..{r_max} for box {n}")
    ky = np.fft.fftfreq(n, d=1.0 / n)[:, None] * np.ones((1, n // 2 + 1))
    kx = np.arange(n // 2 + 1)[None, :] * np.ones((n, 1))
    shell = np.rint(np.hypot(kx, ky)).astype(np.int64)
    keep = (shell >= 1) & (shell <= radius)
    flat = np.flatnonzero(keep.ravel())
    order = np.argsort(shell.ravel()[flat], kind="stable")
    flat = flat[order]
    s = shell.ravel()[flat]
    h = np.where(kx.ravel()[flat] == 0, 0.5, 1.0)
    ends = np.searchsorted(s, np.arange(radius + 1), side="right")
    return FourierWindow(
        box_px=n,
        radius=radius,
        kx=torch.tensor(kx.ravel()[flat], dtype=torch.float32),
        ky=torch.tensor(ky.ravel()[flat], dtype=torch.float32),
        flat_index=torch.tensor(flat, dtype=torch.long),
        shell=torch.tensor(s, dtype=torch.long),
        half_weight=torch.tensor(h, dtype=torch.float32),
        shell_end=torch.tensor(ends, dtype=torch.long),
    )


def pack(grid: torch.Tensor, window: FourierWindow) -> torch.Tensor:
    """Gather window pixels from rfft grids.

    Parameters
    ----------
    grid
        ``(..., n, n//2+1)`` real or complex, torch rfft layout.

    Returns
    -------
    ``(..., P)`` packed values in shell order.
    """
    flat = grid.reshape(*grid.shape[:-2], -1)
    return flat[..., window.flat_index.to(grid.device)]


def unpack(packed: torch.Tensor, window: FourierWindow) -> torch.Tensor:
    """Scatter packed values ``(..., P')`` (``P' <= P``, a prefix) back to ``(..., n, n//2+1)`` grids
    (zeros elsewhere)."""
    n = window.box_px
    p = packed.shape[-1]
    out = packed.new_zeros(*packed.shape[:-1], n * (n // 2 + 1))
    out[..., window.flat_index[:p].to(packed.device)] = packed
    return out.reshape(*packed.shape[:-1], n, n // 2 + 1)


def window_shell_sums(values: torch.Tensor, window: FourierWindow) -> torch.Tensor:
    """Sum packed values ``(..., P')`` per shell: returns ``(..., radius+1)`` (entry 0 is 0).

    :func:`vitrify.core.fourier.shell_sums` over the shells of the window's first ``P'`` pixels.
    """
    p = values.shape[-1]
    return shell_sums(values, window.shell[:p].to(values.device), window.radius + 1)

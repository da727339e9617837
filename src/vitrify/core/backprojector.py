"""Back-projection: insert Fourier slices (data and weights) into a padded 3D/2D grid, reconstruct.

Slices are inserted with the adjoint of the projector's trilinear (bilinear) interpolation: each
half-plane pixel ``k`` of orientation ``A`` lands at ``pad · Aᵀ (kx, ky, 0)`` in a ``P = pad · n``
grid (centred half layout, Friedel mates conjugated), spread over its 8 (4) neighbours with the
linear weights. Alongside the data ``Σ w_lin · v`` the grid accumulates ``Σ w_lin · weight`` where
``weight`` is the caller's per-pixel weight (e.g. ``CTF²/σ²`` when the data are ``CTF · x / σ²``).

Reconstruction (per voxel, RELION's Wiener form)::

    F = data / max(weight + 1 / (pad**d · tau2_fudge · tau2[shell]), floor)

with ``shell`` the radius in pixels of the original box, ``floor = weight_floor · mean(weight > 0)``,
``F = 0`` beyond ``max_radius_px`` (default ``n/2``) or where ``tau2 <= 0``. Without ``tau2`` the
data are simply normalised by the weights. The ``kx = 0`` plane is made Hermitian first (each voxel
summed with the conjugate of its mirror, as RELION does). The map is the inverse transform of the
padded grid, cropped to ``n``; ``gridding_correction=True`` also divides by the interpolation
footprint (on by default: normalising by the weights leaves the map multiplied by it).
"""

from __future__ import annotations

import torch

from vitrify.core import _interp
from vitrify.core.projector import _pixels_in_radius, crop_centered, gridding_kernel, \
    slice_coordinates
from vitrify.errors import InputError

__all__ = ["BackProjector"]


class BackProjector:
    """Accumulates Fourier slices of one map.

    Parameters
    ----------
    box_px
        Box ``n`` of the images / map.
    pad
        Padding factor of the accumulation grid.
    ndim
        3 (slices of a 3D map, rotations ``(..., 3, 3)``) or 2 (2D images, rotations ``(..., 2, 2)``).
    device, dtype
        Of the grids (real dtype; data are the matching complex dtype).

    Attributes
    ----------
    data
        ``(P, P, P//2+1)`` (or ``(P, P//2+1)``) complex, centred half layout.
    weight
        Same shape, real.
    """

    def __init__(self, box_px: int, pad: int = 2, *, ndim: int = 3, device=None,
                 dtype: torch.dtype = torch.float32) -> None:
        if ndim not in (2, 3):
            raise InputError(f"ndim must be 2 or 3, got {ndim}", field="ndim", expected="2 or 3")
        if not isinstance(pad, int) or pad < 1:
            raise InputError(f"padding factor must be a positive integer, got {pad!r}", field="pad",
                             expected="1, 2, ...")
        self.box_px, self.pad, self.ndim = box_px, pad, ndim
        size = pad * box_px
        shape = (size,) * (ndim - 1) + (size // 2 + 1,)
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        self.data = torch.zeros(shape, device=device, dtype=cdtype)
        self.weight = torch.zeros(shape, device=device, dtype=dtype)

    def insert(self, slices_ft: torch.Tensor, weights: torch.Tensor | None, rotations: torch.Tensor,
               max_radius_px: float | None = None) -> None:
        """Add slices to the grids.

        Parameters
        ----------
        slices_ft
            ``(..., n, n//2+1)`` complex, layout of ``rfft2_centered``.
        weights
            ``(..., n, n//2+1)`` real per-pixel weights (broadcastable), or None for 1.
        rotations
            ``(..., d, d)`` RELION matrices, one per slice (same leading shape as ``slices_ft``).
        max_radius_px
            Pixels beyond this frequency radius are skipped; default ``n/2``.
        """
        n, d = self.box_px, self.ndim
        lead = slices_ft.shape[:-2]
        mats = rotations.reshape(-1, d, d).to(self.weight.dtype)
        if rotations.shape[:-2] != lead:
            raise InputError(f"{tuple(rotations.shape[:-2])} rotations for {tuple(lead)} slices",
                             field="rotations", expected="one rotation per slice")
        flat, k2 = _pixels_in_radius(n, max_radius_px, mats.device, mats.dtype)
        coords = slice_coordinates(mats, k2, self.pad).reshape(-1, d)
        index, lin, conj = _interp.corner_table(coords, self.data.shape)
        values = slices_ft.reshape(-1, n * (n // 2 + 1))[:, flat].reshape(1, -1).to(self.data.dtype)
        if weights is None:
            sample_w = None
        else:
            w = torch.broadcast_to(weights, (*lead, n, n // 2 + 1))
            sample_w = w.reshape(-1, n * (n // 2 + 1))[:, flat].reshape(-1).to(self.weight.dtype)
        _interp.scatter_half(self.data.view(1, -1), self.weight.view(1, -1), values, sample_w,
                             index, lin, conj)

    def _hermitian_plane(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Data and weights with the ``kx = 0`` plane summed with its conjugate mirror."""
        data, weight = self.data.clone(), self.weight.clone()
        size = self.pad * self.box_px
        # centred index i holds k = i - size//2; its mirror -k sits at (size - i) % size
        idx = torch.remainder(size - torch.arange(size, device=data.device), size)
        plane_d, plane_w = data[..., 0], weight[..., 0]
        for axis in range(plane_d.ndim):
            plane_d = plane_d.index_select(axis, idx)
            plane_w = plane_w.index_select(axis, idx)
        data[..., 0] = self.data[..., 0] + plane_d.conj()
        weight[..., 0] = self.weight[..., 0] + plane_w
        return data, weight

    def _radius_shells(self) -> torch.Tensor:
        """Radius of every grid voxel in pixels of the original box."""
        size = self.pad * self.box_px
        c = (torch.arange(size, device=self.weight.device, dtype=torch.float64) - size // 2)
        x = torch.arange(size // 2 + 1, device=self.weight.device, dtype=torch.float64)
        axes = [c] * (self.ndim - 1) + [x]
        grids = torch.meshgrid(*axes, indexing="ij")
        return torch.sqrt(sum(g * g for g in grids)) / self.pad

    def reconstruct(self, tau2: torch.Tensor | None = None, *, tau2_fudge: float = 1.0,
                    weight_floor: float = 1e-3, max_radius_px: float | None = None,
                    gridding_correction: bool = True) -> torch.Tensor:
        """Map from the accumulated slices.

        Parameters
        ----------
        tau2
            ``(n_shells,)`` signal power per shell of the original box (RELION's tau2), or None.
        tau2_fudge
            Multiplies ``tau2`` (RELION ``--tau2_fudge``).
        weight_floor
            Denominator floor as a fraction of the mean positive weight.
        max_radius_px
            Frequencies beyond are set to 0; default ``n/2``.
        gridding_correction
            Divide the map by the linear-interpolation footprint.

        Returns
        -------
        torch.Tensor
            ``(n, n, n)`` (or ``(n, n)``) real, centred.
        """
        n, d, size = self.box_px, self.ndim, self.pad * self.box_px
        data, weight = self._hermitian_plane()
        radius = self._radius_shells()
        positive = weight[weight > 0]
        floor = weight_floor * (positive.mean() if positive.numel() else weight.new_tensor(1.0))
        denom = weight
        keep = radius <= (n / 2 if max_radius_px is None else max_radius_px)
        if tau2 is not None:
            shells = torch.round(radius).long().clamp(max=tau2.shape[-1] - 1)
            t = tau2.to(weight.device, weight.dtype)[shells] * (self.pad ** d * tau2_fudge)
            keep = keep & (t > 0) & (radius.round() < tau2.shape[-1])
            denom = weight + 1.0 / torch.where(t > 0, t, torch.ones_like(t))
        f = torch.where(keep, data / torch.clamp(denom, min=floor).to(data.real.dtype),
                        torch.zeros_like(data))
        dims = tuple(range(-d, 0))
        img = torch.fft.irfftn(_interp.rfft_from_half(f, d), s=(size,) * d, dim=dims)
        out = crop_centered(torch.fft.fftshift(img, dim=dims), n, d)
        if gridding_correction:
            out = out / gridding_kernel(n, size, d, device=out.device, dtype=out.dtype)
        return out

    @property
    def n_voxels_touched(self) -> int:
        """Number of grid voxels with a positive weight (diagnostics)."""
        return int((self.weight > 0).sum())


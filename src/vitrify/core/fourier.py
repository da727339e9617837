"""Fourier transforms in vitrify's layout, frequency grids, shells, cropping and padding.

Layout (binding for core, sim, ml, preprocess; see docs/conventions.md):

* Real-space images ``(..., n, n)`` and volumes ``(..., n, n, n)`` are centred at index ``n // 2``
  on every axis; axes are ordered ``(z, y, x)`` (x fastest), as in MRC files.
* Their transforms are ``rfftn(ifftshift(x))`` over the last 2 (3) axes, so a centred, symmetric
  object has a real transform. The result stays in torch's native rfft layout: DC at index 0, row
  ``i`` holds frequency ``fftfreq(n)[i] * n`` (negative frequencies in the second half, the Nyquist
  row of an even box is ``-n/2``), the last axis holds ``kx = 0 .. n//2``.
* Forward transforms are unnormalised (torch's ``"backward"`` norm): the DC term is the sum of the
  pixels, and the inverse functions return the original values exactly.

Frequencies are integers "in pixels of the box": ``k / (n * pixel_size_angst)`` is the spatial
frequency in 1/Å. Shell ``s`` holds the pixels with ``round(|k|) == s``.
"""

from __future__ import annotations

import torch

from vitrify.errors import InputError

__all__ = [
    "rfft2_centered",
    "irfft2_centered",
    "rfft3_centered",
    "irfft3_centered",
    "fft2_centered",
    "ifft2_centered",
    "frequency_grid_2d",
    "frequency_grid_3d",
    "radius_grid_2d",
    "radius_grid_3d",
    "shell_index_2d",
    "shell_index_3d",
    "hermitian_weights_2d",
    "shell_sums",
    "fourier_crop_2d",
    "fourier_pad_2d",
    "rescale_2d",
    "rescale_3d",
]


def rfft2_centered(images: torch.Tensor) -> torch.Tensor:
    """Half-plane transform of centred images.

    Parameters
    ----------
    images
        ``(..., n, n)`` real, centred at ``n // 2``.

    Returns
    -------
    torch.Tensor
        ``(..., n, n//2+1)`` complex, DC at ``[0, 0]``.
    """
    return torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1)))


def irfft2_centered(images_ft: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`rfft2_centered`: ``(..., n, n//2+1)`` complex -> ``(..., n, n)`` real."""
    out = torch.fft.irfft2(images_ft, s=(n, n))
    return torch.fft.fftshift(out, dim=(-2, -1))


def rfft3_centered(volumes: torch.Tensor) -> torch.Tensor:
    """Half-space transform of centred volumes: ``(..., n, n, n)`` -> ``(..., n, n, n//2+1)``."""
    return torch.fft.rfftn(torch.fft.ifftshift(volumes, dim=(-3, -2, -1)), dim=(-3, -2, -1))


def irfft3_centered(volumes_ft: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`rfft3_centered`: ``(..., n, n, n//2+1)`` -> ``(..., n, n, n)`` real."""
    out = torch.fft.irfftn(volumes_ft, s=(n, n, n), dim=(-3, -2, -1))
    return torch.fft.fftshift(out, dim=(-3, -2, -1))


def fft2_centered(images: torch.Tensor) -> torch.Tensor:
    """Full-plane transform of centred images: ``(..., n, n)`` -> ``(..., n, n)`` complex, DC at 0."""
    return torch.fft.fft2(torch.fft.ifftshift(images, dim=(-2, -1)))


def ifft2_centered(images_ft: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2_centered` (real part): ``(..., n, n)`` -> ``(..., n, n)``."""
    return torch.fft.fftshift(torch.fft.ifft2(images_ft), dim=(-2, -1)).real


def _freqs(n: int, device, dtype) -> torch.Tensor:
    """``fftfreq(n) * n`` as exact integers (``0, 1, ..., -1``; fftfreq's float64 is off by an ulp)."""
    k = torch.arange(n, device=device)
    return (torch.remainder(k + n // 2, n) - n // 2).to(dtype)


def _rfreqs(n: int, device, dtype) -> torch.Tensor:
    return torch.arange(n // 2 + 1, device=device, dtype=dtype)


def frequency_grid_2d(n: int, *, rfft: bool = True, device=None,
                      dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer frequencies ``(ky, kx)`` of the 2D layout, each ``(n, n//2+1)`` (or ``(n, n)``)."""
    ky = _freqs(n, device, dtype)
    kx = _rfreqs(n, device, dtype) if rfft else _freqs(n, device, dtype)
    grid_y, grid_x = torch.meshgrid(ky, kx, indexing="ij")
    return grid_y, grid_x


def frequency_grid_3d(n: int, *, rfft: bool = True, device=None,
                      dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """Integer frequencies ``(kz, ky, kx)``, each ``(n, n, n//2+1)`` (or ``(n, n, n)``)."""
    kz = _freqs(n, device, dtype)
    kx = _rfreqs(n, device, dtype) if rfft else _freqs(n, device, dtype)
    return torch.meshgrid(kz, kz, kx, indexing="ij")


def radius_grid_2d(n: int, *, rfft: bool = True, device=None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``|k|`` in pixels of frequency, ``(n, n//2+1)`` (or ``(n, n)``)."""
    ky, kx = frequency_grid_2d(n, rfft=rfft, device=device, dtype=dtype)
    return torch.sqrt(ky * ky + kx * kx)


def radius_grid_3d(n: int, *, rfft: bool = True, device=None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``|k|`` in pixels of frequency, ``(n, n, n//2+1)`` (or ``(n, n, n)``)."""
    kz, ky, kx = frequency_grid_3d(n, rfft=rfft, device=device, dtype=dtype)
    return torch.sqrt(kz * kz + ky * ky + kx * kx)


def shell_index_2d(n: int, *, rfft: bool = True, oversampling: int = 1, device=None) -> torch.Tensor:
    """Shell of every pixel, ``round(|k| / oversampling)`` as int64, ``(n, n//2+1)`` (or ``(n, n)``).

    ``oversampling = pad`` gives, on the grid of an image zero-padded ``pad`` times, the shell of
    the unpadded image each pixel belongs to (ties round to even). Shells ``0 .. ~n/√2``.
    """
    return torch.round(radius_grid_2d(n, rfft=rfft, device=device, dtype=torch.float64) / oversampling).long()


def shell_index_3d(n: int, *, rfft: bool = True, device=None) -> torch.Tensor:
    """Shell of every voxel, ``round(|k|)`` as int64, ``(n, n, n//2+1)``."""
    return torch.round(radius_grid_3d(n, rfft=rfft, device=device, dtype=torch.float64)).long()


def hermitian_weights_2d(n: int, *, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Multiplicity of each half-plane pixel in the full plane, ``(n, n//2+1)``.

    1 on the ``kx = 0`` column (and the Nyquist column of an even box), 2 elsewhere, so that
    ``sum(w * |F|**2)`` over the half plane equals the full-plane sum.
    """
    w = torch.full((n, n // 2 + 1), 2.0, device=device, dtype=dtype)
    w[:, 0] = 1.0
    if n % 2 == 0:
        w[:, -1] = 1.0
    return w


def shell_sums(values: torch.Tensor, shells: torch.Tensor, n_shells: int, *, mean: bool = False) -> torch.Tensor:
    """Sum (or average) ``values`` per shell.

    Parameters
    ----------
    values
        ``(..., *grid)`` real; the trailing dims match ``shells``.
    shells
        ``grid`` int64 shell indices (e.g. from :func:`shell_index_2d`).
    n_shells
        Shells ``0 .. n_shells-1`` are kept; pixels beyond are dropped.
    mean
        Divide each sum by the number of pixels of its shell (empty shells stay 0).

    Returns
    -------
    torch.Tensor
        ``(..., n_shells)``.
    """
    flat_shells = shells.reshape(-1)
    lead = values.shape[: values.ndim - shells.ndim]
    flat = values.reshape(*lead, -1)
    keep = flat_shells < n_shells
    idx = flat_shells[keep]
    out = torch.zeros(*lead, n_shells, device=values.device, dtype=values.dtype)
    out = out.index_add_(-1, idx, flat[..., keep])
    if not mean:
        return out
    count = torch.zeros(n_shells, device=values.device, dtype=values.dtype)
    return out / count.index_add_(0, idx, torch.ones_like(idx, dtype=values.dtype)).clamp_min(1)


def _check_sizes(n_in: int, n_out: int) -> None:
    if n_out < 1 or n_in < 1:
        raise InputError(f"box sizes must be positive, got {n_in} -> {n_out}", field="box_px",
                         expected="a positive integer")


def _row_indices(n_in: int, n_out: int, device) -> torch.Tensor:
    """Rows of an ``n_in`` half-plane that hold the frequencies of an ``n_out`` grid (n_out <= n_in)."""
    k = _freqs(n_out, device, torch.float64).long()
    return torch.remainder(k, n_in)


def fourier_crop_2d(images_ft: torch.Tensor, n_out: int) -> torch.Tensor:
    """Keep the ``n_out`` lowest frequencies of a half-plane transform.

    ``(..., n, n//2+1)`` -> ``(..., n_out, n_out//2+1)``; values are not rescaled.
    """
    n_in = images_ft.shape[-2]
    _check_sizes(n_in, n_out)
    if n_out > n_in:
        raise InputError(f"cannot crop a box of {n_in} to {n_out}", field="box_px",
                         expected=f"at most {n_in}")
    rows = _row_indices(n_in, n_out, images_ft.device)
    return images_ft[..., rows, : n_out // 2 + 1]


def fourier_pad_2d(images_ft: torch.Tensor, n_out: int) -> torch.Tensor:
    """Zero-pad a half-plane transform to a bigger box: ``(..., n, n//2+1)`` -> ``(..., n_out, n_out//2+1)``."""
    n_in = images_ft.shape[-2]
    _check_sizes(n_in, n_out)
    if n_out < n_in:
        raise InputError(f"cannot pad a box of {n_in} to {n_out}", field="box_px",
                         expected=f"at least {n_in}")
    out = images_ft.new_zeros(*images_ft.shape[:-2], n_out, n_out // 2 + 1)
    if n_out == n_in:
        return out + images_ft
    rows = _row_indices(n_out, n_in, images_ft.device)
    src = images_ft
    if n_in % 2 == 0:  # the Nyquist row/column stands for +n/2 and -n/2 together: split it
        src = images_ft.clone()
        src[..., n_in // 2, :] *= 0.5
        src[..., n_in // 2] *= 0.5
    out[..., rows, : n_in // 2 + 1] = src
    if n_in % 2 == 0:
        out[..., n_in // 2, : n_in // 2 + 1] = src[..., n_in // 2, :]
    return out


def rescale_2d(images: torch.Tensor, n_out: int) -> torch.Tensor:
    """Resample centred images to another box by Fourier cropping/padding.

    The physical field of view is kept, so the pixel size becomes ``pixel * n / n_out``; pixel
    values (mean, contrast) are preserved.

    Parameters
    ----------
    images
        ``(..., n, n)`` real.
    n_out
        New box size in pixels.

    Returns
    -------
    torch.Tensor
        ``(..., n_out, n_out)`` real.
    """
    n_in = images.shape[-1]
    f = rfft2_centered(images)
    f = fourier_crop_2d(f, n_out) if n_out <= n_in else fourier_pad_2d(f, n_out)
    return irfft2_centered(f, n_out) * (n_out / n_in) ** 2


def rescale_3d(volume: torch.Tensor, n_out: int) -> torch.Tensor:
    """Resample centred volumes ``(..., n, n, n)`` to ``(..., n_out, n_out, n_out)`` (see :func:`rescale_2d`)."""
    n_in = volume.shape[-1]
    _check_sizes(n_in, n_out)
    f = rfft3_centered(volume)
    m = min(n_in, n_out)
    rows_small = _freqs(m, volume.device, torch.float64).long()
    src = torch.remainder(rows_small, n_in)
    dst = torch.remainder(rows_small, n_out)
    out = f.new_zeros(*f.shape[:-3], n_out, n_out, n_out // 2 + 1)
    block = f[..., src[:, None], src[None, :], : m // 2 + 1]
    out[..., dst[:, None], dst[None, :], : m // 2 + 1] = block
    return irfft3_centered(out, n_out) * (n_out / n_in) ** 3

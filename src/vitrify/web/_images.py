"""PNG pictures for the page, drawn with Pillow from MRC data: micrographs with their picks,
2D class averages, and central slices of 3D maps.

Images are shown as RELION's display does: contrast from the mean ± ``sigma_contrast``
standard deviations (pixels beyond are clipped), white = high density. Large micrographs are
binned (block mean) to at most ``max_size_px`` before drawing.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vitrify.io.mrc import open_stack


def to_grey(image: np.ndarray, sigma_contrast: float = 3.0) -> np.ndarray:
    """``(ny, nx)`` float image → ``(ny, nx)`` uint8, mean ± ``sigma_contrast`` std mapped to 0..255.

    Examples
    --------
    >>> to_grey(np.array([[0.0, 1.0], [2.0, 3.0]]), sigma_contrast=1.0).tolist()
    [[0, 70], [185, 255]]
    """
    image = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros(image.shape, dtype=np.uint8)
    mean, std = float(image[finite].mean()), float(image[finite].std())
    low, high = mean - sigma_contrast * std, mean + sigma_contrast * std
    if high <= low:
        return np.full(image.shape, 128, dtype=np.uint8)
    scaled = np.clip((np.where(finite, image, mean) - low) / (high - low), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def bin_factor(shape_px: tuple[int, int], max_size_px: int) -> int:
    """The smallest integer binning that brings the larger side to at most ``max_size_px``.

    >>> bin_factor((4096, 4096), 1024), bin_factor((1000, 800), 1024)
    (4, 1)
    """
    return max(1, -(-max(shape_px) // max_size_px))


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean binning of a ``(ny, nx)`` image by ``factor`` (the ragged edge is dropped)."""
    if factor <= 1:
        return image
    ny, nx = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor).mean(axis=(1, 3))


def png_bytes(grey: np.ndarray | Image.Image) -> bytes:
    """Encode a uint8 ``(ny, nx)`` array or a Pillow image as PNG."""
    picture = grey if isinstance(grey, Image.Image) else Image.fromarray(grey, mode="L")
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=False)
    return out.getvalue()


def micrograph_png(path: Path, picks_px: np.ndarray, radius_px: float, max_size_px: int = 768) -> bytes:
    """A micrograph, binned to at most ``max_size_px``, with a circle around each pick.

    ``picks_px`` is ``(n, 2)`` (x, y) in the micrograph's pixels, RELION's coordinate convention
    (x along the columns, y along the rows, origin at the first pixel).
    """
    with open_stack(path) as stack:
        image = stack[0]
    factor = bin_factor(image.shape, max_size_px)
    picture = Image.fromarray(to_grey(bin_image(image, factor)), mode="L").convert("RGB")
    draw = ImageDraw.Draw(picture)
    r = max(2.0, radius_px / factor)
    for x, y in np.asarray(picks_px, dtype=float).reshape(-1, 2) / factor:
        draw.ellipse((x - r, y - r, x + r, y + r), outline=(40, 220, 90), width=2)
    return png_bytes(picture)


def stack_image_png(path: Path, index: int, size_px: int = 128) -> bytes:
    """Image ``index`` (0-based) of an MRC stack, scaled to ``size_px`` square."""
    with open_stack(path) as stack:
        image = stack[index]
    picture = Image.fromarray(to_grey(image), mode="L")
    return png_bytes(picture.resize((size_px, size_px), Image.Resampling.BILINEAR))


def central_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The three central sections of a ``(nz, ny, nx)`` map: XY (z = nz//2), XZ, YZ."""
    nz, ny, nx = volume.shape
    return [volume[nz // 2], volume[:, ny // 2, :], volume[:, :, nx // 2]]


def map_slices_png(path: Path, size_px: int = 192) -> bytes:
    """Central XY, XZ and YZ sections of a map side by side, on one contrast scale."""
    with open_stack(path) as stack:
        volume = np.asarray(stack.data, dtype=np.float32)
    slices = central_slices(volume)
    grey = to_grey(np.concatenate([s.ravel() for s in slices]))
    pictures, start = [], 0
    for section in slices:
        part = grey[start:start + section.size].reshape(section.shape)
        start += section.size
        pictures.append(Image.fromarray(part, mode="L").resize((size_px, size_px), Image.Resampling.BILINEAR))
    sheet = Image.new("L", (3 * size_px + 8, size_px), color=0)
    for number, picture in enumerate(pictures):
        sheet.paste(picture, (number * (size_px + 4), 0))
    return png_bytes(sheet)

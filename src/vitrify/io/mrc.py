"""MRC / MRCS images, stacks and maps (via ``mrcfile``), as RELION 4 reads and writes them.

* Read: modes 0 (int8), 1 (int16), 2 (float32), 6 (uint16), 12 (float16) and SerialEM's 101
  (4-bit, two pixels per byte, low nibble first); complex modes 3/4 are rejected.
* Write: mode 2 (float32), or mode 12 (float16) when ``float16=True``; pixel size in the header
  (cell = pixel size * n on each axis); ``.mrcs`` files are image stacks (``ispg = 0``), ``.mrc``
  files a single image or a 3D map (``ispg = 1``). Written atomically.
* Shapes: a 2D image ``(ny, nx)``, a stack ``(n, ny, nx)`` (``.mrcs`` always 3D, even for one image),
  a map ``(nz, ny, nx)``; row 0 is the first row in the file (no flip).
* Truncated or corrupt files raise :class:`~vitrify.io.errors.InputError` naming the file.

Examples
--------
>>> import tempfile, pathlib, numpy as np
>>> path = pathlib.Path(tempfile.mkdtemp()) / "s.mrcs"
>>> write_mrc(path, np.ones((3, 8, 8)), pixel_size_angst=1.5)
>>> data, pixel = read_mrc(path)
>>> data.shape, data.dtype == np.float32, pixel
((3, 8, 8), True, 1.5)
"""

from __future__ import annotations

import contextlib
import datetime
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import mrcfile
import numpy as np

from vitrify.io._mrc_modes import check_header, read_4bit
from vitrify.io.atomic import atomic_path
from vitrify.io.errors import InputError

__all__ = ["MrcStack", "check_finite", "open_stack", "read_images", "read_mrc", "read_mrc_header", "write_mrc"]

_COMPLEX_MODES = {3: "complex int16", 4: "complex float32"}
_CORRUPT = (ValueError, OSError, EOFError, IndexError)


@contextlib.contextmanager
def _open(path: Path, opener=mrcfile.open) -> Iterator[mrcfile.mrcfile.MrcFile]:
    """Open an MRC file, turning every failure into an InputError naming it."""
    if not path.is_file():
        raise InputError("file not found", path=path)
    handle = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            handle = _open_lenient(path, opener)
    except _CORRUPT as exc:
        raise InputError(f"truncated or corrupt MRC file ({exc})", path=path, expected="an MRC file") from None
    try:
        yield handle
    finally:
        handle.close()


def _open_lenient(path: Path, opener):
    """Strict open; files lacking only the 'MAP ' id or machine stamp are opened permissively."""
    try:
        return opener(path, mode="r")
    except ValueError as exc:
        if "Map ID" not in str(exc) and "machine stamp" not in str(exc):
            raise
    handle = opener(path, mode="r", permissive=True)
    if handle.data is None:
        handle.close()
        raise ValueError("header or data block unreadable")
    return handle


def _header_mode(path: Path) -> int:
    """The mode word of the header (checked before mrcfile, which rejects 101 and complex modes)."""
    if not path.is_file():
        raise InputError("file not found", path=path)
    mode = check_header(path)
    if mode in _COMPLEX_MODES:
        raise InputError(f"MRC mode {mode} ({_COMPLEX_MODES[mode]}) is not supported", path=path,
                         field="header mode", expected="mode 0, 1, 2, 6, 12 or 101")
    return mode


def _as_stack_shape(data: np.ndarray, path: Path) -> np.ndarray:
    """``.mrcs`` files always come back 3D (mrcfile returns a 1-image stack as 2D)."""
    return data[np.newaxis] if path.suffix.lower() == ".mrcs" and data.ndim == 2 else data


def read_mrc(path: str | os.PathLike, *, dtype: np.dtype | None = np.float32,
             require_finite: bool = False) -> tuple[np.ndarray, float]:
    """Read a whole MRC/MRCS file into memory.

    Parameters
    ----------
    path
        The file.
    dtype
        Output dtype (default float32); ``None`` keeps the stored one (int8, int16, uint16,
        float16, float32; mode 101 gives uint8).
    require_finite
        Raise :class:`InputError` (naming the file and the first image) when a pixel is NaN or
        infinite, instead of handing such data to the maths.

    Returns
    -------
    data
        ``(ny, nx)`` image, ``(n, ny, nx)`` stack or ``(nz, ny, nx)`` map.
    pixel_size_angst
        Pixel size from the header (cell / grid size); 0.0 when the header has no cell.
    """
    path = Path(path)
    if _header_mode(path) == 101:
        data, pixel = read_4bit(path)
    else:
        with _open(path) as mrc:
            data, pixel = np.array(mrc.data), float(mrc.voxel_size.x)
    data = _as_stack_shape(data, path)
    if require_finite:
        check_finite(data, path)
    return (data if dtype is None else data.astype(dtype, copy=False)), pixel


def check_finite(data: np.ndarray, path: str | os.PathLike, first_image: int = 1) -> None:
    """InputError naming ``path`` and the first image (1-based) holding a NaN or infinite pixel.

    ``data`` is a ``(ny, nx)`` image or an ``(n, ny, nx)`` stack/map whose first image is number
    ``first_image`` of the file.
    """
    if not np.issubdtype(data.dtype, np.floating) or np.isfinite(data).all():
        return
    if data.ndim == 2:
        where, count = "pixel values", int((~np.isfinite(data)).sum())
    else:
        per_image = (~np.isfinite(data)).reshape(len(data), -1).sum(axis=1)
        index = int(np.flatnonzero(per_image)[0])
        where, count = f"image {first_image + index}", int(per_image[index])
    raise InputError(f"{count} pixel value(s) are NaN or infinite", path=path, field=where,
                     expected="finite pixel values")


def read_mrc_header(path: str | os.PathLike) -> dict:
    """Shape ``(nz, ny, nx)``, mode, pixel size (Å) and whether the file is an image stack."""
    path = Path(path)
    mode = _header_mode(path)
    if mode == 101:
        data, pixel = read_4bit(path)
        return {"shape": data.shape, "mode": mode, "pixel_size_angst": pixel, "is_stack": data.shape[0] > 1}
    with _open(path, mrcfile.mmap) as mrc:
        header = mrc.header
        shape = (int(header.nz), int(header.ny), int(header.nx))
        return {"shape": shape, "mode": int(header.mode), "pixel_size_angst": float(mrc.voxel_size.x),
                "is_stack": bool(mrc.is_image_stack() or path.suffix.lower() == ".mrcs")}


def write_mrc(
    path: str | os.PathLike,
    data: np.ndarray,
    pixel_size_angst: float,
    float16: bool = False,
    *,
    stack: bool | None = None,
) -> None:
    """Write an image, stack or map (mode 2, or mode 12 with ``float16``), atomically.

    Parameters
    ----------
    path
        Destination; ``.mrcs`` writes an image stack unless ``stack`` says otherwise.
    data
        ``(ny, nx)`` image, ``(n, ny, nx)`` stack or ``(nz, ny, nx)`` map (any real dtype; a torch
        tensor on CPU works too).
    pixel_size_angst
        Pixel (voxel) size in Å, stored as cell = pixel size * n.
    float16
        Store half precision (MRC mode 12) instead of float32 (mode 2).
    stack
        Force an image stack (True) or a volume/image (False); default: by extension.
    """
    array = np.asarray(data, dtype=np.float16 if float16 else np.float32)
    write_mrc_array(path, array, pixel_size_angst, stack=stack)


def write_mrc_array(path: str | os.PathLike, array: np.ndarray, pixel_size_angst: float,
                    *, stack: bool | None = None) -> None:
    """Write ``array`` with its own dtype's MRC mode (int8, int16, uint16, float16, float32)."""
    path = Path(path)
    if array.ndim not in (2, 3):
        raise ValueError(f"MRC data must be 2D or 3D, got shape {array.shape}")
    is_stack = path.suffix.lower() == ".mrcs" if stack is None else stack
    if is_stack and array.ndim == 2:
        array = array[np.newaxis]
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(array))
            if array.ndim == 3:
                mrc.set_image_stack() if is_stack else mrc.set_volume()
            mrc.voxel_size = float(pixel_size_angst)
            mrc.header.label[0] = f"vitrify {datetime.date.today().isoformat()}".encode()
            mrc.header.nlabl = 1


class MrcStack:
    """A lazily read, memory-mapped image stack: ``len()``, indexing and slicing read on demand.

    ``stack[i]`` is image ``i`` (0-based) as float32 ``(ny, nx)``; ``stack[[3, 1]]`` or
    ``stack[2:5]`` give ``(k, ny, nx)``. A single 2D image counts as a stack of one. Use as a
    context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._mrc = None
        if _header_mode(self.path) == 101:
            data, self.pixel_size_angst = read_4bit(self.path)
        else:
            with _open(self.path, mrcfile.mmap):
                pass  # validates the file; the handle is closed again
            self._mrc = mrcfile.mmap(self.path, mode="r", permissive=True)
            data, self.pixel_size_angst = self._mrc.data, float(self._mrc.voxel_size.x)
        self._data = data[np.newaxis] if data.ndim == 2 else data

    @property
    def data(self) -> np.ndarray:
        """The memory-mapped ``(n, ny, nx)`` array in its stored dtype (read-only; no copy)."""
        return self._data

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n, ny, nx)``."""
        return tuple(int(s) for s in self._data.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)) and not -len(self) <= index < len(self):
            raise InputError(f"image {int(index) + 1} requested from a stack of {len(self)}", path=self.path)
        return np.array(self._data[index], dtype=np.float32)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Images at 0-based ``indices`` as ``(k, ny, nx)`` float32, read in file order."""
        indices = np.asarray(indices, dtype=np.int64)
        bad = (indices < 0) | (indices >= len(self))
        if bad.any():
            raise InputError(f"image {int(indices[bad][0]) + 1} requested from a stack of {len(self)}",
                             path=self.path, expected=f"1..{len(self)}")
        order = np.argsort(indices, kind="stable")
        out = np.empty((len(indices),) + self.shape[1:], dtype=np.float32)
        out[order] = self._data[indices[order]]
        return out

    def close(self) -> None:
        """Close the memory map (also done by ``with``)."""
        if self._mrc is not None:
            self._mrc.close()
            self._mrc = None

    def __enter__(self) -> MrcStack:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_stack(path: str | os.PathLike) -> MrcStack:
    """Open an image stack lazily (memory-mapped; nothing is read until indexed)."""
    return MrcStack(path)


def read_images(image_names: Iterable[str], base_dir: str | os.PathLike = ".") -> np.ndarray:
    """Read RELION image references (``"N@stack.mrcs"``) into ``(n, ny, nx)`` float32.

    Names are grouped by stack so that each stack is opened once and read in file order; the
    output keeps the order of ``image_names``. Relative paths are relative to ``base_dir``.
    """
    from vitrify.io.star import resolve_image_name

    resolved = [resolve_image_name(name, base_dir) for name in image_names]
    by_stack: dict[Path, list[int]] = {}
    for row, (_, stack_path) in enumerate(resolved):
        by_stack.setdefault(stack_path, []).append(row)
    out: np.ndarray | None = None
    for stack_path, rows in by_stack.items():
        with open_stack(stack_path) as stack:
            images = stack.read([resolved[r][0] for r in rows])
        if out is None:
            out = np.empty((len(resolved),) + images.shape[1:], dtype=np.float32)
        elif images.shape[1:] != out.shape[1:]:
            raise InputError(f"images of {images.shape[2]}x{images.shape[1]} px while earlier stacks have "
                             f"{out.shape[2]}x{out.shape[1]} px", path=stack_path, expected="one image size")
        out[rows] = images
    return out if out is not None else np.empty((0, 0, 0), dtype=np.float32)

"""Movies (TIFF, MRC) and gain references, with RELION's orientation conventions.

* TIFF movies (one frame per page, any compression tifffile + imagecodecs decode, LZW included)
  and MRC movies (``.mrc``/``.mrcs``, one frame per section). Thermo Fisher EER movies
  (``.eer``) are read as float32 counts, internal frames summed in groups of ``eer_grouping``
  at ``eer_upsampling`` 1 (4K) or 2 (8K), trailing internal frames dropped, rows in stored order
  as RELION reads EER (no y flip; :mod:`._eer`).
* **TIFF row order**: RELION flips TIFF images along the slow axis (y) when reading and writing,
  for compatibility with MotionCor2 and IMOD. We do the same, so a TIFF movie and an MRC gain
  reference line up exactly as they do in RELION: row 0 of :func:`read_movie`'s frames is the
  *last* row stored in the TIFF page; :func:`write_movie` flips back, so write -> read is identity.
* **Gain rotation / flip** (RELION's ``--gain_rot`` / ``--gain_flip``, MotionCor2's ``-RotGain`` /
  ``-FlipGain``): the gain is first rotated by ``rotation`` x 90 degrees *clockwise as displayed with
  row 0 at the top* (as in ``relion_display``), i.e. ``np.rot90(gain, k=-rotation)``:
  for ``[[a, b], [c, d]]`` one step gives ``[[c, a], [d, b]]``. Then it is flipped: 0 none,
  1 upside down (row order reversed, y flip), 2 left to right (column order reversed, x flip).
* Corrupt or truncated files raise :class:`~vitrify.io.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile

from vitrify.io._eer import EER_DEFAULT_GROUPING, EerMovie, check_eer_options, read_eer
from vitrify.io._tiff import check_complete, quiet_tifffile
from vitrify.io.atomic import atomic_path
from vitrify.io.errors import InputError
from vitrify.io.mrc import open_stack, read_mrc, write_mrc_array

__all__ = [
    "EER_DEFAULT_GROUPING", "MovieFrames", "check_eer_options", "gain_option_index", "open_movie", "read_eer_gain",
    "read_gain", "read_movie", "transform_gain", "write_movie",
]

_MRC_MOVIE_DTYPES = (np.int8, np.int16, np.uint16, np.uint8, np.float16, np.float32)
_TIFF_ERRORS = (tifffile.TiffFileError, ValueError, OSError, EOFError, IndexError, RuntimeError, KeyError)


def _read_tiff(path: Path) -> np.ndarray:
    """All pages of a TIFF as ``(frames, ny, nx)`` in RELION's row order (flipped along y)."""
    try:
        with quiet_tifffile() as messages, tifffile.TiffFile(path) as tif:
            check_complete(tif, messages, path)
            shapes = {page.shape for page in tif.pages}
            if not shapes:
                raise InputError("truncated or corrupt TIFF file (no image pages)", path=path)
            if len(shapes) != 1:
                raise InputError(f"TIFF pages have different sizes {sorted(shapes)}", path=path,
                                 expected="one frame size")
            frames = tif.asarray(key=range(len(tif.pages)))
    except InputError:
        raise
    except _TIFF_ERRORS as exc:
        raise InputError(f"truncated or corrupt TIFF file ({exc})", path=path, expected="a TIFF movie") from None
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    if frames.ndim != 3:
        raise InputError(f"TIFF data of shape {frames.shape}", path=path, expected="grey-scale frames")
    return np.ascontiguousarray(frames[:, ::-1])


def _read_mrc_movie(path: Path) -> np.ndarray:
    data, _ = read_mrc(path, dtype=None)
    return data[np.newaxis] if data.ndim == 2 else data


def _read_eer(path: Path, grouping: int = EER_DEFAULT_GROUPING, upsampling: int = 1) -> np.ndarray:
    return read_eer(path, grouping, upsampling)


_MOVIE_READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".tif": _read_tiff,
    ".tiff": _read_tiff,
    ".gain": _read_tiff,
    ".mrc": _read_mrc_movie,
    ".mrcs": _read_mrc_movie,
    ".eer": _read_eer,
}


def _reader_for(path: Path) -> Callable[[Path], np.ndarray]:
    if not path.is_file():
        raise InputError("file not found", path=path)
    reader = _MOVIE_READERS.get(path.suffix.lower())
    if reader is None:
        raise InputError(f"unknown movie format {path.suffix!r}", path=path,
                         expected="one of " + ", ".join(sorted(_MOVIE_READERS)))
    return reader


def read_movie(path: str | os.PathLike, *, dtype: np.dtype | None = None,
               eer_grouping: int = EER_DEFAULT_GROUPING, eer_upsampling: int = 1) -> np.ndarray:
    """Read all frames of a TIFF, MRC or EER movie.

    Parameters
    ----------
    path
        ``.tif``/``.tiff`` (TIFF pages = frames), ``.mrc``/``.mrcs`` or ``.eer``.
    dtype
        Output dtype; ``None`` (default) keeps the stored one (counting movies are usually
        uint8/uint16, which keeps memory low; EER frames are float32 counts).
    eer_grouping, eer_upsampling
        EER only: RELION's ``--eer_grouping`` (internal frames per frame) and ``--eer_upsampling``
        (1 = 4K, 2 = 8K).

    Returns
    -------
    np.ndarray
        ``(frames, ny, nx)``; TIFF rows in RELION's order (see the module notes).
    """
    path = Path(path)
    reader = _reader_for(path)
    frames = _read_eer(path, eer_grouping, eer_upsampling) if reader is _read_eer else reader(path)
    return frames if dtype is None else frames.astype(dtype, copy=False)


class MovieFrames:
    """Frames of a TIFF, MRC or EER movie read one at a time (for movies too large to hold at once).

    ``len(movie)``, ``movie.shape`` ``(frames, ny, nx)``, ``movie[i]`` -> frame ``i`` ``(ny, nx)`` in
    the stored dtype and RELION's row order (as :func:`read_movie`). TIFF pages are decoded on
    demand; MRC movies are memory-mapped; EER frames (groups of ``eer_grouping`` internal frames,
    float32) are decoded on demand. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, *, eer_grouping: int = EER_DEFAULT_GROUPING,
                 eer_upsampling: int = 1) -> None:
        self.path = Path(path)
        reader = _reader_for(self.path)
        self._tiff = self._stack = self._eer = None
        if reader is _read_tiff:
            self._open_tiff()
        elif reader is _read_mrc_movie:
            self._stack = open_stack(self.path)
            self.shape = self._stack.shape
        else:
            self._eer = EerMovie(self.path, eer_grouping, eer_upsampling)
            self.shape = self._eer.shape

    def _open_tiff(self) -> None:
        try:
            with quiet_tifffile() as messages:
                self._tiff = tifffile.TiffFile(self.path)
                check_complete(self._tiff, messages, self.path)
                pages = self._tiff.pages
                shapes = {page.shape for page in pages}
        except InputError:
            self.close()
            raise
        except _TIFF_ERRORS as exc:
            self.close()
            raise InputError(f"truncated or corrupt TIFF file ({exc})", path=self.path) from None
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            self.close()
            raise InputError(f"TIFF pages of sizes {sorted(shapes)}", path=self.path, expected="one 2D frame size")
        self.shape = (len(pages),) + next(iter(shapes))

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise InputError(f"frame {index + 1} requested from a movie of {len(self)}", path=self.path)
        if self._stack is not None:
            return np.array(self._stack.data[index])
        if self._eer is not None:
            return self._eer[index]
        try:
            with quiet_tifffile():
                frame = self._tiff.pages[index].asarray()
        except _TIFF_ERRORS as exc:
            raise InputError(f"truncated or corrupt TIFF frame {index + 1} ({exc})", path=self.path) from None
        return np.ascontiguousarray(frame[::-1])

    def close(self) -> None:
        """Close the open file (also done by ``with``)."""
        for handle in (self._tiff, self._stack, self._eer):
            if handle is not None:
                handle.close()
        self._tiff = self._stack = self._eer = None

    def __enter__(self) -> MovieFrames:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_movie(path: str | os.PathLike, *, eer_grouping: int = EER_DEFAULT_GROUPING,
               eer_upsampling: int = 1) -> MovieFrames:
    """Open a movie for frame-by-frame reading (see :class:`MovieFrames`; ``eer_*`` for EER only)."""
    return MovieFrames(path, eer_grouping=eer_grouping, eer_upsampling=eer_upsampling)


def check_movie_readable(path: str | os.PathLike) -> tuple[int, int, int]:
    """Open a movie and read its last frame; return its shape ``(frames, ny, nx)``.

    Raises :class:`InputError` naming what is wrong (truncated TIFF page chain, MRC data shorter
    than its header says, unknown format): how an on-the-fly watcher tells a half-written or
    corrupt movie from one ready to process, without reading every frame.
    """
    try:
        with open_movie(path) as movie:
            shape = tuple(int(s) for s in movie.shape)
            if len(shape) != 3 or shape[0] < 1:
                raise InputError(f"movie of shape {shape}", path=path, expected="(frames, ny, nx) with frames >= 1")
            movie[shape[0] - 1]
    except InputError:
        raise
    except (*_TIFF_ERRORS, MemoryError) as exc:
        raise InputError(f"unreadable movie ({exc})", path=path, expected="a complete movie") from None
    return shape


def _write_tiff(path: Path, frames: np.ndarray, compression: str | None, pixel_size_angst: float | None) -> None:
    kwargs = {}
    if pixel_size_angst:
        # TIFF resolution in pixels per centimetre (1 cm = 1e8 Å).
        kwargs = {"resolution": (1e8 / pixel_size_angst,) * 2, "resolutionunit": "CENTIMETER"}
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(frames[:, ::-1]), photometric="minisblack",
                         compression=compression, metadata=None, **kwargs)


def _write_mrc_movie(path: Path, frames: np.ndarray, compression: str | None,
                     pixel_size_angst: float | None) -> None:
    if compression is not None:
        raise ValueError(f"MRC movies cannot be compressed (got compression={compression!r})")
    if frames.dtype not in _MRC_MOVIE_DTYPES:
        frames = frames.astype(np.float32)
    write_mrc_array(path, frames, pixel_size_angst or 0.0, stack=True)


_MOVIE_WRITERS = {".tif": _write_tiff, ".tiff": _write_tiff, ".mrc": _write_mrc_movie, ".mrcs": _write_mrc_movie}
_TIFF_COMPRESSION = {None: None, "none": None, "lzw": "lzw", "zlib": "zlib", "deflate": "zlib"}


def write_movie(
    path: str | os.PathLike,
    frames: np.ndarray,
    compression: str | None = None,
    *,
    pixel_size_angst: float | None = None,
) -> None:
    """Write a movie ``(frames, ny, nx)`` as TIFF or MRC (chosen by extension), atomically.

    Parameters
    ----------
    path
        ``.tif``/``.tiff`` or ``.mrc``/``.mrcs``.
    frames
        ``(frames, ny, nx)``; the dtype is kept (TIFF: any; MRC: int8, int16, uint16, float16,
        float32; other dtypes are stored as float32).
    compression
        TIFF only: ``None`` or ``"lzw"`` (``"zlib"`` also works).
    pixel_size_angst
        Stored in the header when given (MRC cell, TIFF resolution).
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    if frames.ndim != 3:
        raise ValueError(f"movie frames must be (frames, ny, nx), got shape {frames.shape}")
    writer = _MOVIE_WRITERS.get(path.suffix.lower())
    if writer is None:
        raise ValueError(f"cannot write movies as {path.suffix!r}: use .tif, .tiff, .mrc or .mrcs")
    key = compression.lower() if isinstance(compression, str) else compression
    if key not in _TIFF_COMPRESSION:
        raise ValueError(f"unknown compression {compression!r}: use None or 'lzw'")
    writer(path, frames, _TIFF_COMPRESSION[key], pixel_size_angst)


_FLIPS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    0: lambda gain: gain,
    1: np.flipud,
    2: np.fliplr,
}


def transform_gain(gain: np.ndarray, rotation: int = 0, flip: int = 0) -> np.ndarray:
    """Apply RELION's gain rotation then flip to a ``(ny, nx)`` array (see the module notes).

    >>> transform_gain(np.array([[1, 2], [3, 4]]), rotation=1).tolist()
    [[3, 1], [4, 2]]
    """
    if rotation not in (0, 1, 2, 3):
        raise InputError(f"gain rotation {rotation!r}", field="gain_rot", expected="0, 1, 2 or 3 (x 90 degrees)")
    if flip not in _FLIPS:
        raise InputError(f"gain flip {flip!r}", field="gain_flip",
                         expected="0 (none), 1 (upside down) or 2 (left to right)")
    return np.ascontiguousarray(_FLIPS[flip](np.rot90(gain, k=-rotation)))


def read_gain(path: str | os.PathLike, rotation: int = 0, flip: int = 0) -> np.ndarray:
    """Read a gain reference (MRC, TIFF or Gatan/SerialEM ``.gain``) as float32 ``(ny, nx)``.

    ``rotation`` (0..3, x 90 degrees clockwise as displayed) and ``flip`` (0 none, 1 upside down,
    2 left to right) are RELION's ``--gain_rot`` / ``--gain_flip``; rotation is applied first.
    TIFF gains follow RELION's TIFF row order, like TIFF movies.
    """
    path = Path(path)
    frames = _reader_for(path)(path)
    if frames.shape[0] != 1:
        raise InputError(f"gain reference has {frames.shape[0]} frames", path=path, expected="one 2D image")
    gain = frames[0].astype(np.float32)
    if not np.isfinite(gain).all():
        raise InputError("gain reference contains NaN or infinite values", path=path)
    return transform_gain(gain, rotation, flip)


def gain_option_index(text: str | int) -> int:
    """The number in a job.star gain option: ``"90 degrees (1)"`` -> 1, ``"No flipping (0)"`` -> 0."""
    if isinstance(text, int):
        return text
    match = re.search(r"\((\d)\)\s*$", str(text)) or re.fullmatch(r"\s*(\d)\s*", str(text))
    if match is None:
        raise InputError(f"gain option {text!r}", field="gain_rot/gain_flip",
                         expected="text ending in '(N)', e.g. '90 degrees (1)', or a number")
    return int(match.group(1))


def _rescale_gain(gain: np.ndarray, frame_shape: tuple[int, int], path: Path) -> np.ndarray:
    """``gain`` at ``frame_shape``: as is, 2 x 2 pixel replication, or 2 x 2 block sums (RELION)."""
    shape = tuple(gain.shape)
    frame_shape = tuple(int(n) for n in frame_shape)
    if shape == frame_shape:
        return gain
    if (2 * shape[0], 2 * shape[1]) == frame_shape:
        return np.repeat(np.repeat(gain, 2, axis=0), 2, axis=1)
    if shape == (2 * frame_shape[0], 2 * frame_shape[1]):
        return gain.reshape(frame_shape[0], 2, frame_shape[1], 2).sum(axis=(1, 3))
    raise InputError(f"gain reference is {shape[1]}x{shape[0]}, EER frames are {frame_shape[1]}x{frame_shape[0]}",
                     path=path, field="fn_gain_ref",
                     expected="a gain of the frame size, or half or twice it (4K/8K)")


def read_eer_gain(path: str | os.PathLike, frame_shape: tuple[int, int], rotation: int = 0,
                  flip: int = 0) -> np.ndarray:
    """Gain reference for EER frames of ``frame_shape`` ``(ny, nx)``, float32, to multiply the frames.

    RELION's rules for EER (see :mod:`vitrify.io._eer`): ``.gain`` TIFFs are multiplicative and read in
    stored row order; other files hold the inverse (``mean / gain`` is returned, 0 kept as 0, a
    defect); the gain is brought to the frame size (4K <-> 8K). ``rotation``/``flip`` as
    :func:`transform_gain`, applied first (they commute with the rest).
    """
    path = Path(path)
    multiplicative = path.suffix.lower() == ".gain"
    gain = read_gain(path)
    if multiplicative:
        gain = gain[::-1]          # read_gain flips TIFF rows; EER frames keep the stored order
    gain = _rescale_gain(transform_gain(gain, rotation, flip), frame_shape, path).astype(np.float32)
    if not multiplicative:
        nonzero = gain != 0
        gain[nonzero] = np.float32(gain.mean(dtype=np.float64)) / gain[nonzero]
    return np.ascontiguousarray(gain)

"""Thermo Fisher EER movies (Falcon 4/4i/C electron-event files), read as grouped count frames.

An EER file is a little-endian BigTIFF whose pages are internal detector frames (hundreds to
thousands), each one strip compressed with code 65000, 65001 or 65002 holding a run-length coded
list of electron events (with sub-pixel bits). tifffile decodes the pages through
``imagecodecs.eer_decode``; this module sums them into frames RELION-style:

* **Grouping** (RELION's ``--eer_grouping``, default :data:`EER_DEFAULT_GROUPING` = 32): frame ``i``
  is the sum of internal frames ``i*g .. i*g+g-1``. Trailing internal frames that do not fill a
  whole group are **dropped**, as RELION does (``n_frames = n_internal // g``).
* **Upsampling** (RELION's ``--eer_upsampling``): 1 renders at the sensor size (4K on a Falcon 4),
  2 at twice the size per axis (8K) from the events' sub-pixel bits (tifffile's ``superres=1``).
  Other values are refused. The pixel size of 8K frames is half the physical one.
* **Values**: float32 electron counts (a pixel holds at most one event per internal frame).
* **Row order**: the stored one (row 0 = first row of a page). Unlike TIFF movies, RELION does not
  flip EER frames along y; it reads a Falcon ``.gain`` TIFF un-flipped to match (see
  :func:`vitrify.io.movies.read_eer_gain`).
* **Gain** (:func:`vitrify.io.movies.read_eer_gain`, RELION's rules for EER): a ``.gain`` TIFF is multiplicative and
  taken in stored row order; any other gain file (e.g. MRC) holds the inverse and is turned into
  ``mean / gain`` (0 stays 0: a defect). A gain of half the frame size (4K gain, 8K frames) is
  upsampled by pixel replication; one of twice the size is summed over 2 x 2 blocks.
* Pages with another compression (some files start with an uncompressed integrated image) are
  not frames and are ignored. Frames are decoded on demand (EER files are GBs).
* Cut or corrupt files raise :class:`~vitrify.io.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from vitrify.io._tiff import check_complete, quiet_tifffile
from vitrify.io.errors import InputError

__all__ = ["EER_DEFAULT_GROUPING", "EER_UPSAMPLINGS", "EerMovie", "check_eer_options", "read_eer"]

#: RELION-4's default ``--eer_grouping`` (internal frames summed per output frame).
EER_DEFAULT_GROUPING = 32
#: RELION's ``--eer_upsampling`` -> tifffile's ``superres`` (sub-pixel bits used per axis).
EER_UPSAMPLINGS = {1: 0, 2: 1}
#: Compression codes of EER frames (8-bit and 7-bit run lengths, and the variable v3 scheme).
_EER_COMPRESSIONS = frozenset({65000, 65001, 65002})
_MAX_GROUPING = np.iinfo(np.uint16).max
_ERRORS = (tifffile.TiffFileError, ValueError, OSError, EOFError, IndexError, RuntimeError, KeyError)


def check_eer_options(grouping: int, upsampling: int) -> None:
    """Raise :class:`InputError` unless ``grouping`` >= 1 and ``upsampling`` is 1 (4K) or 2 (8K)."""
    if isinstance(grouping, bool) or not isinstance(grouping, (int, np.integer)) \
            or not 1 <= grouping <= _MAX_GROUPING:
        raise InputError(f"EER grouping {grouping!r}", field="eer_grouping",
                         expected=f"a whole number of internal frames in 1..{_MAX_GROUPING}")
    if upsampling not in EER_UPSAMPLINGS:
        raise InputError(f"EER upsampling {upsampling!r}", field="eer_upsampling",
                         expected="1 (sensor size, 4K) or 2 (super-resolution, 8K)")


class EerMovie:
    """An EER movie as frames of ``grouping`` summed internal frames, decoded on demand.

    ``len(movie)`` groups, ``movie.shape`` ``(groups, ny, nx)`` (``ny, nx`` doubled at
    ``upsampling=2``), ``movie.n_internal_frames``, ``movie[i]`` -> float32 ``(ny, nx)`` counts
    in stored row order (as RELION). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, grouping: int = EER_DEFAULT_GROUPING,
                 upsampling: int = 1) -> None:
        check_eer_options(grouping, upsampling)
        self.path = Path(path)
        self.grouping = int(grouping)
        self.upsampling = upsampling
        self._tiff: tifffile.TiffFile | None = None
        try:
            self._open(EER_UPSAMPLINGS[upsampling])
        except BaseException:
            self.close()
            raise

    def _open(self, superres: int) -> None:
        try:
            with quiet_tifffile() as messages:
                self._tiff = tifffile.TiffFile(self.path, superres=superres)
                check_complete(self._tiff, messages, self.path)
                pages = [page for page in self._tiff.pages if int(page.compression) in _EER_COMPRESSIONS]
                shapes = {page.shape for page in pages}
        except InputError:
            raise
        except _ERRORS as exc:
            raise InputError(f"truncated or corrupt EER file ({exc})", path=self.path,
                             expected="a Thermo Fisher EER movie") from None
        if not pages:
            raise InputError("no EER-compressed frames (compression 65000/65001/65002)", path=self.path,
                             expected="a Thermo Fisher EER movie")
        if len(shapes) != 1:
            raise InputError(f"EER frames have different sizes {sorted(shapes)}", path=self.path,
                             expected="one frame size")
        if len(pages) < self.grouping:
            raise InputError(f"{len(pages)} internal frames, fewer than the EER grouping {self.grouping}",
                             path=self.path, field="eer_grouping",
                             expected=f"eer_grouping <= {len(pages)}")
        self._pages = pages
        self.n_internal_frames = len(pages)
        self.shape = (len(pages) // self.grouping,) + next(iter(shapes))

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise InputError(f"frame {index + 1} requested from an EER movie of {len(self)} frames",
                             path=self.path)
        start = (index % len(self)) * self.grouping
        counts = np.zeros(self.shape[1:], np.uint16)
        for number in range(start, start + self.grouping):
            counts += self._decode(number)
        return counts.astype(np.float32)

    def _decode(self, number: int) -> np.ndarray:
        """Internal frame ``number`` (0-based) as stored (0/1 events per pixel)."""
        try:
            with quiet_tifffile():
                return self._pages[number].asarray()
        except _ERRORS as exc:
            raise InputError(f"corrupt EER internal frame {number + 1} of {self.n_internal_frames} ({exc})",
                             path=self.path, expected="a Thermo Fisher EER movie") from None

    def read_all(self) -> np.ndarray:
        """All frames ``(groups, ny, nx)`` float32."""
        frames = np.empty(self.shape, np.float32)
        for i in range(len(self)):
            frames[i] = self[i]
        return frames

    def close(self) -> None:
        if self._tiff is not None:
            self._tiff.close()
        self._tiff = None

    def __enter__(self) -> EerMovie:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_eer(path: str | os.PathLike, grouping: int = EER_DEFAULT_GROUPING, upsampling: int = 1) -> np.ndarray:
    """All frames of an EER movie, ``(n_internal // grouping, ny, nx)`` float32 (see the module notes)."""
    with EerMovie(path, grouping, upsampling) as movie:
        return movie.read_all()

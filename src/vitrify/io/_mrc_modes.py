"""MRC modes that mrcfile does not read (private): SerialEM's 4-bit mode 101.

Mode 101 packs two unsigned 4-bit pixels per byte, the first pixel of each pair in the low
nibble; every row starts on a byte boundary (``ceil(nx / 2)`` bytes per row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mrcfile.dtypes import HEADER_DTYPE

from vitrify.io.errors import InputError


def _read_header(path: Path) -> np.ndarray:
    raw = path.read_bytes()[: HEADER_DTYPE.itemsize]
    if len(raw) < HEADER_DTYPE.itemsize:
        raise InputError("truncated MRC file (header shorter than 1024 bytes)", path=path)
    header = np.frombuffer(raw, dtype=HEADER_DTYPE)[0]
    if int(header["mode"]) != 101:
        header = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder())[0]
    return header


#: Bytes per pixel of each MRC mode (101: half a byte, rows padded; handled in read_4bit).
BYTES_PER_PIXEL = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 6: 2, 12: 2}


def check_header(path: Path) -> int:
    """Read the header, check it against the file size and return the mode.

    Raises InputError (naming the header word) for a short header, an unknown mode, impossible
    dimensions or missing data bytes, so that a corrupt file never reaches a reader that would
    try to allocate its bogus size. A missing ``MAP `` signature alone is accepted (old files
    lack it) but is named when the header is also unreadable.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        raw = handle.read(HEADER_DTYPE.itemsize)
    if len(raw) < HEADER_DTYPE.itemsize:
        _corrupt(path, f"header of {len(raw)} bytes", "a 1024-byte MRC header")
    for dtype in (HEADER_DTYPE, HEADER_DTYPE.newbyteorder()):
        header = np.frombuffer(raw, dtype=dtype)[0]
        mode = int(header["mode"])
        if mode in BYTES_PER_PIXEL or mode == 101:
            break
    else:
        signature = "" if raw[208:212] == b"MAP " else "no 'MAP ' signature at byte 208, "
        mode = int(np.frombuffer(raw, dtype=HEADER_DTYPE)[0]["mode"])  # as written (little-endian)
        _corrupt(path, f"header: {signature}unknown mode {mode}", "mode 0, 1, 2, 6, 12 or 101")
    _check_sizes(path, header, mode)
    return mode


def _corrupt(path: Path, detail: str, expected: str) -> None:
    raise InputError(f"truncated or corrupt MRC file ({detail})", path=path, expected=expected)


def _check_sizes(path: Path, header: np.ndarray, mode: int) -> None:
    """Dimensions positive and the file long enough for them."""
    for word in ("nx", "ny", "nz", "nsymbt"):
        if int(header[word]) < (0 if word == "nsymbt" else 1):
            _corrupt(path, f"header {word} = {int(header[word])}", "positive sizes")
    nx, ny, nz, extra = (int(header[k]) for k in ("nx", "ny", "nz", "nsymbt"))
    row = (nx + 1) // 2 if mode == 101 else nx * BYTES_PER_PIXEL[mode]
    needed = HEADER_DTYPE.itemsize + extra + row * ny * nz
    size = path.stat().st_size
    if size < needed:
        _corrupt(path, f"{size} bytes, the header's nx, ny, nz = {nx}, {ny}, {nz} need {needed}",
                 "the whole file")


def read_4bit(path: str | Path) -> tuple[np.ndarray, float]:
    """Read a mode-101 file -> (uint8 data ``(ny, nx)`` or ``(nz, ny, nx)``, pixel size in Å)."""
    path = Path(path)
    header = _read_header(path)
    nx, ny, nz = (int(header[k]) for k in ("nx", "ny", "nz"))
    row_bytes = (nx + 1) // 2
    offset = HEADER_DTYPE.itemsize + int(header["nsymbt"])
    expected = row_bytes * ny * nz
    packed = np.fromfile(path, dtype=np.uint8, count=expected, offset=offset)
    if packed.size != expected or min(nx, ny, nz) < 1:
        raise InputError(f"truncated or corrupt 4-bit MRC file ({packed.size} of {expected} data bytes)",
                         path=path)
    pairs = packed.reshape(nz, ny, row_bytes)
    data = np.empty((nz, ny, 2 * row_bytes), dtype=np.uint8)
    data[..., 0::2] = pairs & 0x0F
    data[..., 1::2] = pairs >> 4
    data = data[..., :nx]
    mx = int(header["mx"]) or nx
    pixel = float(header["cella"]["x"]) / mx
    return (data[0] if nz == 1 else data), pixel


def pack_4bit(data: np.ndarray) -> bytes:
    """Pack uint8 values 0..15 ``(..., ny, nx)`` into mode-101 bytes (rows padded to whole bytes)."""
    data = np.asarray(data, dtype=np.uint8)
    if data.shape[-1] % 2:
        data = np.concatenate([data, np.zeros(data.shape[:-1] + (1,), np.uint8)], axis=-1)
    return (data[..., 0::2] | (data[..., 1::2] << 4)).astype(np.uint8).tobytes()

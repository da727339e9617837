"""Writing genuine EER files in tests: an encoder of the EER event bit stream + a BigTIFF writer.

The encoder follows the bit layout of imagecodecs' ``imcd_eer_decode``: a bit stream read least
significant bit first; each code starts with a run of ``skip_bits`` bits counting event-free pixels
(raster order); a run of all ones advances that many pixels without an event; any other run is
followed by ``horz_bits`` + ``vert_bits`` sub-pixel bits and puts one event on the pixel reached, the
next run starting on the pixel after it. A run that reaches the last pixel ends the frame. Sub-pixel
fields are stored XOR ``horz_bits``/``vert_bits`` (the decoder undoes it). The decoder wants an even
byte count and more than one code's bits after the last code's start, hence the zero padding.
tifffile's writer has no EER encoder, so pages are written as pre-encoded strips under a codec it
knows (zlib) and the Compression tag is then overwritten with the EER code.
"""

from __future__ import annotations

import numpy as np
import tifffile

_METADATA = b'<metadata><item name="sensorPixelSize.width" unit="m">1.0E-10</item></metadata>'
_SKIP_BITS = {65000: 8, 65001: 7, 65002: 10}  # 65002 reads its sizes from tags 65007-65009


def encode_eer_frame(events: np.ndarray, skip_bits: int, sub_yx: np.ndarray | None = None) -> bytes:
    """EER bit stream of a ``(ny, nx)`` 0/1 event image; ``sub_yx`` ``(2, ny, nx)`` quarter-pixel
    positions 0..3 (y, x) of each event (default 0)."""
    flat = np.asarray(events).ravel()
    assert set(np.unique(flat)) <= {0, 1}
    sub = np.zeros((2, flat.size), int) if sub_yx is None else np.asarray(sub_yx).reshape(2, -1)
    skip_max = (1 << skip_bits) - 1
    stream, n_bits, position = 0, 0, 0
    for pixel in np.flatnonzero(flat).tolist():
        run = pixel - position
        while run >= skip_max:
            stream, n_bits, run = stream | (skip_max << n_bits), n_bits + skip_bits, run - skip_max
        code = run | ((int(sub[1, pixel]) ^ 2) << skip_bits) | ((int(sub[0, pixel]) ^ 2) << (skip_bits + 2))
        stream, n_bits, position = stream | (code << n_bits), n_bits + skip_bits + 4, pixel + 1
    run = flat.size - position
    while run > skip_max:
        stream, n_bits, run = stream | (skip_max << n_bits), n_bits + skip_bits, run - skip_max
    stream |= run << n_bits
    n_bytes = (n_bits + 2 * (skip_bits + 4) + 7) // 8
    return stream.to_bytes(n_bytes + n_bytes % 2, "little")


def write_eer(path, frames: np.ndarray, compression: int = 65001, sub_yx=None) -> None:
    """Write ``(n, ny, nx)`` 0/1 internal frames as an EER file (BigTIFF, metadata tag 65001)."""
    skip_bits = _SKIP_BITS[compression]
    extratags = [(65001, 7, len(_METADATA), _METADATA, True)]
    if compression == 65002:
        extratags += [(65007, "H", 1, skip_bits, True), (65008, "H", 1, 2, True), (65009, "H", 1, 2, True)]
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        for i, frame in enumerate(frames):
            strip = encode_eer_frame(frame, skip_bits, None if sub_yx is None else sub_yx[i])
            writer.write(iter([strip]), shape=frame.shape, dtype=bool, compression="zlib",
                         rowsperstrip=frame.shape[0], photometric="minisblack", metadata=None,
                         extratags=extratags)   # one strip per page, as in EER files
    with tifffile.TiffFile(path, mode="r+b") as tif:
        for page in tif.pages:
            page.tags[259].overwrite(compression)

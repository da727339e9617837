"""tifffile without its own logging, and the check that a TIFF page chain is complete (private).

Shared by the TIFF movie reader (:mod:`vitrify.io.movies`) and the EER reader (:mod:`._eer`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import tifffile

from vitrify.io.errors import InputError


class _TiffErrors(logging.Handler):
    """Collects the messages tifffile logs at ERROR level (it logs, not raises, a cut page chain)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def quiet_tifffile():
    """Silence tifffile's own logging and warnings while we turn its failures into InputErrors.

    Yields the list of error messages tifffile logged meanwhile (see :func:`check_complete`).
    """
    logger = logging.getLogger("tifffile")
    level, propagate = logger.level, logger.propagate
    collector = _TiffErrors()
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    logger.addHandler(collector)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield collector.messages
    finally:
        logger.removeHandler(collector)
        logger.setLevel(level)
        logger.propagate = propagate


def check_complete(tif: tifffile.TiffFile, messages: list[str], path: Path) -> None:
    """Raise InputError if the TIFF was cut short: its page chain points past the end of the
    file (tifffile then silently returns fewer pages) or a page's data lies beyond the end."""
    n_pages = len(tif.pages)  # walks the whole chain of pages
    cut = [m for m in messages if "page offset" in m or "first page" in m]
    if cut:
        raise InputError(f"truncated or corrupt TIFF file (page chain broken after {n_pages} "
                         f"frame(s): {cut[0]})", path=path, expected="a complete TIFF movie")
    size = tif.filehandle.size
    for page in tif.pages:
        if any(o + c > size for o, c in zip(page.dataoffsets, page.databytecounts)):
            raise InputError(f"truncated TIFF file: frame {page.index + 1} of {n_pages} ends beyond "
                             f"the end of the file ({size} bytes)", path=path,
                             expected="a complete TIFF movie")

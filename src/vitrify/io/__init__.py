"""File formats (L0): STAR, MRC/MRCS, TIFF movies, atomic models, acquisition metadata.

Nothing here imports torch: files become numpy arrays and pandas tables.
"""

from vitrify.io.atomic import atomic_write, atomic_path
from vitrify.io.errors import InputError

__all__ = ["InputError", "atomic_write", "atomic_path"]

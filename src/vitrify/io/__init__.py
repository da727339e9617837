"""File formats (L0): STAR, MRC/MRCS, TIFF movies, atomic models, acquisition metadata.

Nothing here imports torch: files become numpy arrays and pandas tables.
"""

from vitrify.io.atomic import atomic_write, atomic_path
from vitrify.io.errors import InputError
from vitrify.io.movies import (
    MovieFrames,
    gain_option_index,
    open_movie,
    read_gain,
    read_movie,
    transform_gain,
    write_movie,
)
from vitrify.io.mrc import MrcStack, open_stack, read_images, read_mrc, read_mrc_header, write_mrc
from vitrify.io.star import (
    OpticsStar,
    merge_optics,
    read_star,
    read_star_block,
    read_star_optics,
    resolve_image_name,
    split_optics,
    write_star,
    write_star_optics,
)

__all__ = [
    "InputError",
    "atomic_write",
    "atomic_path",
    # movies and gain references
    "MovieFrames",
    "open_movie",
    "gain_option_index",
    "read_gain",
    "read_movie",
    "transform_gain",
    "write_movie",
    # MRC
    "MrcStack",
    "open_stack",
    "read_images",
    "read_mrc",
    "read_mrc_header",
    "write_mrc",
    # STAR
    "OpticsStar",
    "merge_optics",
    "read_star",
    "read_star_block",
    "read_star_optics",
    "resolve_image_name",
    "split_optics",
    "write_star",
    "write_star_optics",
]

"""RELION STAR files: read and write multi-block files, optics groups, image names.

Blocks come back in file order as ``{name: table}``: a loop block is a :class:`pandas.DataFrame`
(columns in file order; a loop with labels and no rows is an empty DataFrame with those columns),
a list block (``_label value`` lines) is a ``dict``. Text columns are ``object`` dtype holding
``str`` (the same on pandas 2 and 3). Files are written with RELION-4's exact layout and number
formats (``# version 30001``, ``loop_``, ``_rlnLabel #N``), atomically.

Examples
--------
>>> import tempfile, pathlib, pandas as pd
>>> path = pathlib.Path(tempfile.mkdtemp()) / "a.star"
>>> write_star(path, {"general": {"rlnImageSize": 64}, "particles": pd.DataFrame({"rlnAngleRot": [1.5]})})
>>> blocks = read_star(path)
>>> list(blocks), blocks["general"]["rlnImageSize"], float(blocks["particles"]["rlnAngleRot"][0])
(['general', 'particles'], 64, 1.5)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from vitrify.io._ranges import star_range
from vitrify.io._star_optics import (
    OpticsStar,
    merge_optics,
    optics_blocks,
    optics_star,
    require_columns,
    require_numbers,
    require_plausible,
    split_optics,
)
from vitrify.io._star_read import STRING_LABELS, parse_star_text
from vitrify.io._star_write import format_star
from vitrify.io.atomic import atomic_write
from vitrify.io.errors import InputError

__all__ = [
    "PROJECT_FILE",
    "STRING_LABELS",
    "OpticsStar",
    "absolute_image_names",
    "check_plausible",
    "check_table",
    "image_base_dirs",
    "merge_optics",
    "portable_image_names",
    "portable_name",
    "project_root",
    "read_star",
    "read_star_block",
    "read_star_optics",
    "resolve_image_name",
    "split_optics",
    "write_star",
    "write_star_optics",
]


def read_star(
    path: str | os.PathLike,
    *,
    as_strings: bool = False,
    string_labels: Iterable[str] = (),
) -> dict[str, pd.DataFrame | dict]:
    """Read every block of a STAR file, in file order.

    Parameters
    ----------
    path
        The STAR file.
    as_strings
        Keep every value exactly as its text in the file (for job.star / scheme.star options,
        where ``"7.5 degrees"``, ``Yes`` or ``$$var`` must round-trip unchanged).
    string_labels
        Extra labels to keep as text (labels ending in ``Name`` and those in
        :data:`STRING_LABELS` always are).

    Returns
    -------
    dict
        ``{block name: DataFrame | dict}``; ``data_`` gives the name ``""``.

    Raises
    ------
    InputError
        Missing or unreadable file, or a syntax error (named with its line number).
    """
    path = Path(path)
    text = _read_text(path)
    return parse_star_text(text, path, as_strings=as_strings, string_labels=string_labels)


def _read_text(path: Path) -> str:
    """File text (UTF-8 with or without BOM, else Latin-1); binary files are an InputError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from None
    if b"\0" in raw:
        raise InputError("not a text file", path=path, expected="a STAR file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_star_block(path: str | os.PathLike, block: str, **kwargs) -> pd.DataFrame | dict:
    """One block of a STAR file (``InputError`` naming the blocks present when it is missing)."""
    blocks = read_star(path, **kwargs)
    if block not in blocks:
        present = ", ".join(f"data_{name}" for name in blocks) or "none"
        raise InputError(f"no block data_{block} (blocks present: {present})", path=path)
    return blocks[block]


def check_table(
    frame: pd.DataFrame, path: str | os.PathLike, block: str = "", required: Iterable[str] = ()
) -> None:
    """Validate a loop read by :func:`read_star` as :func:`read_star_optics` validates its tables.

    Raises :class:`InputError` naming the file, block, column and line of the first problem: a
    ``required`` column missing, text in a numeric column, a NaN/infinite or implausible value.
    """
    path = Path(path)
    require_columns(frame, tuple(required), block, path)
    require_numbers(frame, block, path)
    require_plausible(frame, block, path)


def check_plausible(label: str, value: float, *, field: str | None = None) -> None:
    """InputError when ``value`` is not finite or not plausible for RELION label ``label``.

    The ranges are those checked when STAR files are read (voltage 60..400 kV, Cs 0..10 mm,
    amplitude contrast 0..1, pixel sizes 0.1..50 Å, |defocus| <= 200000 Å, ...); ``field`` names
    the option that gave the value (default: the label).

    >>> check_plausible("rlnVoltage", 3000.0, field="kV")
    Traceback (most recent call last):
    ...
    vitrify.errors.InputError: kV: 3000 kV is outside the plausible range (expected a voltage in 60..400 kV)
    """
    rule = star_range(label)
    problem = rule.problem(float(value))
    if problem is not None:
        raise InputError(problem, field=field or label, expected=rule.expected())


def write_star(
    path: str | os.PathLike,
    blocks: Mapping[str, pd.DataFrame | Mapping] | pd.DataFrame,
    *,
    float_format: str | None = None,
) -> None:
    """Write blocks as a RELION-4 STAR file, atomically.

    Parameters
    ----------
    path
        Destination.
    blocks
        ``{name: DataFrame (loop) | mapping (list block)}`` in the order to write; a lone
        DataFrame is written as block ``data_``. Empty DataFrames with columns become loops
        without rows.
    float_format
        printf format for doubles instead of RELION's (e.g. ``"%.10g"`` for full precision).
    """
    if isinstance(blocks, pd.DataFrame):
        blocks = {"": blocks}
    atomic_write(path, format_star(blocks, float_format))


def write_star_optics(
    path: str | os.PathLike,
    optics: pd.DataFrame,
    data: pd.DataFrame,
    data_block: str = "particles",
    *,
    float_format: str | None = None,
) -> None:
    """Write ``data_optics`` then ``data_<data_block>`` in RELION's column order, atomically."""
    write_star(path, optics_blocks(optics, data, data_block), float_format=float_format)


def read_star_optics(
    path: str | os.PathLike,
    data_block: str = "particles",
    *,
    legacy_pixel_size_angst: float | None = None,
) -> OpticsStar:
    """Read and validate a STAR file with an optics table and a data table.

    Parameters
    ----------
    path
        The STAR file.
    data_block
        ``"particles"``, ``"micrographs"`` or ``"movies"`` (any other name is read without
        required-column checks).
    legacy_pixel_size_angst
        Pixel size for pre-3.1 files that carry neither ``rlnDetectorPixelSize`` +
        ``rlnMagnification`` nor a pixel-size column.

    Raises
    ------
    InputError
        Missing block or required column, a value that is not a number, an optics group of the
        data table absent from the optics table (each naming file, block, column and line).
    """
    path = Path(path)
    return optics_star(read_star(path), data_block, path, legacy_pixel_size_angst)


def resolve_image_name(image_name: str, base_dir: str | os.PathLike = ".") -> tuple[int, Path]:
    """Split a RELION image reference ``"NNNNNN@path"`` into (0-based index, path).

    Relative paths are taken relative to ``base_dir`` (the project directory). A name
    without ``@`` is a single-image file: index 0.

    >>> resolve_image_name("000003@Extract/job007/a.mrcs", "/proj")
    (2, PosixPath('/proj/Extract/job007/a.mrcs'))
    """
    text = str(image_name).strip()
    index_text, at, file_name = text.partition("@")
    if not at:
        index_text, file_name = "1", text
    if not index_text.isdigit() or int(index_text) < 1 or not file_name:
        raise InputError(f"bad image name {text!r}", field="rlnImageName", expected="'N@stack.mrcs' with N >= 1")
    return int(index_text) - 1, _stack_path(file_name, os.fspath(base_dir))


@functools.lru_cache(maxsize=4096)
def _stack_path(file_name: str, base_dir: str) -> Path:
    """``file_name`` relative to ``base_dir`` (cached: 10,000 particles name a few stacks)."""
    file_path = Path(file_name)
    return file_path if file_path.is_absolute() else Path(base_dir) / file_path


#: The file that marks a RELION project directory.
PROJECT_FILE = "default_pipeline.star"


def project_root(path: str | os.PathLike) -> Path | None:
    """The RELION project holding ``path``: the nearest folder at or above it (resolved) with
    a ``default_pipeline.star``; None outside any project."""
    target = Path(path).resolve()
    for folder in (target, *target.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return None


def portable_name(path: str | os.PathLike, written_in: str | os.PathLike) -> str:
    """How a STAR file in folder ``written_in`` names ``path`` so that later jobs can read it.

    Inside a RELION project (``written_in`` is in one) the name is relative to the project
    directory, as RELION writes it, when ``path`` is in the project too; elsewhere it is absolute
    (a name relative to some working directory would not resolve from any other).
    """
    target = Path(path).resolve()
    root = project_root(written_in)
    if root is not None and target.is_relative_to(root):
        return target.relative_to(root).as_posix()
    return target.as_posix()


def image_base_dirs(star_path: str | os.PathLike) -> list[Path]:
    """Folders a relative file name read from ``star_path`` may be relative to, in the order tried:
    the current directory (RELION's project directory), the project holding the file, the file's own
    folder (a STAR file written next to its stacks)."""
    star_path = Path(star_path)
    bases = [Path.cwd().resolve(), project_root(star_path.parent), star_path.parent.resolve()]
    return list(dict.fromkeys(base for base in bases if base is not None))


def portable_image_names(names: pd.Series, base_dir: str | os.PathLike,
                         written_in: str | os.PathLike) -> pd.Series:
    """``rlnImageName`` values (``N@stack``, relative to ``base_dir``) renamed with
    :func:`portable_name` for a STAR file written in ``written_in``; the ``N@`` part is kept."""
    text = names.astype(str).str.strip()
    split = text.str.partition("@")
    has_index = split[1] == "@"
    files = split[2].where(has_index, text)
    renamed = {f: portable_name(f if Path(f).is_absolute() else Path(base_dir) / f, written_in)
               for f in files.unique()}
    new_files = files.map(renamed)
    return (split[0] + "@" + new_files).where(has_index, new_files)


def absolute_image_names(names: pd.Series, star_path: str | os.PathLike) -> pd.Series:
    """``rlnImageName`` values read from ``star_path`` as ``N@/absolute/stack``: each file is found
    in the first of :func:`image_base_dirs` that holds it (the first of them when none does), so
    the names of two STAR files that refer to the same image compare equal."""
    bases = image_base_dirs(star_path)
    text = names.astype(str).str.strip()
    split = text.str.partition("@")
    has_index = split[1] == "@"
    files = split[2].where(has_index, text)

    def locate(name: str) -> str:
        found = [base / name for base in bases if (base / name).exists()]
        return (found[0] if found else bases[0] / name).resolve().as_posix()

    located = files.map({f: locate(f) for f in files.unique()})
    return (split[0] + "@" + located).where(has_index, located)

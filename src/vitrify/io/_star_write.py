"""STAR formatting (private): blocks -> text exactly as RELION 4 writes it.

Layout per table (``shared/spec/formats.md`` section 1)::

    <blank>
    # version 30001
    <blank>
    data_NAME
    <blank>
    loop_                      list blocks instead: _rlnLabel + padding (12 + maxlen - len) + value
    _rlnLabel #1
    <rows: strings right-aligned to width 10, numbers width 12, each followed by one space>
    " " (a line with one space)

Doubles are ``%12.6f`` (>= 0) / ``%12.5f`` (< 0), switching to ``%12.6e`` / ``%12.5e`` when
``0 < |v| < 0.001`` or ``|v| > 100000``; integers and booleans ``%12d``. We do not truncate an
exponent of three digits to 12 characters as RELION does (that would change the value).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from vitrify.io._star_labels import is_double_label

STAR_VERSION = 30001
_SCIENTIFIC_BELOW = 0.001
_SCIENTIFIC_ABOVE = 100000.0


def format_double(value: float) -> str:
    """One double in RELION's format (width 12)."""
    magnitude = abs(value)
    scientific = (0 < magnitude < _SCIENTIFIC_BELOW) or magnitude > _SCIENTIFIC_ABOVE
    if value < 0:
        return ("%12.5e" if scientific else "%12.5f") % value
    return ("%12.6e" if scientific else "%12.6f") % value


_DOUBLE_FORMATS = ("%12.6f", "%12.5f", "%12.6e", "%12.5e")


def format_doubles(values: np.ndarray, float_format: str | None = None) -> list[str]:
    """Vectorised :func:`format_double` for a float array (n,) -> list of n strings."""
    values = np.asarray(values, dtype=np.float64)
    if float_format is not None:
        return [(float_format % v).rjust(12) for v in values.tolist()]
    magnitude = np.abs(values)
    with np.errstate(invalid="ignore"):
        scientific = ((magnitude > 0) & (magnitude < _SCIENTIFIC_BELOW)) | (magnitude > _SCIENTIFIC_ABOVE)
        category = (values < 0).astype(np.int8) + 2 * scientific.astype(np.int8)
    if not category.any():
        return ["%12.6f" % v for v in values.tolist()]
    formats = [_DOUBLE_FORMATS[c] for c in category.tolist()]
    return [f % v for f, v in zip(formats, values.tolist())]


def quote_string(text: str) -> str:
    """Quote a string the way RELION does (empty -> ``""``; spaces or a leading quote -> ``"..."``).

    Strings starting with ``#``, ``;``, ``_``, ``data_`` or ``loop_`` are quoted too, so that a reader
    never mistakes them for a comment, a label or a block start.
    """
    if "\n" in text or "\r" in text:
        raise ValueError(f"STAR values cannot contain line breaks: {text!r}")
    if text == "":
        return '""'
    needs_quotes = (
        " " in text
        or "\t" in text
        or text[0] in "\"'#;_"
        or text.startswith(("data_", "loop_"))
    )
    if not needs_quotes:
        return text
    escaped = []
    for i, c in enumerate(text):
        if c == '"' and (i + 1 == len(text) or text[i + 1] in " \t"):
            escaped.append("\a")
        escaped.append(c)
    return '"' + "".join(escaped) + '"'


def format_value(value, float_format: str | None = None) -> tuple[str, bool]:
    """One value -> (text, is_number). Numbers come padded to width 12, strings unpadded."""
    if isinstance(value, (bool, np.bool_)):
        return "%12d" % int(value), True
    if isinstance(value, (int, np.integer)):
        return "%12d" % value, True
    if isinstance(value, (float, np.floating)):
        if float_format is not None:
            return (float_format % value).rjust(12), True
        return format_double(float(value)), True
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ",".join("%.12g" % v for v in value) + "]", False
    if value is None or value is pd.NA or value is pd.NaT:
        return '""', False
    return quote_string(str(value)), False


def format_column(series: pd.Series, float_format: str | None = None, double: bool = False) -> list[str]:
    """Format one loop column: each cell right-aligned (numbers 12, text 10) and followed by a space.

    ``double``: the label is a RELION double, so integer columns are written as doubles too.
    """
    dtype = series.dtype
    if double and pd.api.types.is_integer_dtype(dtype) and not series.hasnans:
        cells = format_doubles(series.to_numpy(dtype=np.float64), float_format)
    elif pd.api.types.is_bool_dtype(dtype) and not series.hasnans:
        cells = np.char.mod("%12d", series.to_numpy(dtype=np.int64)).tolist()
    elif pd.api.types.is_integer_dtype(dtype) and not series.hasnans:
        cells = np.char.mod("%12d", series.to_numpy(dtype=np.int64)).tolist()
    elif pd.api.types.is_float_dtype(dtype):
        cells = format_doubles(series.to_numpy(dtype=np.float64, na_value=np.nan), float_format)
    else:
        values = series.tolist()
        if all(type(v) is str for v in values):
            cells = [quote_string(v).rjust(10) for v in values]
        else:
            cells = [_pad_cell(*format_value(v, float_format)) for v in values]
    return [c + " " for c in cells]


def _pad_cell(text: str, is_number: bool) -> str:
    return text if is_number else text.rjust(10)


def format_loop(frame: pd.DataFrame, float_format: str | None = None) -> str:
    """The body of a loop table (from ``loop_`` to the closing ``" "`` line)."""
    labels = [str(c) for c in frame.columns]
    if not labels:
        return ""  # a table without columns: only its data_ line (reads back as an empty block)
    lines = ["loop_ "] + [f"_{label} #{k} " for k, label in enumerate(labels, start=1)]
    columns = [format_column(frame.iloc[:, k], float_format, is_double_label(labels[k])) for k in range(len(labels))]
    lines += ["".join(cells) for cells in zip(*columns)]
    return "\n".join(lines) + "\n \n"


def format_list(values: Mapping, float_format: str | None = None) -> str:
    """The body of a list (single-row) table; labels padded to ``12 + maxlen - len``."""
    if not values:
        return " \n"
    width = max(len(str(label)) for label in values)
    lines = []
    for label, value in values.items():
        if is_double_label(str(label)) and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            value = float(value)
        text, _ = format_value(value, float_format)
        lines.append(f"_{label}" + " " * (12 + width - len(str(label))) + text)
    return "\n".join(lines) + "\n \n"


def format_star(blocks: Mapping[str, pd.DataFrame | Mapping], float_format: str | None = None) -> str:
    """All blocks as one RELION-4 STAR text (each table with its own version header)."""
    parts = []
    for name, block in blocks.items():
        if isinstance(block, pd.Series):
            block = block.to_dict()
        body = format_loop(block, float_format) if isinstance(block, pd.DataFrame) else format_list(
            block, float_format
        )
        parts.append(f"\n# version {STAR_VERSION}\n\ndata_{name}\n\n{body}")
    return "".join(parts)

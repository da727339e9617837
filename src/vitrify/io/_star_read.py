"""STAR parsing (private): text -> ordered blocks of pandas tables and dicts.

Reading rules follow RELION's reader (see ``shared/spec/formats.md`` section 1): comment lines start
with ``#`` or ``;``; ``data_X`` starts block ``X``; a block is either a list block (``_label value``
lines) or one ``loop_`` (label lines ``_label [#n]`` then one row per line, ending at the first
blank line); tokens are whitespace separated and ``"..."``/``'...'`` group tokens (a quote only
closes when followed by whitespace or the end of the line; ``BEL`` + quote is a literal quote).
More values than labels is an error; fewer is an error unless the loop has at most two labels
(``name`` alone in a job.star option loop means an empty value), as in RELION.

We parse ourselves rather than through ``starfile.read``: starfile rewrites ``'`` as ``"``, treats
``#`` anywhere in a row as a comment and cannot read a loop without rows, which RELION writes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.io._star_labels import STRING_LABELS, is_double_label, is_int_label, is_string_label
from vitrify.io.errors import InputError

__all__ = ["STRING_LABELS", "convert_scalar", "convert_values", "parse_star_text", "tokenize"]

_WHITESPACE = " \t"
_QUOTES = "\"'"

def tokenize(line: str) -> list[str]:
    """Split one STAR line into tokens, honouring RELION's quoting rules.

    Raises ``ValueError`` for an unterminated quote.
    """
    tokens: list[str] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in _WHITESPACE:
            i += 1
        elif c in _QUOTES:
            k = _closing_quote(line, i)
            tokens.append(line[i + 1 : k].replace("\a" + c, c))
            i = k + 1
        else:
            k = i
            while k < n and line[k] not in _WHITESPACE:
                k += 1
            tokens.append(line[i:k])
            i = k
    return tokens


def _closing_quote(line: str, start: int) -> int:
    """Index of the quote closing the one at ``start`` (followed by whitespace/end, not BEL-escaped)."""
    quote, n, j = line[start], len(line), start + 1
    while True:
        k = line.find(quote, j)
        if k < 0:
            raise ValueError("unterminated quote")
        followed_ok = k + 1 == n or line[k + 1] in _WHITESPACE
        escaped = k - 1 > start and line[k - 1] == "\a"
        if followed_ok and not escaped:
            return k
        j = k + 1


def convert_values(values: np.ndarray) -> np.ndarray:
    """Object array of strings -> int64, float64, or the strings unchanged (first that fits all)."""
    for dtype in (np.int64, np.float64):
        try:
            return values.astype(dtype)
        except (ValueError, OverflowError, TypeError):
            continue
    return values


def convert_scalar(text: str) -> int | float | str:
    """One value -> int, float or the text unchanged."""
    converted = convert_values(np.array([text], dtype=object))
    return converted[0].item() if converted.dtype != object else text


class _Lines:
    """Cursor over the lines of a file, with 1-based line numbers for error messages."""

    def __init__(self, text: str, path: str) -> None:
        self.lines = text.splitlines()
        self.i = 0
        self.path = path

    def done(self) -> bool:
        return self.i >= len(self.lines)

    def stripped(self) -> str:
        return self.lines[self.i].strip()

    def line_no(self) -> int:
        return self.i + 1

    def skip_blank_and_comments(self) -> None:
        while not self.done() and _is_blank_or_comment(self.stripped()):
            self.i += 1

    def error(self, message: str, expected: str | None = None, line: int | None = None) -> InputError:
        return InputError(message, path=self.path, field=f"line {line or self.line_no()}", expected=expected)


def _is_blank_or_comment(stripped: str) -> bool:
    return not stripped or stripped[0] in "#;"


def parse_star_text(
    text: str,
    path: str | Path = "<string>",
    *,
    as_strings: bool = False,
    string_labels: Iterable[str] = (),
) -> dict[str, pd.DataFrame | dict]:
    """Parse STAR text into ``{block name: DataFrame (loop) | dict (list block)}`` in file order.

    ``as_strings`` keeps every value as the text in the file; otherwise each loop column becomes
    int64, float64 or text (the first that fits every row) and labels in :data:`STRING_LABELS`,
    ending in ``Name``, or listed in ``string_labels`` always stay text.
    """
    cursor = _Lines(text, str(path))
    keep_text = frozenset(string_labels)
    blocks: dict[str, pd.DataFrame | dict] = {}
    while True:
        cursor.skip_blank_and_comments()
        if cursor.done():
            return blocks
        line = cursor.stripped()
        if not line.startswith("data_"):
            raise cursor.error(
                f"unexpected text {line[:40]!r} outside a data block "
                "(a STAR loop ends at its first blank line)",
                expected="'data_NAME', 'loop_' or a comment",
            )
        name = line[5:].split()[0] if len(line) > 5 else ""
        if name in blocks:
            raise cursor.error(f"block data_{name} appears twice")
        cursor.i += 1
        blocks[name] = _parse_block(cursor, name, as_strings, keep_text)


def _parse_block(cursor: _Lines, name: str, as_strings: bool, keep_text: frozenset):
    cursor.skip_blank_and_comments()
    if cursor.done() or cursor.stripped().startswith("data_"):
        return {}
    line = cursor.stripped()
    if line.startswith("loop_"):
        cursor.i += 1
        return _parse_loop(cursor, name, as_strings, keep_text)
    if line.startswith("_"):
        return _parse_list(cursor, name, as_strings, keep_text)
    raise cursor.error(f"unexpected text {line[:40]!r} in data_{name}", expected="'loop_' or '_label value'")


def _parse_list(cursor: _Lines, name: str, as_strings: bool, keep_text: frozenset) -> dict:
    values: dict[str, object] = {}
    while True:
        cursor.skip_blank_and_comments()
        if cursor.done() or cursor.stripped().startswith("data_"):
            return values
        line = cursor.stripped()
        if not line.startswith("_"):
            raise cursor.error(f"unexpected text {line[:40]!r} in list block data_{name}",
                               expected="'_label value'")
        parts = line[1:].split(None, 1)
        label, rest = parts[0], parts[1] if len(parts) > 1 else ""
        tokens = _tokens_or_error(cursor, rest)
        if len(tokens) > 1 and not tokens[1].startswith("#"):
            raise cursor.error(f"{len(tokens)} values for _{label} in data_{name}", expected="one value")
        if not tokens:
            raise cursor.error(f"no value for _{label} in data_{name}", expected="'_label value'")
        if label in values:
            raise cursor.error(f"_{label} appears twice in data_{name}")
        text_only = as_strings or is_string_label(label) or label in keep_text
        values[label] = tokens[0] if text_only else _typed_scalar(label, convert_scalar(tokens[0]))
        cursor.i += 1


def _typed_scalar(label: str, value):
    """List-block value with the label's RELION type (see :func:`_apply_label_types`)."""
    if isinstance(value, int) and is_double_label(label):
        return float(value)
    if isinstance(value, float) and is_int_label(label) and value.is_integer():
        return int(value)
    return value


def _tokens_or_error(cursor: _Lines, text: str, line: int | None = None) -> list[str]:
    try:
        return tokenize(text)
    except ValueError as exc:
        raise cursor.error(
            str(exc), expected="a closing quote followed by a space or the line end", line=line
        ) from None


def _parse_loop(cursor: _Lines, name: str, as_strings: bool, keep_text: frozenset) -> pd.DataFrame:
    labels = _parse_loop_labels(cursor)
    if not labels:
        raise cursor.error(f"loop_ without labels in data_{name}", expected="'_label' lines after 'loop_'")
    if len(set(labels)) != len(labels):
        raise cursor.error(f"a label appears twice in data_{name}")
    rows, line_numbers = _collect_rows(cursor)
    text = [as_strings or is_string_label(label) or label in keep_text for label in labels]
    frame = _fast_frame(rows, labels, text)
    if frame is None:
        table = _rows_to_array(cursor, rows, line_numbers, labels, name)
        columns = {label: table[:, k] if text[k] else convert_values(table[:, k]) for k, label in enumerate(labels)}
        frame = pd.DataFrame({label: pd.Series(col, dtype=col.dtype, copy=False) for label, col in columns.items()})
    if not as_strings:
        frame = _apply_label_types(frame)
    frame.attrs["star_first_line"] = line_numbers[0] if line_numbers else 0
    if line_numbers and line_numbers[-1] - line_numbers[0] + 1 != len(line_numbers):
        frame.attrs["star_row_lines"] = tuple(line_numbers)
    return frame


_FAST_MIN_ROWS = 500
# pandas < 3 parses floats approximately unless asked; pandas 3 is exact and deprecates the option.
_EXACT_FLOATS = {"float_precision": "round_trip"} if int(pd.__version__.split(".")[0]) < 3 else {}


def _fast_frame(rows: list[str], labels: list[str], text: list[bool]) -> pd.DataFrame | None:
    """Parse a large unquoted loop with pandas' C reader; None when the careful path is needed.

    Any doubt (quotes, a row too long or too short, booleans) returns None, and the row-by-row
    parser then either succeeds or reports the exact line.
    """
    if len(rows) < _FAST_MIN_ROWS or any('"' in row or "'" in row for row in rows):
        return None
    try:
        frame = pd.read_csv(
            io.StringIO("\n".join(rows)), sep=r"\s+", header=None, names=list(range(len(labels))),
            dtype={k: object for k, keep in enumerate(text) if keep}, na_filter=False,
            quoting=csv.QUOTE_NONE, engine="c", **_EXACT_FLOATS,
        )
    except (pd.errors.ParserError, ValueError):
        return None
    last = frame.iloc[:, -1]
    short_row = last.isna().any() or (
        not pd.api.types.is_numeric_dtype(last.dtype) and (last.astype(object) == "").any()
    )
    if len(frame) != len(rows) or short_row:
        return None
    for k in range(len(labels)):
        dtype = frame[k].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            values = frame[k].astype(str).to_numpy(dtype=object)
            values = values if text[k] else convert_values(values)
            frame[k] = pd.Series(values, index=frame.index, dtype=values.dtype)
    frame.columns = labels
    return frame


def _apply_label_types(frame: pd.DataFrame) -> pd.DataFrame:
    """RELION double labels -> float64; integral float columns of integer labels -> int64."""
    casts = {}
    for label in frame.columns:
        dtype = frame[label].dtype
        if is_double_label(label) and pd.api.types.is_integer_dtype(dtype):
            casts[label] = np.float64
        elif is_int_label(label) and pd.api.types.is_float_dtype(dtype):
            values = frame[label].to_numpy()
            if np.isfinite(values).all() and (values == np.round(values)).all():
                casts[label] = np.int64
    return frame.astype(casts) if casts else frame


def _parse_loop_labels(cursor: _Lines) -> list[str]:
    labels: list[str] = []
    while True:
        cursor.skip_blank_and_comments()
        if cursor.done() or not cursor.stripped().startswith("_"):
            return labels
        labels.append(cursor.stripped().split()[0][1:])
        cursor.i += 1


def _collect_rows(cursor: _Lines) -> tuple[list[str], list[int]]:
    """Row lines of a loop: from the first data line to the first blank line (comments skipped)."""
    rows: list[str] = []
    numbers: list[int] = []
    while not cursor.done():
        line = cursor.stripped()
        if not line:
            break
        if line[0] in "#;":
            cursor.i += 1
            continue
        if line.startswith(("data_", "loop_", "_")):
            break
        rows.append(line)
        numbers.append(cursor.line_no())
        cursor.i += 1
    return rows, numbers


def _rows_to_array(cursor: _Lines, rows: list[str], numbers: list[int], labels: list[str], name: str):
    """Tokenize rows into an object array (n_rows, n_labels), checking every row's length."""
    n_labels = len(labels)
    if not rows:
        return np.empty((0, n_labels), dtype=object)
    quoted = any(q in row for row in rows for q in _QUOTES)
    if quoted:
        split = [_tokens_or_error(cursor, row, no) for row, no in zip(rows, numbers)]
    else:
        split = [row.split() for row in rows]
    for tokens, no in zip(split, numbers):
        if len(tokens) < n_labels <= 2:
            tokens.extend([""] * (n_labels - len(tokens)))  # RELION: short rows allowed up to 2 labels
        if len(tokens) != n_labels:
            raise cursor.error(
                f"{len(tokens)} values in a row of data_{name}", expected=f"{n_labels} values (one per label)",
                line=no,
            )
    table = np.empty((len(split), n_labels), dtype=object)
    table[:] = split
    return table


"""Job options → job.star values: text helpers and vitrify's own settings (``vitrify_*`` keys).

Each job module's ``job_star_from_options(options)`` writes RELION-4 option names (the
inverse of its ``options_from_job_star``). Settings RELION's job.star has no name for
(``device``, diagnostics, thresholds of our own pickers, ...) are kept as extra rows
``vitrify_<field>`` (``vitrify_search.fit_threshold`` for a nested field): RELION ignores
option rows it does not know, and :func:`options_from_values` puts them back, so
``options_from_values(module, module.job_star_from_options(o)) == o``.

>>> yes_no(True), number_text(300.0), number_text(1.5), number_text(-1)
('Yes', '300', '1.5', '-1')
>>> is_yes("Yes"), is_yes(' "true" '), is_yes("No"), is_yes("")
(True, True, False, False)
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from vitrify.io.errors import InputError

EXTRA_PREFIX = "vitrify_"
_NONE = "None"
_TRUE = ("yes", "true", "1", "y")


def is_yes(value: object) -> bool:
    """True for a job.star (or pipeline) yes: ``Yes``, ``true``, ``1``, ``y`` in any case, quoted or not.

    The one yes/no parser of vitrify's job.star values; anything else (``No``, empty) is False.
    """
    return str(value).strip().strip('"').strip().lower() in _TRUE


def text(values: Mapping[str, str], key: str, default: str = "") -> str:
    """A text job.star value with surrounding quotes removed; unset or a ``$$`` variable gives ``default``."""
    raw = str(values.get(key, "")).strip().strip('"')
    return raw if raw and not raw.startswith("$$") else default


def flag(values: Mapping[str, str], key: str, default: bool) -> bool:
    """A job.star Yes/No value (:func:`is_yes`); unset or a ``$$`` variable gives ``default``."""
    raw = text(values, key)
    return is_yes(raw) if raw else default


def number(values: Mapping[str, str], key: str, default: float) -> float:
    """A numeric job.star value; unset or ``$$`` gives ``default``; junk is an InputError naming ``key``."""
    raw = text(values, key)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InputError(f"not a number: {raw!r}", field=key, expected="a number") from None


def whole_number(values: Mapping[str, str], key: str, default: int) -> int:
    """An integer job.star value (``5`` or ``5.0``); a fraction or junk is an InputError naming ``key``."""
    value = number(values, key, default)
    if value != int(value):
        raise InputError(f"not a whole number: {value!r}", field=key, expected="an integer")
    return int(value)


def yes_no(value: bool) -> str:
    """RELION's ``Yes`` / ``No``."""
    return "Yes" if value else "No"


def number_text(value: float | int) -> str:
    """A number as short exact text (``300`` for 300.0, ``1.5``; floats round-trip exactly)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(int(value))


def read_threads(values: Mapping[str, str]) -> int:
    """Threads from RELION's ``nr_threads`` (at least 1)."""
    return int(number(values, "nr_threads", 1) or 1)


def write_threads(threads: int, _owner: Any) -> dict[str, str]:
    """``nr_threads`` for ``threads`` (0, every usable CPU, is written as 1)."""
    return {"nr_threads": number_text(max(threads, 1))}


def read_device(values: Mapping[str, str]) -> str:
    """``cuda`` when RELION's ``use_gpu`` is Yes, else ``cpu``."""
    return "cuda" if flag(values, "use_gpu", False) else "cpu"


def write_device(device: str, _owner: Any) -> dict[str, str]:
    """``use_gpu`` for ``device``."""
    return {"use_gpu": yes_no(device == "cuda")}


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Field path → value for every non-dataclass value inside a (nested) dataclass (fields
    derived in ``__post_init__``, ``init=False``, are left out: they follow the others)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_leaves(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out


def _encode(value: Any) -> str:
    if value is None:
        return _NONE
    if isinstance(value, bool):
        return yes_no(value)
    if isinstance(value, (int, float)):
        return number_text(value)
    if isinstance(value, str):
        return value
    if isinstance(value, tuple) and all(isinstance(v, (str, int, float)) and "," not in str(v) for v in value):
        return ",".join(_encode(v) for v in value)
    raise TypeError(f"cannot keep {type(value).__name__} in a job.star")


def extra_values(options: Any, base: Any) -> dict[str, str]:
    """``vitrify_<path>`` rows for every field where ``options`` differs from ``base``."""
    wanted, have = _leaves(options), _leaves(base)
    extras = {key: _encode(value) for key, value in wanted.items()
              if key not in have or have[key] != value or type(have[key]) is not type(value)}
    for key in have.keys() - wanted.keys():  # a nested dataclass that is None in ``options``
        head = key.split(".")[0]
        if head in wanted:
            extras[head] = _NONE
    return {f"{EXTRA_PREFIX}{key}": text for key, text in sorted(extras.items())}


def with_extras(options: Any, values: dict[str, str], from_star: Callable[[dict[str, str]], Any]) -> dict[str, str]:
    """``values`` (RELION names) plus the ``vitrify_*`` rows ``from_star(values)`` needs to give ``options``."""
    return {**values, **extra_values(options, from_star(dict(values)))}


def _decode(raw: str, hint: Any, key: str) -> Any:
    raw = str(raw).strip()
    raw = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    args = typing.get_args(hint)
    if args and (typing.get_origin(hint) in (typing.Union, types.UnionType)):
        if raw == _NONE and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    decoders: dict[Any, Callable[[str], Any]] = {
        bool: is_yes, int: lambda s: int(float(s)), float: float, str: lambda s: s}
    if typing.get_origin(hint) is tuple:  # comma-separated: tuple[str, ...], tuple[int, int]
        items = [item.strip() for item in raw.split(",")] if raw else []
        kinds = typing.get_args(hint)
        kinds = [kinds[0]] * len(items) if kinds[-1] is Ellipsis else list(kinds)
        if len(kinds) != len(items) or any(k not in decoders for k in kinds):
            raise InputError(f"{raw!r} for option {EXTRA_PREFIX}{key}", field=EXTRA_PREFIX + key,
                             expected=f"{len(kinds)} comma-separated values")
        return tuple(_decode(item, kind, key) for item, kind in zip(items, kinds))
    if hint not in decoders:
        raise InputError(f"option {EXTRA_PREFIX}{key} cannot be set from a job.star", field=EXTRA_PREFIX + key,
                         expected="a vitrify option of a number, text or Yes/No")
    try:
        return decoders[hint](raw)
    except ValueError:
        raise InputError(f"not a number: {raw!r}", field=EXTRA_PREFIX + key, expected="a number") from None


def _type_hints(cls: type) -> dict[str, Any]:
    """Field types of ``cls``; settings classes named by a field's metadata (``module:Class``,
    imported only under TYPE_CHECKING in torch-free ``Options`` modules) are imported here."""
    local: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        path = getattr(f.metadata.get("vitrify"), "cls", "")
        if path:
            module, name = path.split(":")
            local[name] = getattr(importlib.import_module(module), name)
    return typing.get_type_hints(cls, localns=local)


def _apply(obj: Any, changes: dict[str, str], prefix: str = "") -> Any:
    """``obj`` (a dataclass, or None with its class given) with ``changes`` (path → text) applied."""
    hints = _type_hints(type(obj))
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, str]] = {}
    for key, raw in changes.items():
        head, _, rest = key.partition(".")
        if head not in hints:
            raise InputError(f"unknown option {EXTRA_PREFIX}{prefix}{key}", field=EXTRA_PREFIX + prefix + key,
                             expected=f"a field of {type(obj).__name__}")
        if rest:
            nested.setdefault(head, {})[rest] = raw
        else:
            direct[head] = raw
    new: dict[str, Any] = {}
    for head, raw in direct.items():
        new[head] = _decode(raw, hints[head], prefix + head)
    for head, sub in nested.items():
        current = new.get(head, getattr(obj, head))
        new[head] = _apply(current, sub, f"{prefix}{head}.") if current is not None else \
            _build(_dataclass_in(hints[head]), sub, f"{prefix}{head}.")
    return dataclasses.replace(obj, **new) if new else obj


def _dataclass_in(hint: Any) -> type | None:
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _build(cls: type | None, changes: dict[str, str], prefix: str) -> Any:
    """A nested options dataclass made from its ``vitrify_*`` rows alone (it was None)."""
    if cls is None:
        raise InputError(f"options {EXTRA_PREFIX}{prefix}* do not belong to a settings group",
                         field=EXTRA_PREFIX + prefix, expected="a nested vitrify setting")
    hints = _type_hints(cls)
    return cls(**{key: _decode(raw, hints[key], prefix + key) for key, raw in changes.items()})


def options_from_values(module: Any, values: Mapping[str, str]) -> Any:
    """The job module's ``Options`` from job.star values: its RELION options plus ``vitrify_*`` rows."""
    options = module.options_from_job_star(dict(values))
    extras = {k[len(EXTRA_PREFIX):]: str(v) for k, v in values.items() if k.startswith(EXTRA_PREFIX)}
    return _apply(options, extras) if extras else options

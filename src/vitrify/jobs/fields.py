"""Job settings declared once: an ``Options`` field's metadata names everything about it.

Each field of a job's ``Options`` (``vitrify.jobs.options.<job>``) is made with
:func:`setting` (one value), :func:`group` (a settings dataclass of a lower layer, such as
``MotionOptions``, whose members the job declares) or :func:`variants` (a settings class
chosen by another field). The metadata (:class:`Setting`) carries the help text, unit,
CLI flag, whether the CLI needs it, the RELION job.star name and any conversion; from it:

- :func:`options_from_job_star` / :func:`job_star_from_options`: both job.star directions
  (settings RELION has no name for travel as ``vitrify_*`` rows, :mod:`.jobstar_values`);
- :func:`cli_options` / :func:`options_from_cli`: the command-line parameters (built into
  typer commands by :mod:`vitrify.cli._job_options`) and the ``Options`` they give.

Nothing here imports torch: a group's class is imported only when one is built.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo:
...     step_deg: float = setting(12.0, help="Angular step.", unit="deg", flag="--step", star="psi", scale=2.0)
>>> job_star_from_options(Demo(), {"do_x": "Yes"})
{'do_x': 'Yes', 'psi': '6'}
>>> options_from_job_star(Demo, {"psi": "5"})
Demo(step_deg=10.0)
"""

from __future__ import annotations

import dataclasses
import importlib
import operator
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from typing import Any

from vitrify.io.errors import InputError
from vitrify.jobs.jobstar_values import flag, number, number_text, text, whole_number, with_extras, yes_no

KEY = "vitrify"


class _Unset:
    """Marks a :class:`Setting` value not given (``star_default``, ``default``)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
_EMPTY = {"str": "", "float": 0.0, "int": 0, "bool": False}


@dataclass(frozen=True)
class Convert:
    """A value's other form: ``to_field(outside) -> field value`` and ``from_field(value) -> outside``."""

    to_field: Callable[[Any], Any]
    from_field: Callable[[Any], Any]


#: a ``--no-x`` flag for a field ``x`` that defaults to True
NEGATED = Convert(operator.not_, operator.not_)


@dataclass(frozen=True)
class Setting:
    """Everything about one job setting (a field of ``Options`` or a member of a :class:`Group`).

    help, unit
        Help text (``--help``) and unit of the value (``Å``, ``px``, ``deg``; empty if none).
    flag
        CLI flag(s) as typer takes them (``--K``, ``--ctf/--no-ctf``); empty: the value comes
        from the flag of ``cli_from`` (another setting's path, one flag for two fields).
    required
        True: the CLI must give it; a text: when it is needed (``"unless --continue"``), so the
        CLI shows no default and says so.
    star, scale, star_default
        RELION job.star option name (empty: kept as a ``vitrify_*`` row only); field value =
        ``scale`` × job.star number (RELION's GUI halves some steps); value when the row is
        absent (default: the field's default).
    read, write
        Custom job.star mapping when one name is not enough: ``read(values) -> value``,
        ``write(value, owner) -> rows`` (``owner``: the ``Options`` or group holding it).
    cli, cli_type
        :class:`Convert` between the CLI value and the field value; the CLI value's type
        when the default does not tell (a default of None).
    default
        A group member's default (a field's default is the dataclass field's).
    """

    help: str
    unit: str = ""
    flag: str = ""
    cli_from: str = ""
    required: bool | str = False
    star: str = ""
    scale: float = 1.0
    star_default: Any = UNSET
    read: Callable[[Mapping[str, str]], Any] | None = None
    write: Callable[[Any, Any], dict[str, str]] | None = None
    cli: Convert | None = None
    cli_type: type | None = None
    default: Any = UNSET


@dataclass(frozen=True)
class Group:
    """A settings dataclass of a lower layer held in one field; the job declares its members.

    ``cls`` is ``"module:Class"`` (imported when built). Members not declared keep the
    class's defaults (and travel as ``vitrify_*`` rows). ``optional``: the field defaults to
    None; the CLI builds it when a member differs from its default, a job.star when
    ``present(values)``; it is written when not None and ``shown(group)``, else as ``absent``.
    """

    help: str
    cls: str
    members: Mapping[str, Setting]
    optional: bool = False
    present: Callable[[Mapping[str, str]], bool] | None = None
    shown: Callable[[Any], bool] | None = None
    absent: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def build(self, values: Mapping[str, Any] | None = None) -> Any:
        """The settings object from its members' defaults updated with ``values``."""
        module, name = self.cls.split(":")
        cls = getattr(importlib.import_module(module), name)
        return cls(**{**{key: s.default for key, s in self.members.items()}, **(values or {})})


@dataclass(frozen=True)
class Variants:
    """A field whose settings class depends on field ``key`` (simulate: ``sim`` by ``kind``)."""

    help: str
    key: str
    groups: Mapping[str, Group]
    what: str = ""

    def pick(self, choice: Any, star_key: str = "") -> Group:
        """The group for ``choice``; InputError naming ``star_key`` for an unknown one."""
        if choice not in self.groups:
            raise InputError(f"unknown {self.what or self.key} {choice!r}", field=star_key or self.key,
                             expected=" | ".join(self.groups))
        return self.groups[choice]


Spec = Setting | Group | Variants


def setting(default: Any = MISSING, *, default_factory: Any = MISSING, **spec: Any) -> Any:
    """A dataclass field described by a :class:`Setting` (keyword arguments as its fields)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={KEY: Setting(**spec)})


def group(spec: Group) -> Any:
    """A dataclass field holding ``spec``'s settings object (None for an optional group)."""
    if spec.optional:
        return dataclasses.field(default=None, metadata={KEY: spec})
    return dataclasses.field(default_factory=spec.build, metadata={KEY: spec})


def variants(spec: Variants) -> Any:
    """A (required) dataclass field whose settings class is chosen by ``spec.key``."""
    return dataclasses.field(metadata={KEY: spec})


def spec_of(field: dataclasses.Field) -> Spec:
    """The metadata of an ``Options`` field; a field without one is a programming error."""
    try:
        return field.metadata[KEY]
    except KeyError:
        raise TypeError(f"field {field.name} has no vitrify setting metadata") from None


def field_default(field: dataclasses.Field) -> Any:
    """The field's default; for a field without one, the empty value of its type (``""``, 0)."""
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    return _EMPTY.get(str(field.type), None)


# ---------------------------------------------------------------- job.star


def _read(spec: Setting, values: Mapping[str, str], default: Any) -> Any:
    if spec.read is not None:
        return spec.read(values)
    fallback = default if spec.star_default is UNSET else spec.star_default
    if not spec.star:
        return fallback
    if isinstance(fallback, bool):
        return flag(values, spec.star, fallback)
    if isinstance(fallback, int):
        return whole_number(values, spec.star, fallback)
    if isinstance(fallback, float):
        return fallback if not text(values, spec.star) else spec.scale * number(values, spec.star, 0.0)
    return text(values, spec.star, fallback)


def encode(value: Any) -> str:
    """A job.star text for a number, Yes/No or text."""
    if isinstance(value, bool):
        return yes_no(value)
    if isinstance(value, (int, float)):
        return number_text(value)
    return str(value)


def _write(spec: Setting, value: Any, owner: Any) -> dict[str, str]:
    if spec.write is not None:
        return spec.write(value, owner)
    if not spec.star:
        return {}
    if spec.scale != 1.0:
        value = value / spec.scale
    return {spec.star: encode(value)}


def _read_group(spec: Group, values: Mapping[str, str]) -> Any:
    if spec.optional and (spec.present is None or not spec.present(values)):
        return None
    return spec.build({name: _read(member, values, member.default) for name, member in spec.members.items()})


def _write_group(spec: Group, obj: Any) -> dict[str, str]:
    if obj is None or (spec.shown is not None and not spec.shown(obj)):
        return dict(spec.absent)
    rows: dict[str, str] = {}
    for name, member in spec.members.items():
        rows.update(_write(member, getattr(obj, name), obj))
    return rows


def options_from_job_star(cls: type, values: Mapping[str, str]) -> Any:
    """``cls`` (a job's ``Options``) from RELION job.star values, by its fields' metadata.

    Plain settings are read first, so a :class:`Variants` field can follow its key.
    """
    kwargs: dict[str, Any] = {}
    fields = dataclasses.fields(cls)
    for f in fields:
        spec = spec_of(f)
        if isinstance(spec, Setting):
            kwargs[f.name] = _read(spec, values, field_default(f))
    for f in fields:
        spec = spec_of(f)
        if isinstance(spec, Group):
            kwargs[f.name] = _read_group(spec, values)
        elif isinstance(spec, Variants):
            key_spec = spec_of(next(k for k in fields if k.name == spec.key))
            kwargs[f.name] = _read_group(spec.pick(kwargs[spec.key], key_spec.star), values)
    return cls(**kwargs)


def job_star_rows(options: Any) -> dict[str, str]:
    """The RELION job.star rows of ``options`` (no ``vitrify_*`` rows), in field order."""
    rows: dict[str, str] = {}
    for f in dataclasses.fields(options):
        spec, value = spec_of(f), getattr(options, f.name)
        if isinstance(spec, Setting):
            rows.update(_write(spec, value, options))
        elif isinstance(spec, Group):
            rows.update(_write_group(spec, value))
        else:
            rows.update(_write_group(spec.pick(getattr(options, spec.key)), value))
    return rows


def job_star_from_options(options: Any, constants: Mapping[str, str] | None = None) -> dict[str, str]:
    """RELION job.star values of ``options``: ``constants`` (fixed rows such as ``do_raw``), the
    fields' rows, and ``vitrify_*`` rows for whatever RELION's names do not bring back."""
    values = {**(constants or {}), **job_star_rows(options)}
    return with_extras(options, values, lambda v: options_from_job_star(type(options), v))


# ---------------------------------------------------------------- command line


@dataclass(frozen=True)
class CliOption:
    """One command-line parameter derived from a setting.

    ``name`` is the Python parameter name (the field path with ``__`` for ``.``), ``flag``
    typer's declaration, ``default`` the CLI default (None with ``required`` text: no
    default shown), ``type`` the CLI value's type, ``help`` the text shown (unit and
    requirement included).
    """

    name: str
    path: str
    flag: str
    default: Any
    type: Any
    help: str
    required: bool


def _members(cls: type, variant: str | None) -> list[tuple[str, Setting, Any]]:
    """(path, setting, field default) of every setting of ``cls`` and its groups' members."""
    out: list[tuple[str, Setting, Any]] = []
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        if isinstance(spec, Variants):
            if variant is None:
                continue
            spec = spec.pick(variant)
        if isinstance(spec, Group):
            out += [(f"{f.name}.{name}", m, m.default) for name, m in spec.members.items()]
        else:
            out.append((f.name, spec, field_default(f)))
    return out


def _help(spec: Setting) -> str:
    text_ = spec.help
    if spec.unit and spec.unit not in text_:
        text_ = f"{text_.rstrip('.')} ({spec.unit})."
    if isinstance(spec.required, str):
        text_ += f" Required {spec.required}."
    return text_


def cli_options(cls: type, variant: str | None = None) -> list[CliOption]:
    """The CLI parameters of ``cls``'s settings (``variant``: the :class:`Variants` choice)."""
    out = []
    for path, spec, default in _members(cls, variant):
        if not spec.flag:
            continue
        cli_default = spec.cli.from_field(default) if spec.cli else default
        kind = spec.cli_type or type(cli_default)
        if isinstance(spec.required, str):
            cli_default = None
        out.append(CliOption(path.replace(".", "__"), path, spec.flag, cli_default, kind, _help(spec),
                             spec.required is True))
    return out


def options_from_cli(cls: type, given: Mapping[str, Any], variant: str | None = None, **fixed: Any) -> Any:
    """``cls`` from CLI values ``given`` (by :class:`CliOption` name) and ``fixed`` fields.

    A value left at None (an option required only sometimes) keeps the field's default; an
    optional group is built when one of its members differs from its default.
    """
    by_path: dict[str, Any] = {}
    members = _members(cls, variant)
    for path, spec, default in members:
        if spec.flag:
            raw = given[path.replace(".", "__")]
            by_path[path] = default if raw is None and isinstance(spec.required, str) else \
                (spec.cli.to_field(raw) if spec.cli else raw)
    for path, spec, _ in members:
        if not spec.flag and spec.cli_from:
            by_path[path] = by_path[spec.cli_from]
    kwargs: dict[str, Any] = dict(fixed)
    for f in dataclasses.fields(cls):
        spec = spec_of(f)
        if isinstance(spec, Setting):
            if f.name in by_path:
                kwargs[f.name] = by_path[f.name]
            continue
        grp = spec.pick(kwargs[spec.key]) if isinstance(spec, Variants) else spec
        values = {name: by_path[f"{f.name}.{name}"] for name in grp.members if f"{f.name}.{name}" in by_path}
        if grp.optional and all(values[k] == grp.members[k].default for k in values):
            continue
        kwargs[f.name] = grp.build(values)
    return cls(**kwargs)

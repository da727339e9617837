"""Typer commands whose options are a job's ``Options`` fields (:mod:`vitrify.jobs.fields`).

:func:`add_job_command` registers a command whose parameters are made from the settings'
metadata (flag, default, help, required) plus the command's own parameters (``--o``); the
command body receives the ``Options`` built from what was given. Nothing imports torch
here: the ``Options`` classes are torch-free and groups are built only when a command runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Optional

import typer

from vitrify.jobs.fields import cli_options, options_from_cli


def option_parameters(cls: type, variant: str | None = None) -> list[inspect.Parameter]:
    """Keyword parameters (``typer.Option`` defaults) for every CLI setting of ``cls``.

    A required option has no default (typer marks it required); an option required only
    sometimes (``Setting.required`` text) defaults to None, so no misleading default is shown.
    """
    params = []
    for opt in cli_options(cls, variant):
        default = ... if opt.required else opt.default
        annotation = Optional[opt.type] if default is None else opt.type  # noqa: UP045 (typer needs it)
        info = typer.Option(default, opt.flag, help=opt.help, show_default=default is not None)
        params.append(inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, default=info,
                                        annotation=annotation))
    return params


def add_job_command(app: typer.Typer, name: str, cls: type, body: Callable[..., None], *,
                    own: Sequence[inspect.Parameter] = (), own_at: int | None = 1, variant: str | None = None,
                    fixed: dict[str, Any] | None = None, help: str | None = None) -> None:
    """Register command ``name``: ``cls``'s settings plus ``own`` parameters (inserted at ``own_at``; None: last).

    When run, ``body(options, **own_values)`` gets the ``Options`` built from the settings given
    (with ``fixed`` fields, e.g. the simulation kind of ``vitrify simulate particles``).
    """
    settings = option_parameters(cls, variant)
    own_names = [p.name for p in own]
    at = len(settings) if own_at is None else own_at
    params = settings[:at] + list(own) + settings[at:]

    def command(**given: Any) -> None:
        own_values = {key: given.pop(key) for key in own_names}
        body(options_from_cli(cls, given, variant, **(fixed or {})), **own_values)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = name.replace("-", "_")
    command.__doc__ = help or body.__doc__
    app.command(name, help=help or body.__doc__)(command)


def output_option(flag: str = "--o", help: str = "Output job directory.") -> inspect.Parameter:
    """The required output-directory parameter of a job command."""
    from pathlib import Path

    return inspect.Parameter("output_dir", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                             default=typer.Option(..., flag, help=help))

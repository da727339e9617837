"""Job aliases: RELION's ``JobType/alias`` symlinks pointing at ``JobType/jobNNN/``."""

from __future__ import annotations

import os
import re
from pathlib import Path

from vitrify.io.errors import InputError
from vitrify.pipeline._pipeline_star import PipelineState

_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,79}$")


def check_alias(root: Path, state: PipelineState, directory: str, alias: str | None,
                own_name: str | None = None) -> str | None:
    """``Dir/alias/`` for a valid, unused alias (None for no alias); InputError otherwise."""
    if alias is None or not str(alias).strip():
        return None
    alias = str(alias).strip().strip("/")
    if not _ALIAS.match(alias) or alias.startswith("job"):
        raise InputError(f"bad alias {alias!r}", field="alias",
                         expected="letters, digits, '_', '.', '+', '-' (not starting with 'job')")
    full = f"{directory}/{alias}/"
    taken = any(p.alias == full and p.name != own_name for p in state.processes.values())
    link = root / directory / alias
    if taken or (link.exists() and not link.is_symlink()):
        raise InputError(f"alias {alias!r} is already used in {directory}/", field="alias",
                         expected="a new alias")
    return full


def make_link(root: Path, job_name: str, alias: str) -> None:
    """Create the symlink ``root/alias`` → ``../job_name`` (replacing an old link of that name)."""
    link = root / alias.rstrip("/")
    if link.is_symlink():
        link.unlink()
    os.symlink(f"../{job_name}", link)


def remove_link(root: Path, alias: str | None) -> None:
    """Remove an alias symlink if present."""
    if alias:
        link = root / alias.rstrip("/")
        if link.is_symlink():
            link.unlink()

"""The ``>>>`` examples in vitrify's docstrings run as written."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vitrify"
WITH_EXAMPLES = sorted(
    ".".join(("vitrify",) + p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py") if ">>> " in p.read_text(encoding="utf-8")
)


def test_examples_are_found():
    assert {"vitrify.io.star", "vitrify.jobs.status", "vitrify.pipeline.project"} <= set(WITH_EXAMPLES)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_run(name, capsys):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = capsys.readouterr().out
    assert result.attempted > 0, f"{name}: no example collected"
    assert result.failed == 0, report

"""The tree shows the architecture: imports point down the layers only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vitrify"
RANK = {"io": 0, "core": 0, "sim": 1, "ml": 1, "ranker": 1, "preprocess": 1,
        "jobs": 2, "pipeline": 3, "cli": 4, "web": 4}


def _imported_layers(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    layers = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "vitrify" and len(parts) > 1 and parts[1] in RANK:
                layers.add(parts[1])
    return layers


def _violations() -> list[str]:
    bad = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).parts
        if len(rel) < 2 or rel[0] not in RANK:
            continue
        here = rel[0]
        for there in _imported_layers(path) - {here}:
            allowed = RANK[there] < RANK[here]
            if here in ("io", "core") and there in ("io", "core"):
                # core may use io.errors only (checked below); io never imports core
                allowed = here == "core" and "vitrify.io.errors" in path.read_text()
            if not allowed:
                bad.append(f"{path.relative_to(PACKAGE)} imports vitrify.{there}")
    return bad


def test_imports_point_down_the_layers():
    assert _violations() == []


def test_core_imports_only_errors_from_io():
    for path in (PACKAGE / "core").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines():
            if line.lstrip().startswith(("from vitrify.io", "import vitrify.io")):
                assert "vitrify.io.errors" in line, f"{path.name}: {line.strip()}"


@pytest.mark.parametrize("module", ["vitrify", "vitrify.io", "vitrify.pipeline", "vitrify.cli.main"])
def test_light_modules_do_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_modules_are_small():
    long = [f"{p.relative_to(PACKAGE)}: {n}" for p in PACKAGE.rglob("*.py")
            if (n := p.read_text(encoding="utf-8").count("\n")) > 600]
    assert long == []

"""The tree shows the architecture: imports point down the layers only, private modules stay in
their package, no import cycles, and the light modules load without torch.

The import rules are read from the code (every import statement, function bodies included, see
tests/_import_graph.py); each checker is shown to catch a violation on a small tree under
``tmp_path``. ``lint-imports`` (pyproject's ``[tool.importlinter]``) checks the same contracts.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _import_graph import cycles, import_graph, layer_violations, private_import_violations

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "vitrify"



@pytest.fixture(scope="module")
def vitrify_imports():
    imports = import_graph(SRC, "vitrify")
    assert len(imports) > 500, "the import graph of vitrify was not read"
    return imports


def _tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: source}`` under ``root`` (``__init__.py`` files added) and return it."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            if str(parent) != ".":
                (root / parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


# ---------------------------------------------------------------- layers
def test_imports_point_down_the_layers(vitrify_imports):
    assert layer_violations(vitrify_imports) == []


def test_core_never_imports_io_and_io_never_imports_core(vitrify_imports):
    def top(name: str) -> str:
        return (name.split(".") + [""])[1]

    across = [(i.importer, i.imported) for i in vitrify_imports if {top(i.importer), top(i.imported)} == {"io", "core"}]
    assert across == []
    assert any(i.importer.startswith("vitrify.core.") for i in vitrify_imports), "core's imports were not read"


def test_layer_checker_catches_upward_sideways_and_function_level_imports(tmp_path):
    src = _tree(tmp_path, {
        "vitrify/core/masks.py": """
            import numpy

            def soft_mask():
                from vitrify.io.errors import InputError  # core -> io, inside a function
                return InputError
            """,
        "vitrify/io/errors.py": "from vitrify.core import masks\n",  # io -> core
        "vitrify/io/star.py": "from . import errors\n",  # relative, same package: fine
        "vitrify/sim/maps.py": "from vitrify.ml.model import Model\n",  # L1 sibling
        "vitrify/ml/model.py": "import vitrify.jobs.base\nModel = 1\n",  # upward
        "vitrify/jobs/base.py": "from vitrify.core.masks import soft_mask\n",  # downward: fine
        "vitrify/io/mrc.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vitrify.jobs import base\n",
    })
    assert layer_violations(import_graph(src, "vitrify")) == [
        "vitrify.core.masks (line 5) imports vitrify.io.errors",
        "vitrify.io.errors (line 1) imports vitrify.core.masks",
        "vitrify.ml.model (line 1) imports vitrify.jobs.base",
        "vitrify.sim.maps (line 1) imports vitrify.ml.model",
    ]


# ---------------------------------------------------------------- private modules
def test_no_private_module_is_imported_from_another_package(vitrify_imports):
    assert private_import_violations(vitrify_imports) == []


def test_private_import_checker(tmp_path):
    src = _tree(tmp_path, {
        "vitrify/_progress.py": "",
        "vitrify/io/_eer.py": "",
        "vitrify/io/movies.py": "from vitrify.io._eer import read_eer\nfrom vitrify import _progress\n",
        "vitrify/jobs/motioncorr.py": """
            def run():
                from vitrify.io._eer import read_eer
            """,
        "vitrify/pipeline/pipeliner.py": "from vitrify.io import _eer\n",
        "vitrify/pipeline/schemes/runner.py": "from vitrify.pipeline import _lock\n",
        "vitrify/pipeline/_lock.py": "",
    })
    assert private_import_violations(import_graph(src, "vitrify")) == [
        "vitrify.jobs.motioncorr (line 3) imports private vitrify.io._eer",
        "vitrify.pipeline.pipeliner (line 1) imports private vitrify.io._eer",
    ]


# ---------------------------------------------------------------- cycles
def test_no_import_cycles_even_through_function_level_imports(vitrify_imports):
    assert cycles(vitrify_imports) == []


def test_cycle_checker_sees_function_level_imports(tmp_path):
    src = _tree(tmp_path, {
        "vitrify/__init__.py": "",
        "vitrify/io/__init__.py": "from vitrify.io.star import read_star\n",  # package -> own module: no cycle
        "vitrify/io/star.py": "from vitrify.io._optics import split\nfrom vitrify.io import errors\n",
        "vitrify/io/_optics.py": """
            def read():
                from vitrify.io.star import read_star
            """,
        "vitrify/io/errors.py": "",
        "vitrify/pipeline/operators.py": "from vitrify.pipeline.star import column\n",
        "vitrify/pipeline/star.py": "def read():\n    from vitrify.pipeline import validate\n",
        "vitrify/pipeline/validate.py": "def check():\n    from .operators import SIGNATURES\n",
    })
    assert cycles(import_graph(src, "vitrify")) == [
        ["vitrify.io._optics", "vitrify.io.star"],
        ["vitrify.pipeline.operators", "vitrify.pipeline.star", "vitrify.pipeline.validate"],
    ]


# ---------------------------------------------------------------- one place for job statuses
_STATUS_WORDS = {"Scheduled", "Running", "Succeeded", "Failed", "Aborted", "RELION_JOB_EXIT_SUCCESS",
                 "RELION_JOB_EXIT_FAILURE", "RELION_JOB_EXIT_ABORTED", "RELION_JOB_ABORT_NOW"}


def status_literals(package: Path) -> list[str]:
    """Code strings (docstrings left out) spelling a job status or marker name, as ``file:line``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        found += [f"{path.relative_to(package)}:{node.lineno}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and node.value in _STATUS_WORDS and id(node) not in docstrings]
    return sorted(found, key=lambda f: (f.rpartition(":")[0], int(f.rpartition(":")[2])))


def test_job_statuses_and_marker_names_are_spelled_in_one_place():
    found = status_literals(PACKAGE)
    assert [f for f in found if not f.startswith(f"jobs{os.sep}status.py:")] == []
    assert len(found) == len(_STATUS_WORDS)  # each spelled once, in vitrify.jobs.status


def test_status_literal_check_finds_a_bare_status(tmp_path):
    _tree(tmp_path, {"pkg/runner.py": '''"""Says "Succeeded" in a docstring only."""
if status == "Failed":
    marker = "RELION_JOB_EXIT_FAILURE"
'''})
    assert status_literals(tmp_path / "pkg") == ["runner.py:2", "runner.py:3"]


# ---------------------------------------------------------------- torch
_IMPORT_ALL = """
import importlib, json, pkgutil, sys, traceback
sys.modules["torch"] = None          # `import torch` now raises ImportError
failed = {}
names = list(sys.argv[2:])
for package in sys.argv[1].split(","):
    module = importlib.import_module(package)
    names += [package] + [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")]
for name in names:
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=-1).strip().splitlines()[-1]
print(json.dumps({"imported": names, "failed": failed}))
"""


def modules_failing_without_torch(packages: list[str], modules: list[str] = (), path: Path = SRC) -> dict:
    """Import every module of ``packages`` and ``modules`` in a fresh interpreter where torch is blocked.

    Returns ``{"imported": [names], "failed": {name: last traceback line}}``.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _IMPORT_ALL, ",".join(packages), *modules],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_pipeline_io_and_cli_modules_import_without_torch():
    """Every module of vitrify.io, vitrify.pipeline and vitrify.cli loads with torch blocked, and
    ``cli.main.build_app`` registers every command: torch is only imported in command bodies."""
    result = modules_failing_without_torch(["vitrify.io", "vitrify.pipeline", "vitrify.cli"],
                                           ["vitrify", "vitrify.errors", "vitrify.jobs.registry"])
    assert result["failed"] == {}
    imported = set(result["imported"])
    assert {"vitrify.pipeline.pipeliner", "vitrify.pipeline.schemes.runner", "vitrify.cli.main",
            "vitrify.cli.class2d", "vitrify.io.star"} <= imported
    code = ("import sys; sys.modules['torch'] = None\nfrom vitrify.cli.main import build_app\n"
            "app = build_app(); print(len(app.registered_commands) + len(app.registered_groups))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 10


def test_torch_blocking_check_reports_a_module_importing_torch(tmp_path):
    _tree(tmp_path, {"lightpkg/fine.py": "import json\n",
                     "lightpkg/sub/heavy.py": "import torch\n",
                     "lightpkg/lazy.py": "def f():\n    import torch\n"})
    result = modules_failing_without_torch(["lightpkg"], path=tmp_path)
    assert set(result["imported"]) == {"lightpkg", "lightpkg.fine", "lightpkg.lazy", "lightpkg.sub",
                                       "lightpkg.sub.heavy"}
    assert list(result["failed"]) == ["lightpkg.sub.heavy"]
    assert "import of torch halted" in result["failed"]["lightpkg.sub.heavy"]


# ---------------------------------------------------------------- import-linter, module size
def test_import_linter_contracts_are_kept():
    """``lint-imports`` with pyproject's contracts (also run by ``make test``)."""
    out = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                          "lint_imports_command(['--no-cache'])"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_modules_are_small():
    long = [f"{p.relative_to(PACKAGE)}: {n}" for p in PACKAGE.rglob("*.py")
            if (n := p.read_text(encoding="utf-8").count("\n")) > 600]
    assert long == []

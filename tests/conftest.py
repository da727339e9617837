"""Shared test fixtures: devices, seeds, real structures from an installed package, shared data folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VITRIFY_QUIET", "1")


def _devices() -> list[str]:
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


DEVICES = _devices()


@pytest.fixture(params=DEVICES)
def device(request):
    """Run the test once per available device: ``"cpu"`` always, ``"cuda"`` when present."""
    import torch

    return torch.device(request.param)


@pytest.fixture
def rng():
    """A seeded numpy generator."""
    import numpy as np

    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def adk_pdb():
    """Path of a real structure (adenylate kinase) shipped in mdanalysistests."""
    from vitrify.io.structures import example_structure

    return example_structure("adk")


# ---- the shared data folder (RELION-4 scheme files, EPU/SerialEM metadata) --------------------------
# It lives beside the repository, never inside it: ``<repo>/../shared/fixtures/<name>``. A git worktree
# one level deeper (``<root>/wt/<branch>``) finds ``<root>/shared`` too. ``VITRIFY_SHARED=/path/to/shared``
# overrides both. Locally a missing folder skips the tests that need it (the reason says where we
# looked); under CI (``CI=true``) it fails them, so a broken checkout never passes by skipping.

REPOSITORY = Path(__file__).resolve().parents[1]


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _shared_candidates() -> list[Path]:
    """Folders that may hold the shared data, in the order they are tried."""
    if os.environ.get("VITRIFY_SHARED"):
        return [Path(os.environ["VITRIFY_SHARED"]).expanduser()]
    return [REPOSITORY.parent / "shared", REPOSITORY.parent.parent / "shared"]


def _missing_reason(name: str) -> str:
    tried = ", ".join(str(c / "fixtures" / name) for c in _shared_candidates())
    return (f"shared fixtures '{name}' not found (looked in {tried}); put shared/ beside the repository "
            "or set VITRIFY_SHARED to its path")


def shared_fixtures(name: str) -> Path:
    """The folder ``fixtures/<name>`` of the shared data, e.g. ``shared_fixtures("relion4_schemes")``.

    Returns the first existing candidate (or the first candidate when none exists, so that module-level
    constants can still be built; mark such tests with :func:`needs_shared`). Under CI a missing folder
    fails the calling test or module at once.
    """
    candidates = [c / "fixtures" / name for c in _shared_candidates()]
    for folder in candidates:
        if folder.is_dir():
            return folder
    if _under_ci():
        pytest.fail(_missing_reason(name), pytrace=False)
    return candidates[0]


def needs_shared(name: str) -> pytest.MarkDecorator:
    """A mark skipping a test (or, as ``pytestmark``, a module) when ``fixtures/<name>`` is missing.

    Under CI the folder's absence fails the run instead (see :func:`shared_fixtures`).
    """
    return pytest.mark.skipif(not shared_fixtures(name).is_dir(), reason=_missing_reason(name))

"""Shared test fixtures: devices, seeds and real structures from an installed package."""

from __future__ import annotations

import os

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

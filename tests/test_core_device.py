"""Device resolution and host allocator tuning."""

import sys

import pytest
import torch

from vitrify.core.device import resolve_device, tune_host_allocator
from vitrify.errors import InputError


def test_resolve_cpu_and_unknown():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(InputError):
        resolve_device("tpu")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tune_host_allocator_applies_and_keeps_results_exact():
    a = torch.randn(3000, 1000, generator=torch.Generator().manual_seed(0))
    before = a @ a.t()
    assert tune_host_allocator() is True
    for _ in range(3):  # large temporaries are recycled from the heap now
        after = a @ a.t()
    assert torch.equal(before, after)

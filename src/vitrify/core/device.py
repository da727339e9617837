"""Resolve the compute device once, at a job's entry point, and tune the host allocator."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

from vitrify.errors import InputError

_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a :class:`torch.device`.

    ``auto`` picks CUDA when available, else the CPU. Asking for CUDA on a machine
    without it is a user error.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("CUDA was requested but no CUDA device is available", field="--device",
                             expected="cpu or auto")
        return torch.device(name)
    raise InputError(f"unknown device {name!r}", field="--device", expected=" | ".join(_CHOICES))


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_MMAP_THRESHOLD_MAX = 32 * 2 ** 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit


def tune_host_allocator(keep_bytes: int = 2 ** 30) -> bool:
    """Keep freed CPU tensor memory in the process instead of unmapping it (glibc only).

    An E-step block allocates and frees tens of MB of temporaries; with glibc's defaults
    each allocation above the mmap threshold is a fresh mapping whose first touch page-faults
    every page (zero-filled by the kernel), ~10% of a 2D classification on CPU.
    Raising the mmap threshold to its maximum (32 MB) and keeping up to ``keep_bytes`` of free
    heap recycles those pages. Returns whether the settings were applied (False off glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
    return mallopt(_M_TRIM_THRESHOLD, int(keep_bytes)) == 1 and ok

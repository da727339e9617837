"""Resolve the compute device once, at a job's entry point."""

from __future__ import annotations

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

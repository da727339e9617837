"""Checks shared by the likelihood-engine jobs' Options (class2d, initialmodel)."""

from __future__ import annotations

from typing import Any

from vitrify.io.errors import InputError


def check_engine_options(options: Any) -> None:
    """Offsets, T, seed, iterations, oversampling and write interval of an engine job's Options.

    ``options`` has ``offset_range_px``, ``offset_step_px``, ``tau2_fudge``, ``algorithm``, ``seed``,
    ``nr_iter``, ``oversampling`` and ``grad_write_iter``; the first bad one raises
    :class:`~vitrify.io.errors.InputError` naming the flag and what was expected.
    """
    checks = (
        (options.offset_range_px < 0 or options.offset_step_px <= 0, "--offset-range/--offset-step",
         "negative range or non-positive step", "range >= 0, step > 0"),
        (options.tau2_fudge <= 0, "--tau2-fudge", f"T = {options.tau2_fudge}", "T > 0"),
        (options.algorithm == "vdam" and options.seed == 0, "--seed", "seed 0 is not allowed with VDAM (RELION)",
         "a non-zero seed"),
        (options.nr_iter == 0 or options.nr_iter < -1, "--iter", f"{options.nr_iter} iterations",
         "a positive number"),
        (options.oversampling not in (0, 1), "--oversampling", f"oversampling {options.oversampling}",
         "0 (coarse pass only) or 1"),
        (options.grad_write_iter < 1, "--grad-write-iter", f"{options.grad_write_iter}", "at least 1"),
    )
    for failed, field, message, expected in checks:
        if failed:
            raise InputError(message, field=field, expected=expected)

"""Checks shared by the likelihood-engine jobs' Options (class2d, initialmodel, class3d, refine3d)."""

from __future__ import annotations

import re
from typing import Any

from vitrify.io.errors import InputError

_SYMMETRY = re.compile(r"^(C|D)(\d+)$|^(T|O)$|^I([1-4]?)$")
SYMMETRY_GROUPS = "C1, Cn, Dn (n >= 1), T, O, I, I1, I2, I3 or I4"


def is_symmetry_name(name: str) -> bool:
    """Whether ``name`` is a point group RELION knows (C1, Cn, Dn, T, O, I, I1..I4).

    >>> is_symmetry_name("d2"), is_symmetry_name("C0")
    (True, False)
    """
    m = _SYMMETRY.match(str(name).strip().upper())
    return m is not None and not (m.group(2) is not None and int(m.group(2)) < 1)


def check_reference_options(options: Any, reference_expected: str) -> None:
    """The inputs of a job that starts from a reference map (class3d, refine3d).

    ``options`` has ``continue_from``, ``input_star``, ``reference``, ``particle_diameter_angst``,
    ``symmetry`` and ``ini_high_angst``; without ``--continue`` the particles, the reference
    (``reference_expected`` says what it should be) and the diameter are required. The first bad one
    raises :class:`~vitrify.io.errors.InputError` naming the flag and what was expected.
    """
    fresh = not options.continue_from
    checks = (
        (fresh and not options.input_star, "--i", "no input particles", "a particles.star file"),
        (fresh and not options.reference, "--ref", "no reference map", reference_expected),
        (fresh and not options.particle_diameter_angst > 0, "--particle-diameter", "particle diameter must be given",
         "a diameter in Å > 0"),
        (not is_symmetry_name(options.symmetry), "--sym", f"unknown point group {options.symmetry!r}",
         SYMMETRY_GROUPS),
        (not options.ini_high_angst > 0, "--ini-high", f"low-pass {options.ini_high_angst} Å", "a resolution in Å > 0"),
    )
    for failed, field, message, expected in checks:
        if failed:
            raise InputError(message, field=field, expected=expected)


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

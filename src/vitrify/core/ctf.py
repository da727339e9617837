"""RELION's CTF (formats.md §9), batched over particles, in full or half-plane layout.

With spatial frequencies ``(X, Y)`` in 1/Å (``X = kx / (box * pixel)``), ``u² = X² + Y²`` and
``θ = atan2(Y, X)``::

    λ  = 12.2643247 / sqrt(V (1 + 0.978466e-6 V))            V in volts, λ in Å
    Δf = (U + V)/2 + (U - V)/2 · cos(2 (θ - α))               = U cos²(θ-α) + V sin²(θ-α)
    γ  = -π λ Δf u² + (π/2) Cs λ³ u⁴ - φ - atan(Q0 / sqrt(1 - Q0²))
    CTF = -sin(γ) · exp(-B u² / 4) · scale

``CTF(0) = +Q0`` and the first lobe is positive for underfocus (``Δf > 0``): the convention for
contrast-inverted ("white protein") particles. Values with ``|CTF| < 1e-8`` are set to ``±1e-8``.

Options: ``intact_first_peak`` (CTF = 1 while ``|γ| < π/2``, i.e. up to the first peak),
``flip_phases`` (sign only), ``absolute`` (``|CTF|``); the envelope and scale apply after them.
``X`` runs along image columns (x), ``Y`` along rows (y); ``α = rlnDefocusAngle`` is measured from x
towards y.

:class:`CtfParams` is the one description of a CTF in vitrify (RELION's optics-group and per-image
CTF labels, :data:`RELION_LABELS`); every function here takes one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vitrify.core.fourier import frequency_grid_2d
from vitrify.errors import InputError

__all__ = ["RELION_LABELS", "CtfParams", "ctf_1d", "ctf_2d", "ctf_from_frequencies", "electron_wavelength_angst"]

#: a CTF parameter: one value, or a tensor ``(...)`` of one value per image (broadcast together)
Value = float | torch.Tensor

#: :class:`CtfParams` field -> RELION STAR label
RELION_LABELS: dict[str, str] = {
    "voltage_kv": "rlnVoltage",
    "cs_mm": "rlnSphericalAberration",
    "amplitude_contrast": "rlnAmplitudeContrast",
    "defocus_u_angst": "rlnDefocusU",
    "defocus_v_angst": "rlnDefocusV",
    "defocus_angle_deg": "rlnDefocusAngle",
    "phase_shift_deg": "rlnPhaseShift",
    "bfactor": "rlnCtfBfactor",
    "scale": "rlnCtfScalefactor",
}


def electron_wavelength_angst(voltage_kv: Value) -> Value:
    """Relativistic electron wavelength (Å) for an accelerating voltage in kV (float or tensor).

    >>> round(electron_wavelength_angst(300.0), 6)
    0.019688
    """
    v = voltage_kv * 1e3
    if isinstance(v, torch.Tensor):
        return 12.2643247 / torch.sqrt(v * (1 + 0.978466e-6 * v))
    return 12.2643247 / math.sqrt(v * (1 + 0.978466e-6 * v))


def _any(condition: Value) -> bool:
    return bool(torch.as_tensor(condition).any())


@dataclass(frozen=True, kw_only=True)
class CtfParams:
    """One CTF, or a batch of them: the microscope's optics and each image's defocus (RELION units).

    Every field but ``pixel_size_angst`` is a float or a tensor ``(...)`` (one value per image,
    e.g. ``(b,)`` for a batch of ``b`` particles); the fields broadcast together and the CTF
    functions return ``(..., *grid)``. Tensor fields fix the device and dtype of the result.

    Attributes
    ----------
    pixel_size_angst
        Pixel size (Å) of the images the CTF is evaluated for (:func:`ctf_2d`); unused by the
        functions that take frequencies in 1/Å.
    voltage_kv, cs_mm, amplitude_contrast
        rlnVoltage (kV), rlnSphericalAberration (mm), rlnAmplitudeContrast (``Q0`` in [0, 1]).
    defocus_u_angst, defocus_v_angst, defocus_angle_deg
        rlnDefocusU / V (Å, positive = underfocus) and rlnDefocusAngle (deg, from x towards y).
    phase_shift_deg, bfactor, scale
        rlnPhaseShift (deg), rlnCtfBfactor (Å², envelope ``exp(-B u² / 4)``), rlnCtfScalefactor.

    >>> CtfParams(pixel_size_angst=1.0, defocus_u_angst=15000.0, defocus_v_angst=14000.0).voltage_kv
    300.0
    """

    pixel_size_angst: float
    voltage_kv: Value = 300.0
    cs_mm: Value = 2.7
    amplitude_contrast: Value = 0.1
    defocus_u_angst: Value = 0.0
    defocus_v_angst: Value = 0.0
    defocus_angle_deg: Value = 0.0
    phase_shift_deg: Value = 0.0
    bfactor: Value = 0.0
    scale: Value = 1.0

    def __post_init__(self) -> None:
        if _any(torch.as_tensor(self.pixel_size_angst) <= 0):
            raise InputError(f"pixel size {self.pixel_size_angst} Å", field="pixel size",
                             expected="a positive number of Å")
        if _any(torch.as_tensor(self.voltage_kv) <= 0):
            raise InputError("voltage is not positive", field="rlnVoltage", expected="kV > 0")
        q = torch.as_tensor(self.amplitude_contrast)
        if _any((q < 0) | (q > 1)):
            raise InputError("amplitude contrast out of range", field="rlnAmplitudeContrast",
                             expected="a value in [0, 1]")

    @classmethod
    def from_relion(cls, values: Mapping[str, Any], *, pixel_size_angst: float,
                    convert: Callable[[Any], Value] = float) -> CtfParams:
        """The CTF of a STAR row (or of a table's columns) by RELION label.

        ``values`` is anything with ``label in values`` and ``values[label]``: a pandas row
        (``convert=float``) or a table, with ``convert`` turning a column into a ``(b,)`` tensor.
        Labels absent from ``values`` keep the defaults of :class:`CtfParams`.
        """
        given = {name: convert(values[label]) for name, label in RELION_LABELS.items() if label in values}
        return cls(pixel_size_angst=pixel_size_angst, **given)


def _param(x, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(x, device=device, dtype=dtype)
    return t[..., None, None]


_SHORT_NAMES = {"du": "defocus_u_angst", "dv": "defocus_v_angst", "ang": "defocus_angle_deg", "kv": "voltage_kv",
                "cs": "cs_mm", "q": "amplitude_contrast", "ph": "phase_shift_deg", "b": "bfactor", "sc": "scale"}
_TENSOR_ORDER = tuple(_SHORT_NAMES.values())  # the first tensor among these fixes device and dtype


def _device_dtype(ctf: CtfParams, device, dtype):
    """The device and dtype of the first tensor field (else the given ones)."""
    for name in _TENSOR_ORDER:
        a = getattr(ctf, name)
        if isinstance(a, torch.Tensor):
            return (a.device if device is None else device,
                    a.dtype if a.is_floating_point() else dtype)
    return device, dtype


def ctf_from_frequencies(freq_y_inv_angst: torch.Tensor, freq_x_inv_angst: torch.Tensor, ctf: CtfParams, *,
                         intact_first_peak: bool = False, flip_phases: bool = False,
                         absolute: bool = False) -> torch.Tensor:
    """Evaluate the CTF at given frequencies.

    Parameters
    ----------
    freq_y_inv_angst, freq_x_inv_angst
        ``(*grid)`` spatial frequencies in 1/Å (any grid, e.g. ``(h, w)``).
    ctf
        The CTF; tensor fields ``(...)`` give one CTF per image (``pixel_size_angst`` is unused).

    Returns
    -------
    torch.Tensor
        ``(..., *grid)`` with grid dims 2D: ``(..., h, w)``.
    """
    dev, dt = freq_x_inv_angst.device, freq_x_inv_angst.dtype
    p = {k: _param(getattr(ctf, name), dev, dt) for k, name in _SHORT_NAMES.items()}
    lam = electron_wavelength_angst(p["kv"])
    u2 = freq_x_inv_angst ** 2 + freq_y_inv_angst ** 2
    theta = torch.atan2(freq_y_inv_angst, freq_x_inv_angst)
    defocus = 0.5 * (p["du"] + p["dv"]) + 0.5 * (p["du"] - p["dv"]) * torch.cos(
        2 * (theta - torch.deg2rad(p["ang"])))
    k3 = torch.atan(p["q"] / torch.sqrt(torch.clamp(1 - p["q"] ** 2, min=1e-12)))
    gamma = (-math.pi * lam * defocus * u2 + 0.5 * math.pi * (p["cs"] * 1e7) * lam ** 3 * u2 * u2
             - torch.deg2rad(p["ph"]) - k3)
    out = -torch.sin(gamma)
    out = torch.where(out.abs() < 1e-8, torch.where(out < 0, -1e-8, 1e-8), out)
    if intact_first_peak:
        out = torch.where(gamma.abs() < 0.5 * math.pi, torch.ones_like(out), out)
    if flip_phases:
        out = torch.sign(out)
    if absolute:
        out = out.abs()
    return out * torch.exp(-p["b"] * u2 / 4) * p["sc"]


def ctf_2d(box_px: int, ctf: CtfParams, *, rfft: bool = True, intact_first_peak: bool = False,
           flip_phases: bool = False, absolute: bool = False, device=None,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RELION CTF images of ``box_px`` pixels of ``ctf.pixel_size_angst``, in vitrify's Fourier layout.

    Parameters
    ----------
    box_px
        Image size.
    ctf
        The CTF; tensor fields ``(...)`` give one CTF image per entry.
    rfft
        Half plane ``(..., n, n//2+1)`` (layout of ``rfft2_centered``) if True, else the full plane
        ``(..., n, n)`` with DC at ``[0, 0]`` (layout of ``fft2_centered``).
    device, dtype
        Used when no tensor field of ``ctf`` fixes them.

    Returns
    -------
    torch.Tensor
        ``(..., n, n//2+1)`` or ``(..., n, n)`` real.
    """
    device, dtype = _device_dtype(ctf, device, dtype)
    ky, kx = frequency_grid_2d(box_px, rfft=rfft, device=device, dtype=dtype)
    inv = 1.0 / (box_px * ctf.pixel_size_angst)
    return ctf_from_frequencies(ky * inv, kx * inv, ctf, intact_first_peak=intact_first_peak,
                                flip_phases=flip_phases, absolute=absolute)


def ctf_1d(freq_inv_angst: torch.Tensor, ctf: CtfParams) -> torch.Tensor:
    """The CTF along the x axis (θ = 0, where Δf = U cos²α + V sin²α): ``(m,)`` -> ``(..., m)``."""
    fy = torch.zeros_like(freq_inv_angst)[None]
    return ctf_from_frequencies(fy, freq_inv_angst[None], ctf)[..., 0, :]

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
"""

from __future__ import annotations

import math

import torch

from vitrify.core.fourier import frequency_grid_2d
from vitrify.errors import InputError

__all__ = ["electron_wavelength_angst", "ctf_2d", "ctf_from_frequencies", "ctf_1d"]


def electron_wavelength_angst(voltage_kv):
    """Relativistic electron wavelength (Å) for an accelerating voltage in kV (float or tensor)."""
    v = voltage_kv * 1e3
    if isinstance(v, torch.Tensor):
        return 12.2643247 / torch.sqrt(v * (1 + 0.978466e-6 * v))
    return 12.2643247 / math.sqrt(v * (1 + 0.978466e-6 * v))


def _param(x, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(x, device=device, dtype=dtype)
    return t[..., None, None]


def _check(amplitude_contrast) -> None:
    q = torch.as_tensor(amplitude_contrast)
    if bool(((q < 0) | (q > 1)).any()):
        raise InputError("amplitude contrast out of range", field="rlnAmplitudeContrast",
                         expected="a value in [0, 1]")


def _first_device_dtype(args, device, dtype):
    for a in args:
        if isinstance(a, torch.Tensor):
            return (a.device if device is None else device,
                    a.dtype if a.is_floating_point() else dtype)
    return device, dtype


def ctf_from_frequencies(freq_y_inv_angst: torch.Tensor, freq_x_inv_angst: torch.Tensor, *,
                         defocus_u_angst, defocus_v_angst, defocus_angle_deg, voltage_kv, cs_mm,
                         amplitude_contrast, phase_shift_deg=0.0, bfactor=0.0, scale=1.0,
                         intact_first_peak: bool = False, flip_phases: bool = False,
                         absolute: bool = False) -> torch.Tensor:
    """Evaluate the CTF at given frequencies.

    Parameters
    ----------
    freq_y_inv_angst, freq_x_inv_angst
        ``(*grid)`` spatial frequencies in 1/Å (any grid, e.g. ``(h, w)``).
    defocus_u_angst, ... scale
        Floats or tensors of shape ``(...)`` (broadcast together): one value per particle.

    Returns
    -------
    torch.Tensor
        ``(..., *grid)`` with grid dims 2D: ``(..., h, w)``.
    """
    _check(amplitude_contrast)
    dev, dt = freq_x_inv_angst.device, freq_x_inv_angst.dtype
    p = {k: _param(v, dev, dt) for k, v in dict(
        du=defocus_u_angst, dv=defocus_v_angst, ang=defocus_angle_deg, kv=voltage_kv, cs=cs_mm,
        q=amplitude_contrast, ph=phase_shift_deg, b=bfactor, sc=scale).items()}
    lam = electron_wavelength_angst(p["kv"])
    u2 = freq_x_inv_angst ** 2 + freq_y_inv_angst ** 2
    theta = torch.atan2(freq_y_inv_angst, freq_x_inv_angst)
    defocus = 0.5 * (p["du"] + p["dv"]) + 0.5 * (p["du"] - p["dv"]) * torch.cos(
        2 * (theta - torch.deg2rad(p["ang"])))
    k3 = torch.atan(p["q"] / torch.sqrt(torch.clamp(1 - p["q"] ** 2, min=1e-12)))
    gamma = (-math.pi * lam * defocus * u2 + 0.5 * math.pi * (p["cs"] * 1e7) * lam ** 3 * u2 * u2
             - torch.deg2rad(p["ph"]) - k3)
    ctf = -torch.sin(gamma)
    ctf = torch.where(ctf.abs() < 1e-8, torch.where(ctf < 0, -1e-8, 1e-8), ctf)
    if intact_first_peak:
        ctf = torch.where(gamma.abs() < 0.5 * math.pi, torch.ones_like(ctf), ctf)
    if flip_phases:
        ctf = torch.sign(ctf)
    if absolute:
        ctf = ctf.abs()
    return ctf * torch.exp(-p["b"] * u2 / 4) * p["sc"]


def ctf_2d(box_px: int, pixel_size_angst: float, defocus_u_angst, defocus_v_angst, defocus_angle_deg,
           voltage_kv, cs_mm, amplitude_contrast, phase_shift_deg=0.0, bfactor=0.0, scale=1.0,
           rfft: bool = True, *, intact_first_peak: bool = False, flip_phases: bool = False,
           absolute: bool = False, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """RELION CTF images in vitrify's Fourier layout.

    Parameters
    ----------
    box_px, pixel_size_angst
        Image size and pixel size.
    defocus_u_angst, defocus_v_angst, defocus_angle_deg, voltage_kv, cs_mm, amplitude_contrast,
    phase_shift_deg, bfactor, scale
        RELION's rlnDefocusU/V/Angle, rlnVoltage, rlnSphericalAberration, rlnAmplitudeContrast,
        rlnPhaseShift, rlnCtfBfactor, rlnCtfScalefactor; floats or ``(...)`` tensors (broadcast).
    rfft
        Half plane ``(..., n, n//2+1)`` (layout of ``rfft2_centered``) if True, else the full plane
        ``(..., n, n)`` with DC at ``[0, 0]`` (layout of ``fft2_centered``).
    device, dtype
        Used when no tensor argument fixes them.

    Returns
    -------
    torch.Tensor
        ``(..., n, n//2+1)`` or ``(..., n, n)`` real.
    """
    args = (defocus_u_angst, defocus_v_angst, defocus_angle_deg, voltage_kv, cs_mm,
            amplitude_contrast, phase_shift_deg, bfactor, scale)
    device, dtype = _first_device_dtype(args, device, dtype)
    ky, kx = frequency_grid_2d(box_px, rfft=rfft, device=device, dtype=dtype)
    inv = 1.0 / (box_px * pixel_size_angst)
    return ctf_from_frequencies(
        ky * inv, kx * inv, defocus_u_angst=defocus_u_angst, defocus_v_angst=defocus_v_angst,
        defocus_angle_deg=defocus_angle_deg, voltage_kv=voltage_kv, cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast, phase_shift_deg=phase_shift_deg, bfactor=bfactor,
        scale=scale, intact_first_peak=intact_first_peak, flip_phases=flip_phases, absolute=absolute)


def ctf_1d(freq_inv_angst: torch.Tensor, defocus_angst, voltage_kv, cs_mm, amplitude_contrast,
           phase_shift_deg=0.0, bfactor=0.0) -> torch.Tensor:
    """Rotationally averaged-style 1D CTF along x: ``(m,)`` frequencies -> ``(..., m)``."""
    fy = torch.zeros_like(freq_inv_angst)[None]
    out = ctf_from_frequencies(fy, freq_inv_angst[None], defocus_u_angst=defocus_angst,
                               defocus_v_angst=defocus_angst, defocus_angle_deg=0.0,
                               voltage_kv=voltage_kv, cs_mm=cs_mm,
                               amplitude_contrast=amplitude_contrast,
                               phase_shift_deg=phase_shift_deg, bfactor=bfactor)
    return out[..., 0, :]

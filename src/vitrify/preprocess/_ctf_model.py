"""CTF phase at arbitrary sample points, for fitting (formula: formats.md section 9).

:func:`vitrify.core.ctf.ctf_2d` evaluates the CTF on a full image grid; a fit needs it
on other sample sets (a radial profile, the pixels of a resolution band) for many
candidate defoci at once, so this module evaluates the same formula at given
frequencies. A test checks that both agree.
"""

from __future__ import annotations

import math

import torch

from vitrify.core.ctf import CtfParams, electron_wavelength_angst


def ctf_phase(
    s2: torch.Tensor,
    cos2: torch.Tensor,
    sin2: torch.Tensor,
    defocus_mean_angst: torch.Tensor,
    astig_x_angst: torch.Tensor,
    astig_y_angst: torch.Tensor,
    optics: CtfParams,
    *,
    phase_shift_deg: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """The CTF phase γ at samples, for a batch of defocus models.

    The local defocus is ``mean + astig_x·cos 2θ + astig_y·sin 2θ``: with
    ``U = mean + d/2``, ``V = mean - d/2`` and angle ``α``, ``astig_x = d/2·cos 2α`` and
    ``astig_y = d/2·sin 2α``. This smooth parametrisation has no wrap-around in α.

    Parameters
    ----------
    s2, cos2, sin2
        ``(p,)`` squared spatial frequency (Å⁻²) and ``cos 2θ``, ``sin 2θ`` of each sample.
    defocus_mean_angst, astig_x_angst, astig_y_angst
        ``(b,)`` candidate models (broadcastable to each other).
    optics
        Voltage, Cs and amplitude contrast (floats; its defocus and phase shift are not used).
    phase_shift_deg
        Phase-plate shift (degrees), scalar or ``(b,)``.

    Returns
    -------
    torch.Tensor
        ``(b, p)`` phase γ in radians; the CTF is ``-sin γ``.
    """
    lam = electron_wavelength_angst(optics.voltage_kv)
    cs_angst = optics.cs_mm * 1e7
    q0 = optics.amplitude_contrast
    k3 = math.atan(q0 / math.sqrt(1.0 - q0 ** 2))
    mean = torch.as_tensor(defocus_mean_angst, dtype=s2.dtype, device=s2.device).reshape(-1, 1)
    ax = torch.as_tensor(astig_x_angst, dtype=s2.dtype, device=s2.device).reshape(-1, 1)
    ay = torch.as_tensor(astig_y_angst, dtype=s2.dtype, device=s2.device).reshape(-1, 1)
    phase = torch.as_tensor(phase_shift_deg, dtype=s2.dtype, device=s2.device).reshape(-1, 1)
    defocus = mean + ax * cos2 + ay * sin2
    return (-math.pi * lam * defocus * s2 + 0.5 * math.pi * cs_angst * lam ** 3 * s2 * s2
            - torch.deg2rad(phase) - k3)


def to_uv_angle(mean_angst: float, astig_x_angst: float, astig_y_angst: float) -> tuple[float, float, float]:
    """Convert (mean, astig_x, astig_y) to RELION's (DefocusU, DefocusV, DefocusAngle°), U ≥ V."""
    half = math.hypot(astig_x_angst, astig_y_angst)
    angle = 0.5 * math.degrees(math.atan2(astig_y_angst, astig_x_angst))
    return mean_angst + half, mean_angst - half, angle


def from_uv_angle(u_angst: float, v_angst: float, angle_deg: float) -> tuple[float, float, float]:
    """Inverse of :func:`to_uv_angle`."""
    half = 0.5 * (u_angst - v_angst)
    two = math.radians(2.0 * angle_deg)
    return 0.5 * (u_angst + v_angst), half * math.cos(two), half * math.sin(two)


def rfft_frequency_grid(box_px: int, pixel_size_angst: float, *, device=None,
                        dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Squared frequency and ``cos 2θ``, ``sin 2θ`` on torch's rfft2 grid.

    Returns three ``(box, box//2+1)`` tensors (DC at index 0, rows in fftfreq order).
    """
    fy = torch.fft.fftfreq(box_px, d=pixel_size_angst, device=device, dtype=torch.float64)
    fx = torch.fft.rfftfreq(box_px, d=pixel_size_angst, device=device, dtype=torch.float64)
    fy, fx = torch.meshgrid(fy, fx, indexing="ij")
    s2 = fx * fx + fy * fy
    safe = torch.where(s2 > 0, s2, torch.ones_like(s2))
    cos2 = torch.where(s2 > 0, (fx * fx - fy * fy) / safe, torch.ones_like(s2))
    sin2 = torch.where(s2 > 0, 2 * fx * fy / safe, torch.zeros_like(s2))
    return s2.to(dtype), cos2.to(dtype), sin2.to(dtype)

"""CTF: values and zeros where RELION's formula (formats.md §9) puts them."""

from __future__ import annotations

import math

import pytest
import torch

from vitrify.core.ctf import CtfParams, ctf_1d, ctf_2d, ctf_from_frequencies, electron_wavelength_angst
from vitrify.io.errors import InputError

KV, CS, Q0 = 300.0, 2.7, 0.1


def _ctf(pixel: float, u, v, angle, **more) -> CtfParams:
    return CtfParams(pixel_size_angst=pixel, voltage_kv=KV, cs_mm=CS, amplitude_contrast=Q0,
                     defocus_u_angst=u, defocus_v_angst=v, defocus_angle_deg=angle, **more)


def _zero_frequencies(defocus_angst: float, phase_deg: float, count: int) -> list[float]:
    """First CTF zeros (1/Å) solved by hand: γ(u) = -mπ, a quadratic in u²."""
    v = KV * 1e3
    lam = 12.2643247 / math.sqrt(v * (1 + 0.978466e-6 * v))
    a = 0.5 * math.pi * CS * 1e7 * lam ** 3
    b = -math.pi * lam * defocus_angst
    k3 = math.atan(Q0 / math.sqrt(1 - Q0 * Q0))
    out = []
    for m in range(1, count + 1):
        c = -math.radians(phase_deg) - k3 + m * math.pi
        u2 = (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)
        out.append(math.sqrt(u2))
    return out


def test_wavelength_300kv():
    assert abs(electron_wavelength_angst(300.0) - 0.019687) < 1e-5


@pytest.mark.parametrize("phase_deg", [0.0, 60.0])
def test_zeros_at_formula_positions(device, phase_deg):
    zeros = torch.tensor(_zero_frequencies(15000.0, phase_deg, 6), dtype=torch.float64, device=device)
    eps = 2e-5
    for shift, want in ((0.0, "zero"), (-eps, "before"), (eps, "after")):
        f = zeros + shift
        ctf = ctf_1d(f, _ctf(1.0, 15000.0, 15000.0, 0.0, phase_shift_deg=phase_deg))
        if want == "zero":
            assert ctf.abs().max() < 1e-6
        elif want == "before":
            before = ctf
        else:
            assert bool((torch.sign(before) != torch.sign(ctf)).all())


def test_value_at_origin_and_first_lobe_sign(device):
    c = ctf_2d(64, _ctf(1.0, 20000.0, 20000.0, 0.0), device=device)
    assert abs(float(c[0, 0]) - Q0) < 1e-6  # CTF(0) = +Q0
    # underfocus: first lobe positive (white-protein convention)
    first_zero = _zero_frequencies(20000.0, 0.0, 1)[0]
    j = int(first_zero * 64 * 1.0)
    assert bool((c[0, : j + 1] > 0).all()) and float(c[0, j + 1]) < 0
    assert float(c[0, : j + 1].max()) > 0.9
    vpp = ctf_2d(64, _ctf(1.0, 5000.0, 5000.0, 0.0, phase_shift_deg=90.0), device=device)
    k3 = math.asin(Q0)
    assert abs(float(vpp[0, 0]) - math.sin(math.pi / 2 + k3)) < 1e-6


@pytest.mark.parametrize("angle_deg,axis_defocus", [(0.0, (14000.0, 22000.0)), (90.0, (22000.0, 14000.0))])
def test_astigmatism_axes_and_layout(device, angle_deg, axis_defocus):
    """Along x (columns) Δf = U at α = 0; along y (rows) Δf = V: sign changes bracket the zeros."""
    n, px = 256, 1.0
    c = ctf_2d(n, _ctf(px, 14000.0, 22000.0, angle_deg), device=device).cpu()
    along_x = c[0, :]
    along_y = c[: n // 2 + 1, 0]
    for profile, defocus in ((along_x, axis_defocus[0]), (along_y, axis_defocus[1])):
        for z in _zero_frequencies(defocus, 0.0, 4):
            j = z * n * px
            lo, hi = math.floor(j), math.ceil(j)
            if hi <= n // 2 and lo > 0 and hi != lo:
                assert float(profile[lo]) * float(profile[hi]) < 0, (defocus, j)


def test_full_and_half_layouts_agree(device):
    half = ctf_2d(48, _ctf(1.3, 12000.0, 15000.0, 33.0), rfft=True, device=device)
    full = ctf_2d(48, _ctf(1.3, 12000.0, 15000.0, 33.0), rfft=False, device=device)
    assert half.shape == (48, 25) and full.shape == (48, 48)
    torch.testing.assert_close(full[:, :24], half[:, :24])  # column 24 is -Nyquist in the full plane
    # Friedel symmetry of the full plane: CTF(-k) = CTF(k)
    mirror = torch.remainder(-torch.arange(48, device=device), 48)
    flipped = full[mirror][:, mirror]
    inner = torch.arange(48, device=device) != 24  # the Nyquist row/column has no mirror
    torch.testing.assert_close(flipped[inner][:, inner], full[inner][:, inner], atol=1e-4, rtol=0)


def test_batched_parameters(device):
    du = torch.tensor([10000.0, 20000.0, 30000.0], device=device)
    c = ctf_2d(32, _ctf(1.5, du, du + 500.0, torch.tensor([0.0, 10.0, 20.0], device=device),
                        bfactor=torch.tensor([0.0, 50.0, 100.0], device=device)))
    assert c.shape == (3, 32, 17) and c.device.type == device.type
    single = ctf_2d(32, _ctf(1.5, 20000.0, 20500.0, 10.0, bfactor=50.0), device=device)
    torch.testing.assert_close(c[1], single)


def test_options_flip_abs_intact_envelope(device):
    args = (64, _ctf(1.0, 15000.0, 15000.0, 0.0))
    c = ctf_2d(*args, device=device)
    flip = ctf_2d(*args, flip_phases=True, device=device)
    assert set(torch.unique(flip).cpu().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(flip, torch.sign(c))
    torch.testing.assert_close(ctf_2d(*args, absolute=True, device=device), c.abs())
    intact = ctf_2d(*args, intact_first_peak=True, device=device)
    first_zero_px = _zero_frequencies(15000.0, 0.0, 1)[0] * 64
    assert float(intact[0, 0]) == 1.0 and float(intact[0, int(first_zero_px * 0.5)]) == 1.0
    assert torch.equal(intact[0, int(first_zero_px) + 2:], c[0, int(first_zero_px) + 2:])
    damped = ctf_2d(64, _ctf(1.0, 15000.0, 15000.0, 0.0, bfactor=100.0, scale=0.5), device=device)
    u2 = (torch.arange(33, device=device) / 64.0) ** 2
    torch.testing.assert_close(damped[0], c[0] * torch.exp(-100.0 * u2 / 4) * 0.5)


def test_clamps_tiny_values():
    f = torch.tensor([[_zero_frequencies(15000.0, 0.0, 1)[0]]], dtype=torch.float64)
    c = ctf_from_frequencies(torch.zeros_like(f), f, _ctf(1.0, 15000.0, 15000.0, 0.0))
    assert abs(float(c)) == pytest.approx(1e-8, rel=1e-3) or abs(float(c)) >= 1e-8


def test_bad_amplitude_contrast():
    with pytest.raises(InputError):
        ctf_2d(32, CtfParams(pixel_size_angst=1.0, defocus_u_angst=1e4, defocus_v_angst=1e4, voltage_kv=KV,
                             cs_mm=CS, amplitude_contrast=1.5))


@pytest.mark.parametrize("bad,field", [({"amplitude_contrast": -0.1}, "rlnAmplitudeContrast"),
                                       ({"voltage_kv": 0.0}, "rlnVoltage"),
                                       ({"pixel_size_angst": -1.0}, "pixel size")])
def test_ctf_params_refuse_unphysical_values(bad, field):
    with pytest.raises(InputError) as info:
        CtfParams(**{"pixel_size_angst": 1.0, **bad})
    assert info.value.field == field


def test_ctf_params_from_relion_row_and_table():
    import pandas as pd

    table = pd.DataFrame({"rlnDefocusU": [12000.0, 20000.0], "rlnDefocusV": [11000.0, 19000.0],
                          "rlnDefocusAngle": [10.0, 80.0], "rlnVoltage": [200.0, 200.0],
                          "rlnCtfBfactor": [0.0, 40.0], "rlnMicrographName": ["a.mrc", "b.mrc"]})
    row = CtfParams.from_relion(table.iloc[1], pixel_size_angst=1.2)
    assert (row.defocus_u_angst, row.defocus_angle_deg, row.voltage_kv, row.bfactor) == (20000.0, 80.0, 200.0, 40.0)
    assert (row.cs_mm, row.amplitude_contrast, row.phase_shift_deg, row.scale) == (2.7, 0.1, 0.0, 1.0)  # defaults
    batch = CtfParams.from_relion(table, pixel_size_angst=1.2,
                                  convert=lambda column: torch.tensor(column.to_numpy(), dtype=torch.float32))
    images = ctf_2d(32, batch)
    assert images.shape == (2, 32, 17)
    torch.testing.assert_close(images[1], ctf_2d(32, row))


def test_ctf_1d_is_the_x_axis_of_the_2d_ctf():
    params = _ctf(1.0, 14000.0, 22000.0, 30.0)
    grid = ctf_2d(64, params, dtype=torch.float64)
    line = ctf_1d(torch.arange(33, dtype=torch.float64) / 64.0, params)
    torch.testing.assert_close(line, grid[0], rtol=0, atol=1e-12)

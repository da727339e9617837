"""Tiny synthetic 2D data with ground truth for the ML engine tests (not a test module)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def shapes(n: int) -> torch.Tensor:
    """Three distinct centred 2D objects ``(3, n, n)``: an L of blobs, a ring with a knob, a bar pair."""
    c = torch.arange(n, dtype=torch.float32) - n // 2
    y, x = torch.meshgrid(c, c, indexing="ij")

    def blob(cx, cy, s):
        return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))

    u = n / 32.0
    a = blob(-4 * u, -4 * u, 2.5 * u) + blob(-4 * u, 4 * u, 2.5 * u) + blob(5 * u, 4 * u, 2.5 * u)
    r = torch.sqrt(x * x + y * y)
    b = torch.exp(-((r - 6 * u) ** 2) / (2 * (1.5 * u) ** 2)) + 1.5 * blob(0, -6 * u, 2 * u)
    cc = (torch.exp(-(x / (1.8 * u)) ** 2 - (y / (7 * u)) ** 2)
          + torch.exp(-((x - 6 * u) / (1.8 * u)) ** 2 - (y / (3 * u)) ** 2))
    out = torch.stack([a, b, cc])
    return out / out.flatten(1).std(1)[:, None, None]


def rotate_about_centre(images: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``out(r) = in(M r)``, ``M = [[c, -s], [s, c]]``, r relative to pixel ``n//2`` (bilinear)."""
    n = images.shape[-1]
    c = torch.arange(n, dtype=torch.float32) - n // 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    cos, sin = cos[:, None, None], sin[:, None, None]
    sx = cos * x - sin * y
    sy = sin * x + cos * y
    to_norm = lambda v: (v + n // 2 + 0.5) * 2.0 / n - 1.0  # noqa: E731
    grid = torch.stack([to_norm(sx), to_norm(sy)], -1)
    return F.grid_sample(images[:, None], grid, align_corners=False, padding_mode="zeros")[:, 0]


def transform(images: torch.Tensor, psi_deg: torch.Tensor, shift_px: torch.Tensor) -> torch.Tensor:
    """Rotate ``(N, n, n)`` by ``psi`` (reference frame -> image frame) and translate by ``-shift``."""
    n = images.shape[-1]
    th = torch.deg2rad(psi_deg)
    cos, sin = torch.cos(th), torch.sin(th)
    # image(r) = ref(A^T r) with A = [[c, s], [-s, c]]  (RELION psi)
    rot = rotate_about_centre(images, cos, sin)
    ky = torch.fft.fftfreq(n)[:, None]
    kx = torch.fft.rfftfreq(n)[None, :]
    ph = torch.exp(2j * math.pi * (kx * shift_px[:, 0, None, None] + ky * shift_px[:, 1, None, None]))
    return torch.fft.irfft2(torch.fft.rfft2(rot) * ph, s=(n, n))


def make_dataset(n_per_class: int, n: int = 32, snr: float = 0.5, seed: int = 0, classes=(0, 1, 2),
                 max_shift_px: float = 2.0):
    """Images ``(N, n, n)``, true class ``(N,)``, psi ``(N,)`` and shifts ``(N, 2)`` (white noise)."""
    g = torch.Generator().manual_seed(seed)
    refs = shapes(n)[list(classes)]
    k = len(classes)
    labels = torch.arange(k).repeat_interleave(n_per_class)
    psi = torch.rand(labels.shape[0], generator=g) * 360
    shift = (torch.rand(labels.shape[0], 2, generator=g) * 2 - 1) * max_shift_px
    clean = transform(refs[labels], psi, shift)
    noise = torch.randn(clean.shape, generator=g) / math.sqrt(snr)
    return clean + noise, labels, psi, shift


def write_star_dataset(out_dir, n_per_class: int = 60, n: int = 32, snr: float = 0.5, seed: int = 0,
                       pixel_size_angst: float = 3.0, with_ctf: bool = True):
    """Write particles.star + particles.mrcs (CTF-modulated shapes) and return (star path, labels)."""
    from pathlib import Path

    import pandas as pd

    from vitrify.core.ctf import CtfParams, ctf_2d
    from vitrify.core.fourier import irfft2_centered, rfft2_centered
    from vitrify.io.mrc import write_mrc
    from vitrify.io.star import write_star

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed + 7)
    _, labels, psi, shift = make_dataset(n_per_class, n, snr=1e9, seed=seed)
    refs = shapes(n)[labels]
    clean = transform(refs, psi, shift)
    count = clean.shape[0]
    defocus = 10000 + torch.rand(count, generator=g) * 15000
    if with_ctf:
        ctf = ctf_2d(n, CtfParams(pixel_size_angst=pixel_size_angst, defocus_u_angst=defocus,
                                  defocus_v_angst=defocus + 200, defocus_angle_deg=torch.zeros(count)))
        clean = irfft2_centered(rfft2_centered(clean) * ctf, n)
    noisy = clean + torch.randn(clean.shape, generator=g) * clean.std() / math.sqrt(snr)
    noisy = noisy / noisy.std()
    write_mrc(out_dir / "particles.mrcs", noisy.numpy(), pixel_size_angst)
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnMicrographOriginalPixelSize": [pixel_size_angst], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                           "rlnImagePixelSize": [pixel_size_angst], "rlnImageSize": [n],
                           "rlnImageDimensionality": [2], "rlnCtfDataAreCtfPremultiplied": [0]})
    parts = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@{out_dir / 'particles.mrcs'}" for i in range(count)],
                          "rlnMicrographName": "mic.mrc", "rlnOpticsGroup": 1})
    if with_ctf:
        parts["rlnDefocusU"] = defocus.numpy().astype(float)
        parts["rlnDefocusV"] = (defocus + 200).numpy().astype(float)
        parts["rlnDefocusAngle"] = 0.0
    write_star(out_dir / "particles.star", {"optics": optics, "particles": parts})
    return out_dir / "particles.star", labels

"""Throughput of the Fourier core: projections, back-projections, 2D rotations, FFTs as reference.

Run: ``.venv/bin/python benchmarks/core.py`` (options: ``--boxes 64 128 --batch 128 --seconds 1``).

For each device (cpu, and cuda when present) and box, one batched call handles ``--batch``
orientations, as the E-step / M-step use them:

* ``project``: central slices of a padded (x2) 3D projector, ``project_fourier`` (half layout);
* ``backproject``: ``BackProjector.insert`` of slices and CTF²-like weights;
* ``rotate2d``: in-plane rotations of one 2D reference (``rotate_2d_fourier``, 2D classification);
* ``fft2``: ``rfft2_centered`` of real images of the same box: the reference, measured in the same
  run. ``xFFT`` is the cost of one operation in units of one 2D FFT of the box (lower is better).

Set-up (projector transform, grids) is outside the timings.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from vitrify.core.backprojector import BackProjector
from vitrify.core.fourier import rfft2_centered
from vitrify.core.projector import make_projector, make_projector_2d, project_fourier, \
    rotate_2d_fourier
from vitrify.core.sampling import orientation_grid
from vitrify.core.euler import euler_to_matrix


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate_per_second(step: Callable[[], object], items: int, device: torch.device,
                    seconds: float) -> float:
    """Items per second of ``step`` (one warm-up call, then repeats for at least ``seconds``)."""
    step()
    _sync(device)
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 2:
            return calls * items / elapsed


def _rotations(batch: int, device: torch.device) -> torch.Tensor:
    """``(batch, 3, 3)`` matrices from a HEALPix order-2 grid (as an E-step would use them)."""
    grid = orientation_grid(2, device=device)[:batch]
    return euler_to_matrix(grid[:, 0], grid[:, 1], grid[:, 2])


def bench_box(box_px: int, batch: int, device: torch.device, seconds: float) -> list[tuple]:
    """Rows ``(device, box, operation, items/s)`` for one box size."""
    gen = torch.Generator().manual_seed(0)
    volume = torch.randn(box_px, box_px, box_px, generator=gen).to(device)
    images = torch.randn(batch, box_px, box_px, generator=gen).to(device)
    rotations = _rotations(batch, device)
    projector = make_projector(volume, 2)
    slices = project_fourier(projector, rotations)
    weights = torch.rand(batch, box_px, box_px // 2 + 1, generator=gen).to(device)
    backprojector = BackProjector(box_px, 2, device=device)
    ref_2d = make_projector_2d(images[0], 2)
    psi = torch.linspace(0, 360, batch + 1, device=device)[:-1]
    steps = {
        "fft2": lambda: rfft2_centered(images),
        "project": lambda: project_fourier(projector, rotations),
        "backproject": lambda: backprojector.insert(slices, weights, rotations),
        "rotate2d": lambda: rotate_2d_fourier(ref_2d, psi),
    }
    return [(device.type, box_px, name, rate_per_second(step, batch, device, seconds))
            for name, step in steps.items()]


def print_table(rows: list[tuple], batch: int) -> None:
    """Table with items/s and the cost relative to one 2D FFT of the same device and box."""
    fft = {(d, b): r for d, b, name, r in rows if name == "fft2"}
    print(f"{'device':<7}{'box':>5}  {'operation':<12}{'batch':>6}{'per second':>14}{'xFFT':>8}")
    for dev, box, name, rate in rows:
        ratio = fft[(dev, box)] / rate
        print(f"{dev:<7}{box:>5}  {name:<12}{batch:>6}{rate:>14,.0f}{ratio:>8.1f}")


def main() -> None:
    """Parse the arguments, run every case and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch", type=int, default=128, help="orientations / images per call")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, float32, padding 2")
    rows = []
    for device in devices:
        for box in args.boxes:
            rows += bench_box(box, args.batch, device, args.seconds)
    print_table(rows, args.batch)


if __name__ == "__main__":
    main()

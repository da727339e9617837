"""Post-processing against ground truth: the figures of docs/postprocess.md.

Adenylate kinase (mdanalysistests) simulated at 64 px, 1.2 Å, B 50 Å²; half-maps = truth + independent
white noise of ``noise × std(truth)``. For each noise level and mask (soft: from the truth, 10 Å
low-pass, 10 % of max, extended 3 px, 4 px edge; tight: hard, thresholded from the noisy average at
1.5 std after a 4 Å low-pass), prints the reported resolutions and the truth's (FSC of the
averaged map with the truth at 0.5, with the same mask and without). Then the Guinier B of a map
blurred by known B-factors. Run: ``PYTHONPATH=src python benchmarks/postprocess.py``.
"""

from __future__ import annotations

import time

import torch

from vitrify.core.filters import lowpass_filter
from vitrify.core.fourier import rfft3_centered
from vitrify.core.fsc import fsc, resolution_at_threshold
from vitrify.core.masks import mask_from_map
from vitrify.core.sharpen import fit_guinier, log_amplitude_shells
from vitrify.io.atomic_model import read_atomic_model
from vitrify.io.structures import example_structure
from vitrify.jobs.options.postprocess import Options
from vitrify.jobs.postprocess import analyse
from vitrify.sim.maps import MapOptions, simulate_map

BOX, PIXEL = 64, 1.2


def _masks(truth: torch.Tensor, average: torch.Tensor) -> dict[str, torch.Tensor]:
    low = lowpass_filter(truth.float(), 10.0, PIXEL, ndim=3).double()
    noisy = lowpass_filter(average.float(), 4.0, PIXEL, ndim=3).double()
    return {"soft": mask_from_map(low, 0.1 * float(low.max()), 3.0, 4.0),
            "tight": mask_from_map(noisy, 1.5 * float(average.std()))}


def resolution_table(atoms) -> None:
    """Reported vs true resolutions per noise level and mask."""
    truth = torch.from_numpy(simulate_map(atoms, MapOptions(BOX, PIXEL, bfactor_angst2=50.0))).double()
    print("| noise/std | mask | mask fraction | randomised from (Å) | unmasked 0.143 | truth 0.5 unmasked "
          "| masked 0.143 | corrected 0.143 | truth 0.5 soft-masked | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for noise in (0.5, 1.0, 2.0):
        g = torch.Generator().manual_seed(int(noise * 10))
        sigma = noise * float(truth.std())
        half1, half2 = (truth + sigma * torch.randn(truth.shape, generator=g, dtype=torch.float64) for _ in range(2))
        average = (half1 + half2) / 2
        masks = _masks(truth, average)
        soft = masks["soft"]
        truth_soft = resolution_at_threshold(fsc(average * soft, truth * soft), BOX, PIXEL, 0.5)
        truth_plain = resolution_at_threshold(fsc(average, truth), BOX, PIXEL, 0.5)
        for name, mask in masks.items():
            start = time.perf_counter()
            r = analyse(half1, half2, mask, PIXEL, Options("h1.mrc", mask="m.mrc"))
            seconds = time.perf_counter() - start
            print(f"| {noise} | {name} | {r['mask_fraction']:.3f} | {BOX * PIXEL / r['randomise_from']:.2f} "
                  f"| {r['unmasked_resolution']:.2f} | {truth_plain:.2f} | {r['masked_resolution']:.2f} "
                  f"| {r['resolution']:.2f} | {truth_soft:.2f} | {seconds:.2f} |")


def bfactor_table(atoms) -> None:
    """Fitted Guinier B (10 - 3.5 Å) of maps blurred by known B, relative to the unblurred map."""
    fits = {}
    for blur in (0.0, 50.0, 150.0, 300.0):
        volume = torch.from_numpy(simulate_map(atoms, MapOptions(BOX, PIXEL, bfactor_angst2=blur))).double()
        fits[blur] = fit_guinier(log_amplitude_shells(rfft3_centered(volume), BOX), BOX, PIXEL, 10.0, 3.5)[0]
    print("\n| added B (Å²) | fitted B (Å²) | fitted - fitted(0) | error |")
    print("|---|---|---|---|")
    for blur, fitted in fits.items():
        delta = fits[0.0] - fitted
        error = f"{100 * (delta - blur) / blur:+.1f} %" if blur else "-"
        print(f"| {blur:g} | {fitted:.1f} | {-delta:.1f} | {error} |")


def main() -> None:
    """Print both tables."""
    atoms = read_atomic_model(example_structure("adk"))
    resolution_table(atoms)
    bfactor_table(atoms)


if __name__ == "__main__":
    main()

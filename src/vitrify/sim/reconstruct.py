"""Check a simulated data set: reconstruct it with its true angles and compare with the truth.

:func:`reconstruct_from_truth` reads ``truth.star`` (true angles, origins and CTFs) and the
images it names, centres each image (phase shift by +origin), and inserts ``CTF · X`` with
weights ``CTF²`` into :class:`vitrify.core.backprojector.BackProjector`; the map is the
weight-normalised (Wiener with ``1/SNR`` regularisation per shell) reconstruction.
:func:`fourier_shell_correlation` compares it with the truth map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vitrify._progress import track
from vitrify.core.backprojector import BackProjector
from vitrify.core.ctf import CtfParams, ctf_2d
from vitrify.core.euler import euler_to_matrix
from vitrify.core.fourier import rfft2_centered, rfft3_centered, shell_index_3d
from vitrify.core.shifts import phase_shift_2d
from vitrify.io.errors import InputError
from vitrify.io.mrc import read_images
from vitrify.io.star import read_star_optics
from vitrify.sim.render import batches


@dataclass(frozen=True)
class Reconstruction:
    """A map ``(n, n, n)`` reconstructed from ``n_particles`` images of ``pixel_size_angst``."""

    volume: torch.Tensor
    pixel_size_angst: float
    n_particles: int


def _columns(table, names: list[str], device) -> torch.Tensor:
    return torch.as_tensor(table[names].to_numpy(np.float32, copy=True), device=device)


def _insert_batch(bp: BackProjector, rows, base_dir: Path, pixel: float, do_ctf: bool,
                  device) -> None:
    n = bp.box_px
    images = torch.as_tensor(read_images(rows["rlnImageName"].astype(str), base_dir), device=device)
    angles = _columns(rows, ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"], device)
    origins = _columns(rows, ["rlnOriginXAngst", "rlnOriginYAngst"], device) / pixel
    slices = phase_shift_2d(rfft2_centered(images.float()), origins)
    weights = None
    if do_ctf:
        ctf = ctf_2d(n, CtfParams.from_relion(rows, pixel_size_angst=pixel, convert=lambda column: torch.as_tensor(
            column.to_numpy(np.float32, copy=True), device=device)))
        slices, weights = slices * ctf, ctf * ctf
    bp.insert(slices, weights, euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2]))


def reconstruct_from_truth(truth_star: str | Path, *, map_index: int = 1, snr: float | None = None,
                           device: torch.device | str = "cpu", batch_size: int = 256) -> Reconstruction:
    """Reconstruct the particles of map ``map_index`` in ``truth.star`` at their true poses.

    ``snr`` (default: the data set's ``vtfSnr`` when noise was added) regularises the
    division by the CTF² weights: ``F = Σ CTF·X / (Σ CTF² + 1/snr)`` per voxel.
    """
    truth_star = Path(truth_star)
    star = read_star_optics(truth_star, "particles")
    table = star.merged
    if "vtfMapIndex" not in table.columns:
        raise InputError("not a vitrify truth file", path=truth_star, field="vtfMapIndex")
    rows_all = table[table["vtfMapIndex"] == map_index].reset_index(drop=True)
    if rows_all.empty:
        raise InputError(f"no particles of map {map_index}", path=truth_star, field="vtfMapIndex")
    n = int(rows_all["rlnImageSize"].iloc[0])
    pixel = float(rows_all["rlnImagePixelSize"].iloc[0])
    do_ctf = "rlnDefocusU" in rows_all.columns
    bp = BackProjector(n, 2, device=torch.device(device))
    for part in track(list(batches(len(rows_all), batch_size)), "back-projecting"):
        _insert_batch(bp, rows_all.iloc[part], truth_star.parent, pixel, do_ctf, device)
    if snr is not None and snr > 0:
        bp.weight += 1.0 / snr
    volume = bp.reconstruct()
    return Reconstruction(volume, pixel, len(rows_all))


def fourier_shell_correlation(map1: torch.Tensor, map2: torch.Tensor) -> torch.Tensor:
    """FSC ``(n//2 + 1,)`` of two ``(n, n, n)`` maps, shells of the rfft half (shell 0 = DC)."""
    n = map1.shape[-1]
    f1, f2 = rfft3_centered(map1.double()), rfft3_centered(map2.double())
    shells = shell_index_3d(n, device=map1.device).reshape(-1)
    keep = shells <= n // 2
    def total(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n // 2 + 1, dtype=torch.float64, device=map1.device).index_add_(
            0, shells[keep], values.reshape(-1)[keep])
    cross = total((f1 * f2.conj()).real)
    power = total(f1.abs() ** 2) * total(f2.abs() ** 2)
    return (cross / torch.sqrt(torch.clamp(power, min=1e-30))).float()


def resolution_at(fsc: torch.Tensor, box_px: int, pixel_size_angst: float,
                  threshold: float = 0.5) -> float:
    """Resolution (Å) of the last shell before ``fsc`` first drops below ``threshold``."""
    below = torch.nonzero(fsc[1:] < threshold)
    shell = int(below[0]) if len(below) else len(fsc) - 1
    shell = max(shell, 1)
    return box_px * pixel_size_angst / shell

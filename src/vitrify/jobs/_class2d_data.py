"""Class2D input: validate particles.star and its stacks, then load packed engine inputs.

Everything a user can get wrong is checked before any compute: missing columns (CTF
columns when CTF correction is on), optics groups with different image or pixel sizes,
more classes than particles, stacks that cannot be opened or are too short, images of the
wrong size. Images are then read lazily, chunk by chunk (memory-mapped stacks), masked,
transformed and packed; only the packed window is kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vitrify._progress import track
from vitrify.core.ctf import CtfParams, ctf_2d
from vitrify.io.errors import InputError
from vitrify.io.mrc import check_finite, open_stack, read_images
from vitrify.io.star import OpticsStar, image_base_dirs, read_star_optics, resolve_image_name
from vitrify.ml.model import ParticleSet
from vitrify.ml.starts import pack_particles
from vitrify.ml.window import FourierWindow

CTF_COLUMNS = ("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage",
               "rlnSphericalAberration", "rlnAmplitudeContrast")
CHUNK = 2048


@dataclass(frozen=True)
class InputParticles:
    """A validated particles.star: tables, image geometry and where the images are."""

    star: OpticsStar
    box_px: int
    pixel_size_angst: float
    base_dir: Path
    group_index: np.ndarray  # (N,) 0-based optics group per particle
    path: Path = Path("particles.star")  # the STAR file (named by errors)

    @property
    def n_particles(self) -> int:
        """N."""
        return len(self.star.data)


def _base_dir(star_path: Path, first_name: str) -> Path:
    """Image names are relative to the project directory (the current one, else the project that
    holds the STAR file) or, failing that, to the STAR file's folder (:func:`image_base_dirs`)."""
    bases = image_base_dirs(star_path)
    for base in bases:
        if resolve_image_name(first_name, base)[1].exists():
            return base
    return bases[0]


def _check_stacks(names: pd.Series, base_dir: Path, box_px: int, path: Path) -> None:
    """Every stack opens, holds the referenced images, and has ``box_px`` images."""
    try:
        resolved = [resolve_image_name(str(n), base_dir) for n in names]
    except InputError as err:
        raise err.with_path(path) from None
    needed: dict[Path, int] = {}
    for index0, stack in resolved:
        needed[stack] = max(needed.get(stack, 0), index0 + 1)
    for stack, count in needed.items():
        if not stack.exists():
            raise InputError("image stack not found", path=stack, expected=f"a stack referenced by {path}")
        try:
            with open_stack(stack) as s:
                shape = s.shape
        except InputError:
            raise
        except Exception as err:  # mrcfile raises several types on corrupt files
            raise InputError(f"cannot read image stack ({err})", path=stack, expected="an MRC stack") from err
        if shape[0] < count:
            raise InputError(f"stack holds {shape[0]} images but image {count} is referenced", path=stack)
        if shape[1] != box_px or shape[2] != box_px:
            raise InputError(f"images are {shape[2]}x{shape[1]} px", path=stack,
                             expected=f"{box_px}x{box_px} (rlnImageSize of {path.name})")


def validate_input(path: str | Path, n_classes: int, do_ctf: bool, check_stacks: bool = True) -> InputParticles:
    """Read and check particles.star; raises :class:`InputError` on anything wrong.

    ``check_stacks`` False leaves the image stacks to :func:`check_rows` (data-parallel ranks each
    check the stacks of their own shard).
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path=path, expected="a RELION particles STAR file")
    star = read_star_optics(path, "particles")
    merged = star.merged
    if len(merged) == 0:
        raise InputError("no particles", path=path, field="data_particles")
    if do_ctf:
        missing = [c for c in CTF_COLUMNS if c not in merged.columns]
        if missing:
            raise InputError(f"CTF correction is on but column(s) {', '.join(missing)} are missing",
                             path=path, field="data_particles", expected="CTF columns, or --no-ctf")
    if "rlnImageSize" not in merged.columns:
        raise InputError("no image size", path=path, field="rlnImageSize (data_optics)")
    sizes = sorted(set(int(v) for v in merged["rlnImageSize"]))
    pixels = sorted(set(round(float(v), 4) for v in merged["rlnImagePixelSize"]))
    if len(sizes) > 1 or len(pixels) > 1:
        raise InputError(f"optics groups differ in image size {sizes} or pixel size {pixels}", path=path,
                         field="data_optics", expected="one image size and pixel size")
    if n_classes > len(merged):
        raise InputError(f"{n_classes} classes requested for {len(merged)} particles", field="--K",
                         expected=f"at most {len(merged)}")
    box = sizes[0]
    if box < 16 or box % 2:
        raise InputError(f"image size {box}", path=path, field="rlnImageSize", expected="an even size >= 16")
    names = merged["rlnImageName"].astype(str)
    try:
        base = _base_dir(path, names.iloc[0])
    except InputError as err:
        raise err.with_path(path) from None
    if check_stacks:
        _check_stacks(names, base, box, path)
    groups = merged["rlnOpticsGroup"].astype(int).to_numpy()
    _, group_index = np.unique(groups, return_inverse=True)
    return InputParticles(star, box, float(pixels[0]), base, group_index.astype(np.int64), path)


def check_rows(inp: InputParticles, rows: np.ndarray) -> None:
    """Check the stacks of the particles in ``rows`` ``(n,)`` as :func:`validate_input` checks all."""
    names = inp.star.merged["rlnImageName"].astype(str).iloc[np.asarray(rows, dtype=np.int64)]
    _check_stacks(names, inp.base_dir, inp.box_px, inp.path)


def resident_bytes(n_particles: int, box_px: int) -> int:
    """Bytes the engine keeps per run: packed transforms (complex64) and CTFs (float32) of every
    particle in the largest window (``~0.39 n^2`` pixels), plus 256 MiB of working arrays."""
    window_px = int(0.3927 * box_px * box_px)
    return n_particles * window_px * 12 + 256 * 2 ** 20


def available_bytes(device: torch.device) -> int:
    """Physical memory of the machine (CPU) or of the GPU (CUDA)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_memory(inp: InputParticles, device: torch.device, n_held: int | None = None,
                 ranks_here: int = 1) -> None:
    """Refuse (before any compute) a data set whose resident arrays exceed 90% of the memory.

    ``n_held`` particles (all by default) are held by each of ``ranks_here`` processes that share
    this machine's memory (ranks on one GPU each share nothing).
    """
    n = inp.n_particles if n_held is None else n_held
    sharing = 1 if device.type == "cuda" else max(ranks_here, 1)
    need = resident_bytes(n, inp.box_px) * sharing
    have = available_bytes(device)
    if need > 0.9 * have:
        held = f"{n} particles" + (f" on each of {sharing} ranks" if sharing > 1 else "")
        raise InputError(f"{held} of {inp.box_px} px need ~{need / 2 ** 30:.1f} GiB "
                         f"resident; {device.type} memory is {have / 2 ** 30:.1f} GiB", field="--i",
                         expected="fewer particles or smaller boxes (downscale at extraction), or more nodes")


def _ctf_chunk(rows: pd.DataFrame, box: int, pixel: float, intact_first_peak: bool) -> torch.Tensor:
    def column(values) -> torch.Tensor:
        return torch.as_tensor(np.array(values, dtype=np.float64), dtype=torch.float32)

    params = CtfParams.from_relion(rows, pixel_size_angst=pixel, convert=column)
    return ctf_2d(box, params, intact_first_peak=intact_first_peak)


def _finite_images(names: pd.Series, base_dir: Path) -> torch.Tensor:
    """Images ``(n, box, box)`` of ``names``; InputError naming the stack and image index of the first
    image with a NaN or infinite pixel (they would turn every likelihood into NaN)."""
    images = read_images(names, base_dir)
    finite = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
    if not finite.all():
        k = int(np.flatnonzero(~finite)[0])
        index0, stack = resolve_image_name(names.iloc[k], base_dir)
        check_finite(images[k:k + 1], stack, first_image=index0 + 1)
    return torch.from_numpy(images)


def load_particles(inp: InputParticles, window: FourierWindow, diameter_px: float, do_ctf: bool,
                   intact_first_peak: bool, device: torch.device,
                   rows: np.ndarray | None = None) -> ParticleSet:
    """Read the images chunk by chunk and build the engine's :class:`ParticleSet` of the particles in
    ``rows`` ``(n,)`` (row numbers of particles.star, in that order; all by default)."""
    rows = np.arange(inp.n_particles) if rows is None else np.asarray(rows, dtype=np.int64)
    table = inp.star.merged.iloc[rows]
    n = len(rows)
    fts, ctfs = [], []
    for start in track(range(0, n, CHUNK), "reading particles", total=-(-n // CHUNK)):
        chunk = table.iloc[start:start + CHUNK]
        images = _finite_images(chunk["rlnImageName"].astype(str), inp.base_dir)
        ctf = _ctf_chunk(chunk, inp.box_px, inp.pixel_size_angst, intact_first_peak) if do_ctf else None
        ft, c = pack_particles(images.to(device), None if ctf is None else ctf.to(device), window,
                               diameter_px)
        fts.append(ft)
        ctfs.append(c)
    if not fts:  # a rank without particles (fewer than two per rank)
        p = int(window.shell.shape[0])
        fts, ctfs = [torch.zeros(0, p, dtype=torch.complex64, device=device)], [torch.zeros(0, p, device=device)]
    offsets = np.zeros((n, 2), dtype=np.float32)
    for axis, label in enumerate(("rlnOriginXAngst", "rlnOriginYAngst")):
        if label in table.columns:
            offsets[:, axis] = table[label].to_numpy(np.float64) / inp.pixel_size_angst
    return ParticleSet(ft=torch.cat(fts), ctf=torch.cat(ctfs),
                       group=torch.as_tensor(inp.group_index[rows], device=device),
                       n_groups=int(inp.group_index.max()) + 1,
                       offset_px=torch.as_tensor(offsets, device=device))


def start_rows(group_index: np.ndarray, n_use: int = 1000) -> np.ndarray:
    """Rows the starting model reads (:func:`vitrify.ml.starts.initial_model`: the first ``n_use``
    particles, and the first ``n_use`` of each optics group for the noise spectra), ascending.

    ``group_index`` ``(N,)`` 0-based optics group per particle. Loaded alone they give the model
    all particles give (the first rows stay first, each group's first rows stay its first).

    >>> start_rows(np.array([0, 1, 0, 1, 1]), n_use=1).tolist()
    [0, 1]
    """
    picks = [np.arange(min(n_use, len(group_index)))]
    picks += [np.flatnonzero(group_index == g)[:n_use] for g in np.unique(group_index)]
    return np.unique(np.concatenate(picks))


def read_reference_stack(path: str | Path, inp: InputParticles, n_classes: int) -> torch.Tensor:
    """The ``--ref`` stack ``(K, n, n)``: one finite image per class, the particles' box and pixel size."""
    from vitrify.io.mrc import read_mrc

    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path, field="--ref", expected="an MRC stack of references")
    try:
        images, pixel = read_mrc(path)
    except InputError:
        raise
    except Exception as err:  # a damaged file: name it
        raise InputError(f"cannot read the stack ({err})", path=path, field="--ref",
                         expected="an MRC stack of references") from None
    images = np.asarray(images).reshape((-1,) + np.shape(images)[-2:])
    box, pix = inp.box_px, inp.pixel_size_angst
    if images.shape != (n_classes, box, box):
        raise InputError(f"{images.shape[0]} images of {images.shape[1]}x{images.shape[2]} px", path=path,
                         field="--ref", expected=f"{n_classes} images (--K) of {box}x{box} px (the particles' box)")
    if pixel and abs(pixel - pix) > 0.01 * pix:
        raise InputError(f"pixel size {pixel:.4g} Å", path=path, field="--ref",
                         expected=f"the particles' {pix:.4g} Å (rescale the references first)")
    if not np.isfinite(images).all():
        raise InputError("the stack holds NaN or infinite values", path=path, field="--ref",
                         expected="finite values")
    return torch.as_tensor(images, dtype=torch.float32)


def diameter_in_px(diameter_angst: float, inp: InputParticles) -> float:
    """``--particle-diameter`` in pixels; refused when it exceeds the box."""
    diameter_px = diameter_angst / inp.pixel_size_angst
    if diameter_px > inp.box_px:
        raise InputError(f"particle diameter {diameter_angst} Å is {diameter_px:.0f} px", field="--particle-diameter",
                         expected=f"at most the box, {inp.box_px} px")
    return diameter_px


def check_point_group(name: str) -> None:
    """``--sym``: a point group vitrify knows (one line listing them otherwise)."""
    from vitrify.core.symmetry import parse_symmetry

    try:
        parse_symmetry(name)
    except InputError as err:
        raise InputError(str(err.args[0]) if err.args else "unknown point group", field="--sym",
                         expected="C1, Cn, Dn (n >= 1), T, O, I, I1, I2, I3 or I4") from None


def check_engine3d_inputs(options, inp: InputParticles) -> float:
    """The 3D engine jobs' checks that need the particles (point group, diameter, one VDAM mini-batch),
    before any compute; returns the diameter in px."""
    from vitrify.ml.schedules import auto_subsets_inimodel

    check_point_group(options.symmetry)
    diameter_px = diameter_in_px(options.particle_diameter_angst, inp)
    if options.algorithm == "vdam":
        need = options.ini_subset if options.ini_subset > 0 else auto_subsets_inimodel(inp.n_particles)[0]
        if inp.n_particles < need:
            raise InputError(f"{inp.n_particles} particles are fewer than one mini-batch ({need})", field="--i",
                             expected=f"at least {need} particles (or a smaller --ini-subset)")
    return diameter_px

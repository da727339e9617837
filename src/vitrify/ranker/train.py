"""Training the ranker on labelled 2D jobs (ours or a user's).

A labelled job is a 2D job's ``run_itNNN_optimiser.star`` plus a target score (0..1) per class,
in a STAR file with ``rlnClassNumber`` (or ``rlnReferenceImage``) and ``rlnClassScore``
(:func:`read_targets`; by default ``class_targets.star`` beside the optimiser). A job list is
a text file, one job per line: ``<optimiser.star> [<targets.star>]`` (``#`` starts a comment).

Training (:func:`train_model`): MSE loss, Adam, mini-batches, each batch randomly rotated
in-plane (``affine_grid``/``grid_sample``) and flipped with probability 0.5 (RELION's recipe),
seeded; the features are the normalised 24-vector of :mod:`vitrify.ranker.features`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from vitrify.errors import InputError
from vitrify.io.star import read_star
from vitrify.ranker.inputs import class_inputs, read_class2d_job
from vitrify.ranker.network import NetworkConfig, RankerNet, standardise_images

TARGETS_FILE = "class_targets.star"


@dataclass(frozen=True)
class TrainingSet:
    """Ranked classes of several jobs: images ``(N, 64, 64)``, vectors ``(N, 24)``, targets ``(N,)``."""

    images: torch.Tensor
    vectors: torch.Tensor
    targets: torch.Tensor
    job_index: np.ndarray  # (N,) which job each class came from
    job_names: tuple[str, ...]

    def subset(self, keep: np.ndarray) -> TrainingSet:
        """The classes where ``keep`` ``(N,)`` is True."""
        idx = torch.as_tensor(np.flatnonzero(keep))
        return TrainingSet(self.images[idx], self.vectors[idx], self.targets[idx], self.job_index[keep],
                           self.job_names)

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def read_targets(path: str | Path) -> dict[int, float]:
    """Class number -> target score from a STAR file (rlnClassNumber or rlnReferenceImage, rlnClassScore)."""
    blocks = read_star(path)
    table = next((b for b in blocks.values() if isinstance(b, pd.DataFrame) and "rlnClassScore" in b), None)
    if table is None:
        raise InputError("no table with rlnClassScore", path=path, field="rlnClassScore",
                         expected="a target score per class")
    if "rlnClassNumber" in table:
        numbers = table["rlnClassNumber"].astype(int)
    elif "rlnReferenceImage" in table:
        numbers = table["rlnReferenceImage"].astype(str).str.split("@").str[0].astype(int)
    else:
        raise InputError("no rlnClassNumber or rlnReferenceImage column", path=path, field="rlnClassNumber")
    return dict(zip(numbers.tolist(), table["rlnClassScore"].astype(float).tolist()))


def read_job_list(path: str | Path) -> list[tuple[Path, Path]]:
    """(optimiser.star, targets.star) pairs of a job list file."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError:
        raise InputError("job list not found", path=path, field="--jobs") from None
    pairs = []
    for line in lines:
        words = line.split("#")[0].split()
        if not words:
            continue
        optimiser = Path(words[0]) if Path(words[0]).is_absolute() else path.parent / words[0]
        targets = (Path(words[1]) if Path(words[1]).is_absolute() else path.parent / words[1]) if len(words) > 1 \
            else optimiser.parent / TARGETS_FILE
        pairs.append((optimiser, targets))
    if not pairs:
        raise InputError("no jobs listed", path=path, field="--jobs", expected="lines '<optimiser.star> [<targets>]'")
    return pairs


def load_training_set(pairs: list[tuple[Path, Path]]) -> TrainingSet:
    """Inputs and targets of every ranked class of every listed job (classes without a target skipped)."""
    images, vectors, targets, index, names = [], [], [], [], []
    for j, (optimiser, targets_path) in enumerate(pairs):
        inputs = class_inputs(read_class2d_job(optimiser))
        table = read_targets(targets_path)
        keep = np.array([int(c) in table for c in inputs.class_numbers], dtype=bool)
        images.append(inputs.images[torch.as_tensor(keep)])
        vectors.append(torch.as_tensor(inputs.vectors[keep]))
        targets.append(torch.tensor([table[int(c)] for c in inputs.class_numbers[keep]], dtype=torch.float32))
        index.append(np.full(int(keep.sum()), j))
        names.append(str(optimiser))
    return TrainingSet(torch.cat(images), torch.cat(vectors), torch.cat(targets), np.concatenate(index),
                       tuple(names))


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random in-plane rotation and horizontal flip (p = 0.5) of ``(b, 1, 64, 64)`` images."""
    b = images.shape[0]
    angle = torch.rand(b, generator=generator) * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, align_corners=False)
    flip = torch.rand(b, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


@dataclass(frozen=True)
class TrainSettings:
    """Optimiser settings (RELION: Adam 5e-5, wd 5e-4, batch 32, 200 epochs, dropout 0.3 on 18,000
    classes; our few hundred classes and CPU hours need more steps per epoch: batch 8, 1e-4; at 1e-3
    the image branch collapsed to a constant in our runs)."""

    epochs: int = 25
    batch_size: int = 8
    learning_rate: float = 1e-4
    weight_decay: float = 5e-4
    seed: int = 12
    #: CPU threads while training (1: small batches gain nothing from more, and OpenMP spin-waits
    #: on a shared machine made 2 threads 20x slower than 1 in our measurements)
    threads: int = 1


def mean_squared_error(net: RankerNet, data: TrainingSet) -> float:
    """MSE of the clamped scores against the targets."""
    if len(data) == 0:
        return float("nan")
    net.eval()
    with torch.no_grad():
        pred = net(standardise_images(data.images), data.vectors)[:, 0].clamp(0.0, 1.0)
    return float(((pred - data.targets) ** 2).mean())


def train_model(data: TrainingSet, config: NetworkConfig | None = None, settings: TrainSettings | None = None,
                validation: TrainingSet | None = None, log=None) -> tuple[RankerNet, list[dict]]:
    """Train a new network on ``data``; returns it and the per-epoch history (loss, validation MSE)."""
    settings = settings or TrainSettings()
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _train(data, config, settings, validation, log)
    finally:
        torch.set_num_threads(threads)


def _train(data: TrainingSet, config: NetworkConfig | None, settings: TrainSettings,
           validation: TrainingSet | None, log) -> tuple[RankerNet, list[dict]]:
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    net = RankerNet(config)
    opt = torch.optim.Adam(net.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    images = standardise_images(data.images)
    history = []
    for epoch in range(settings.epochs):
        start = time.time()
        net.train()
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for part in order.split(settings.batch_size):
            x = augment(images[part], generator)
            loss = F.mse_loss(net(x, data.vectors[part])[:, 0], data.targets[part])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(part)
        row = {"epoch": epoch + 1, "train_loss": total / max(len(data), 1), "seconds": time.time() - start}
        if validation is not None:
            row["val_mse"] = mean_squared_error(net, validation)
        history.append(row)
        if log:
            log(row)
    net.eval()
    return net, history

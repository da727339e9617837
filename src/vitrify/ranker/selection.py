"""Scoring a 2D job and choosing its classes (RELION's §6 rules).

A class is selected when ``min_score <= score``; then, while fewer than ``min_particles``
particles (if > 0) or, failing that rule, fewer than ``min_classes`` classes (if > 0) are
selected, the best-scoring unselected ranked classes are added. Unranked classes (``n_k <= 10``)
score -999 and are never selected.

>>> select_classes(np.array([0.9, 0.2, 0.6, -999.0]), np.array([100, 50, 10, 5]), 0.5)
array([ True, False,  True, False])
>>> select_classes(np.array([0.9, 0.2, 0.6, -999.0]), np.array([100, 50, 10, 5]), 0.95, min_particles=105)
array([ True, False,  True, False])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vitrify.ranker.inputs import NOT_RANKED, Class2DJob, RankerInputs, class_inputs
from vitrify.ranker.network import RankerNet, score_classes


def select_classes(scores: np.ndarray, counts: np.ndarray, min_score: float, *, max_score: float = 999.0,
                   min_particles: int = -1, min_classes: int = -1) -> np.ndarray:
    """Boolean selection ``(K,)`` of classes from scores ``(K,)`` and particle counts ``(K,)``."""
    ranked = scores > NOT_RANKED
    selected = ranked & (scores >= min_score) & (scores <= max_score)
    for k in np.argsort(-scores, kind="stable"):
        if selected[k] or not ranked[k]:
            continue
        if min_particles > 0:
            if counts[selected].sum() >= min_particles:
                break
            selected[k] = True
        elif min_classes > 0:
            if selected.sum() >= min_classes:
                break
            selected[k] = True
        else:
            break
    return selected


@dataclass(frozen=True)
class JobScores:
    """Scores of every class of a 2D job (model order) and the inputs behind them."""

    scores: np.ndarray  # (K,) in [0, 1]; NOT_RANKED for classes of <= 10 particles
    inputs: RankerInputs


def score_job(job: Class2DJob, net: RankerNet, device: torch.device | str = "cpu") -> JobScores:
    """Score every class of ``job`` with ``net``."""
    inputs = class_inputs(job)
    net = net.to(device)
    ranked = score_classes(net, inputs.images.to(device), torch.as_tensor(inputs.vectors, device=device))
    scores = np.full(len(job.model_classes), NOT_RANKED)
    scores[inputs.rows] = ranked.cpu().double().numpy()
    return JobScores(scores, inputs)

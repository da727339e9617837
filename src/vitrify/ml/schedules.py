"""VDAM schedules (RELION-4 gradient mode): phases, mini-batch sizes, step size and T.

Follows ``shared/spec/vdam.md`` sections 1-3: iterations split into an initial phase
(``ini_frac``), an in-between phase and a final phase (``fin_frac``); mini-batches grow
linearly from ``ini_subset`` to ``fin_subset`` over the in-between phase; the step size
and the regularisation T follow base-10 sigmoids centred in the in-between phase.
"""

from __future__ import annotations

from dataclasses import dataclass


def auto_subsets_2d(n_particles: int) -> tuple[int, int]:
    """RELION's automatic 2D mini-batch sizes: 0.5% (200..10,000) and 5% (1,000..100,000)."""
    ini = max(min(int(0.005 * n_particles), 10000), 200)
    fin = max(min(int(0.05 * n_particles), 100000), 1000)
    return ini, fin


def auto_subsets_inimodel(n_particles: int) -> tuple[int, int]:
    """RELION's automatic 3D initial-model mini-batch sizes: 0.5% (200..5,000) and 10% (1,000..50,000)."""
    ini = max(min(int(0.005 * n_particles), 5000), 200)
    fin = max(min(int(0.1 * n_particles), 50000), 1000)
    return ini, fin


def _sigmoid(x: float, b: int, a: int) -> float:
    """``1 / (10^((x - b - a/2) / (a/4)) + 1)``; a step at ``b`` when ``a == 0``."""
    if a <= 0:
        return 1.0 if x < b else 0.0
    expo = (x - b - a / 2.0) / (a / 4.0)
    if expo > 300:
        return 0.0
    return 1.0 / (10.0 ** expo + 1.0)


@dataclass(frozen=True)
class VdamSchedule:
    """Per-iteration step size, T and mini-batch size.

    Parameters
    ----------
    nr_iter
        Total iterations (mini-batches).
    n_particles, n_classes
        Data set size and K.
    ini_frac, fin_frac
        Fractions of the initial and final phases.
    stepsize, stepsize_start
        Final and initial step size (RELION: ``0.3`` and ``0.9`` for 2D).
    tau2_fudge, tau2_fudge_start
        Final and initial T (RELION: T and 1).
    ini_subset, fin_subset
        Mini-batch sizes (``<= 0``: automatic).
    grad_em_iters
        Last iterations done as plain EM.
    """

    nr_iter: int
    n_particles: int
    n_classes: int
    ini_frac: float = 0.3
    fin_frac: float = 0.2
    stepsize: float = 0.3
    stepsize_start: float = 0.9
    tau2_fudge: float = 2.0
    tau2_fudge_start: float = 1.0
    ini_subset: int = -1
    fin_subset: int = -1
    grad_em_iters: int = 0

    def _fracs(self) -> tuple[float, float]:
        ini, fin = self.ini_frac, self.fin_frac
        if ini + fin > 0.9:
            d = ini + fin + 0.1
            ini, fin = ini / d, fin / d
        return ini, fin

    @property
    def phases(self) -> tuple[int, int, int]:
        """(ini_iter, inb_iter, fin_iter)."""
        ini, fin = self._fracs()
        ini_iter, fin_iter = int(self.nr_iter * ini), int(self.nr_iter * fin)
        return ini_iter, max(0, self.nr_iter - ini_iter - fin_iter), fin_iter

    def subsets(self) -> tuple[int, int]:
        """Initial and final mini-batch sizes."""
        auto = auto_subsets_2d(self.n_particles)
        ini = self.ini_subset if self.ini_subset > 0 else auto[0]
        fin = self.fin_subset if self.fin_subset > 0 else auto[1]
        return ini, fin

    def stepsize_at(self, it: int) -> float:
        """Base step size eta(it)."""
        ini_iter, inb_iter, _ = self.phases
        s = _sigmoid(it, ini_iter, inb_iter // 2)
        return self.stepsize_start * s + self.stepsize * (1.0 - s)

    def tau2_fudge_at(self, it: int) -> float:
        """T(it)."""
        ini_iter, inb_iter, _ = self.phases
        s = _sigmoid(it, ini_iter, inb_iter // 4)
        return self.tau2_fudge_start * s + self.tau2_fudge * (1.0 - s)

    def is_grad(self, it: int) -> bool:
        """Whether iteration ``it`` is a gradient step (else plain EM)."""
        return not self.nr_iter - it < self.grad_em_iters

    def subset_size(self, it: int) -> int:
        """Mini-batch size of iteration ``it``; -1 = all particles."""
        ini_iter, inb_iter, _ = self.phases
        ini, fin = self.subsets()
        if it < ini_iter:
            size = ini
        elif it < ini_iter + inb_iter:
            size = ini + round((it - ini_iter) / max(inb_iter, 1) * (fin - ini))
        else:
            size = fin
        full = (not self.is_grad(it)) or (it == self.nr_iter and self.n_classes > 1)
        return -1 if full or size >= self.n_particles else int(size)

    def replaces_classes(self, it: int) -> bool:
        """Inactive-class replacement happens for ``ini_iter < it < ini_iter + inb_iter``."""
        ini_iter, inb_iter, _ = self.phases
        return ini_iter < it < ini_iter + inb_iter

    def effective_stepsize(self, it: int, pdf_class: float) -> float:
        """Per-class step ``eta(it) * (1 - exp(-(3K + 10) pdf_class))``."""
        import math

        return self.stepsize_at(it) * (1.0 - math.exp(-(3 * self.n_classes + 10) * pdf_class))

"""The engine jobs' data-parallel ranks under ``torchrun`` (class2d, initialmodel, class3d, refine3d).

One mechanism for every engine job (:class:`vitrify.ml.optimiser.Ranks`): with ``WORLD_SIZE`` > 1
each process joins the torch.distributed group (gloo on CPU, NCCL on GPU, one GPU per local rank)
and holds a shard of the particles; the engines all-reduce their E-step sums, so every rank holds
the same model. Rank 0 alone writes: when files are due, :func:`gathered` collects every rank's
per-particle state (assignments, poses) on rank 0 and lends it to the writer, and the other ranks
(:class:`Follower`) take part in those gathers and in the abort check. One process without
torchrun stays the default (no ranks, nothing gathered).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from vitrify.io.errors import InputError
from vitrify.jobs.base import JobAborted, check_abort
from vitrify.ml.model import ParticleSet
from vitrify.ml.optimiser import PARTICLE_FIELDS, Ranks, shard_rows


def world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def check_rank_count(world: int, sizes: Sequence[int], what: str = "particles") -> None:
    """A user error (before any rank joins) when a rank would hold none of a set of ``sizes``
    particles (one set; the two half sets of a refinement)."""
    empty = [n for n in sizes if any(b <= a for a, b in (shard_rows(n, world, r) for r in range(world)))]
    if not empty:
        return
    most = max((w for w in range(1, world) if all(
        all(b > a for a, b in (shard_rows(n, w, r) for r in range(w))) for n in sizes)), default=1)
    held = "/".join(str(n) for n in sizes)
    raise InputError(f"{world} ranks for {held} {what}", field="torchrun --nproc-per-node",
                     expected=f"at most {most} ranks (each rank must hold particles of every set)")


def join_ranks(device: torch.device, n_particles: int, sizes: Sequence[int] | None = None
               ) -> tuple[Ranks | None, torch.device]:
    """The data-parallel ranks under torchrun (None alone) over ``n_particles`` and this rank's
    device; ``sizes``: the particle sets each rank must hold a share of (default: all particles)."""
    world = world_size()
    if world <= 1:
        return None, device
    if n_particles < world:
        raise InputError(f"{world} ranks for {n_particles} particles", field="torchrun --nproc-per-node",
                         expected=f"at most {n_particles} ranks")
    if sizes is not None:
        check_rank_count(world, sizes, "particles per half set")
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), n_particles), device


def leave_ranks(ranks: Ranks | None) -> None:
    """Leave the torch.distributed group joined by :func:`join_ranks`."""
    if ranks is not None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def rank_logger(job_dir: Path) -> logging.Logger:
    """The job's logger on rank 0 (or alone); a silent one on the other ranks (rank 0 keeps run.log)."""
    from vitrify.jobs.base import is_secondary_rank, job_logger

    if not is_secondary_rank():
        return job_logger(job_dir)
    quiet = logging.getLogger("vitrify.rank.quiet")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    return quiet


def half_shards(subsets: torch.Tensor, ranks: Ranks | None) -> tuple[np.ndarray, torch.Tensor, list[torch.Tensor]]:
    """Rows of a gold-standard refinement that this rank holds: the shard :func:`shard_rows` of each half set
    (half 1's rows, then half 2's, ascending), their subsets (1 or 2) and every half's rows (all ranks').

    ``subsets`` ``(N,)`` 1 or 2 per particle.
    """
    index = [torch.nonzero(subsets.cpu() == h).flatten() for h in (1, 2)]
    if ranks is None:
        return np.arange(subsets.shape[0]), subsets, index
    mine = [idx[slice(*shard_rows(idx.numel(), ranks.world, ranks.rank))] for idx in index]
    local = torch.cat([torch.full((m.numel(),), h, dtype=torch.long) for h, m in zip((1, 2), mine)])
    return torch.cat(mine).numpy(), local, index


@contextmanager
def gathered(engines: Sequence) -> Iterator[bool]:
    """Every particle's state on rank 0 while the writer writes (a collective under ranks).

    ``engines``: :class:`vitrify.ml.inimodel.Refiner3D` (or anything with ``particles``,
    ``angles_deg`` and ``ranks``). On rank 0 each engine's ``particles`` and ``angles_deg`` are, inside
    the block, those of all its particles (no images); the other ranks send theirs. Yields whether
    this process writes. Re-entrant: an inner block gathers nothing again.
    """
    engines = [e for e in engines if e.ranks is not None and not getattr(e, "_lent", False)]
    if not engines:
        yield True
        return
    saved = [(e.particles, e.angles_deg) for e in engines]
    writes = engines[0].ranks.rank == 0
    for e in engines:
        full = {name: e.ranks.gather_rows(getattr(e.particles, name)) for name in PARTICLE_FIELDS}
        angles = e.ranks.gather_rows(e.angles_deg)
        if writes:
            n, dev = e.ranks.n_total, e.particles.ft.device
            e.particles = ParticleSet(ft=torch.zeros(n, 0, dtype=torch.complex64, device=dev),
                                      ctf=torch.zeros(n, 0, device=dev), n_groups=e.particles.n_groups, **full)
            e.angles_deg = angles
        e._lent = True
    try:
        yield writes
    finally:
        for e, (particles, angles) in zip(engines, saved):
            e.particles, e.angles_deg, e._lent = particles, angles, False


def abort_on_every_rank(job_dir: Path, ranks: Ranks | None, device: torch.device) -> None:
    """Raise :class:`JobAborted` on every rank when rank 0 sees an abort request (one collective)."""
    if ranks is None:
        check_abort(job_dir)
        return
    asked = False
    if ranks.rank == 0:
        try:
            check_abort(job_dir)
        except JobAborted:
            asked = True
    if ranks.any(asked, device):
        raise JobAborted(f"abort requested in {job_dir}")


class Follower:
    """A rank other than 0 after each iteration: its part of the gathers when rank 0 writes
    (``due(info)``: RELION's cadence of the job) and of the abort check."""

    def __init__(self, job_dir: Path, engines: Sequence, due: Callable[[object], bool]) -> None:
        self.job_dir, self.engines, self.due = job_dir, list(engines), due

    def write(self, *_args) -> None:
        """Send this rank's particles to rank 0 (rank 0 writes an iteration)."""
        with gathered(self.engines):
            pass

    def __call__(self, info) -> None:
        abort_on_every_rank(self.job_dir, self.engines[0].ranks, self.engines[0].particles.ft.device)
        if self.due(info):
            self.write()


def on_rank0(writer: Callable, job_dir: Path, engines: Sequence, log: logging.Logger) -> Callable:
    """Rank 0's iteration callback: the abort check with the other ranks, ``writer``, and (under
    ranks) a log line of the bytes each rank all-reduced in the iteration."""
    ranks = engines[0].ranks
    if ranks is None:
        return writer
    done = [0]

    def call(info) -> None:
        abort_on_every_rank(job_dir, ranks, engines[0].particles.ft.device)
        writer(info)
        total = sum(e.ranks.reduced_bytes for e in engines)
        it = getattr(info, "iteration", "?")
        log.info("iteration %s: %d bytes all-reduced by each of %d ranks", it, total - done[0], ranks.world)
        done[0] = total

    return call


def attach_half_ranks(halves: Sequence, index: Sequence[torch.Tensor], ranks: Ranks | None, group_index: np.ndarray,
                      load: Callable[[np.ndarray], ParticleSet]) -> None:
    """Give each half's engine its ranks (the shards of that half) and the starting noise spectra of
    the whole half (:func:`vitrify.ml.starts.initial_sigma2` of its first particles per optics group,
    read by every rank), so that every rank starts as one process does."""
    if ranks is None:
        return
    from vitrify.jobs._class2d_data import start_rows
    from vitrify.ml.starts import initial_sigma2

    for ref, rows in zip(halves, index):
        ref.ranks = ranks.part(int(rows.numel()))
        first = rows.numpy()[start_rows(group_index[rows.numpy()])]
        ref.model.sigma2 = initial_sigma2(load(first), ref.window)


def lend_gathered(obj, method: str, engines: Sequence) -> None:
    """Wrap ``obj.method`` (a writer's write) so that it runs inside :func:`gathered`."""
    inner = getattr(obj, method)

    def wrapped(*args, **kwargs):
        with gathered(engines):
            return inner(*args, **kwargs)

    setattr(obj, method, wrapped)


def shard_rows_of(ranks: Ranks | None, n_particles: int) -> np.ndarray:
    """The rows of all particles that this rank holds (all rows alone)."""
    return np.arange(n_particles) if ranks is None else np.arange(*ranks.rows)


__all__ = ["Follower", "abort_on_every_rank", "attach_half_ranks", "check_rank_count", "gathered", "half_shards",
           "join_ranks", "leave_ranks", "lend_gathered", "on_rank0", "rank_logger", "shard_rows_of", "world_size"]

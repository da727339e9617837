"""I/O throughput: STAR write/read of a large particles table, read_images from many stacks.

Run: ``.venv/bin/python benchmarks/io.py`` (writes only into a temporary directory).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.io.mrc import read_images, write_mrc
from vitrify.io.star import read_star, write_star


def bench_star(directory: Path, n_rows: int = 100_000) -> None:
    """Time writing and reading a particles STAR file of ``n_rows`` rows."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"rlnCol{k}": rng.normal(0, 1000, n_rows) for k in range(20)})
    frame["rlnImageName"] = [f"{i + 1:06d}@Extract/job007/Movies/m{i // 200:04d}.mrcs" for i in range(n_rows)]
    frame["rlnOpticsGroup"] = 1
    frame["rlnClassNumber"] = rng.integers(1, 50, n_rows)
    path = directory / "particles.star"
    start = time.perf_counter()
    write_star(path, {"particles": frame})
    written = time.perf_counter() - start
    start = time.perf_counter()
    read_star(path)
    read = time.perf_counter() - start
    print(f"STAR {n_rows} rows x {frame.shape[1]} columns ({path.stat().st_size / 1e6:.1f} MB): "
          f"write {written:.2f} s, read {read:.2f} s")


def bench_read_images(directory: Path, n_stacks: int = 50, per_stack: int = 200, box_px: int = 128) -> None:
    """Time reading particle images spread over ``n_stacks`` MRC stacks."""
    rng = np.random.default_rng(1)
    for s in range(n_stacks):
        write_mrc(directory / f"Extract/m{s:04d}.mrcs", rng.normal(size=(per_stack, box_px, box_px)), 1.0)
    names = [f"{i + 1:06d}@Extract/m{s:04d}.mrcs" for s in range(n_stacks) for i in range(per_stack)]
    rng.shuffle(names)
    start = time.perf_counter()
    read_images(names, directory)
    elapsed = time.perf_counter() - start
    print(f"read_images: {len(names)} images of {box_px}^2 px from {n_stacks} stacks in shuffled order: "
          f"{elapsed:.2f} s ({len(names) / elapsed:.0f} images/s, files in page cache)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        bench_star(Path(tmp))
        bench_read_images(Path(tmp))

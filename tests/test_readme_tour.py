"""The README's short tour runs as written (with smaller sizes) and gives useful results.

The ```bash blocks of the README section "A short tour" are joined into one bash script and run
with ``set -euo pipefail`` in an empty folder, ``vitrify`` being this interpreter's
``python -m vitrify``. Only sizes change, through :data:`SMALL` (each rule must match the README
exactly as often as it says, so a changed tour cannot silently escape it):

- ``simulate particles --n 2000`` → ``--n 200``;
- ``simulate movies --n 4 --size 1024`` → ``--n 2 --size 768`` (one CTF tile still fits);
- ``mdcatch ... --project``: adds ``--set`` keys for a small 2D classification in proc
  (5 classes, 15 VDAM iterations);
- ``class2d --K 10`` (by hand) → ``--K 5 --iter 15``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

#: (pattern, replacement, expected number of matches in the tour)
SMALL: tuple[tuple[str, str, int], ...] = (
    (r"(vitrify simulate particles .*?)--n 2000\b", r"\g<1>--n 200", 1),
    (r"(vitrify simulate movies .*?)--n 4 --size 1024\b", r"\g<1>--n 2 --size 768", 1),
    (r"(vitrify mdcatch \S+ --project \S+)", r"\g<1> --set proc__class2d__nr_classes=5 "
                                            r"--set proc__class2d__nr_iter_grad=15", 1),
    (r"(vitrify class2d .*?)--K 10\b", r"\g<1>--K 5 --iter 15", 1),
)


def tour_blocks(text: str) -> list[str]:
    """The ```bash blocks of the README's "A short tour" section, in order."""
    start = text.index("## A short tour")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```bash\n(.*?)```", text[start:end], flags=re.S)


def small_script(blocks: list[str]) -> str:
    """The tour as one bash script with the :data:`SMALL` sizes."""
    script = "\n".join(blocks)
    for pattern, replacement, expected in SMALL:
        script, count = re.subn(pattern, replacement, script)
        assert count == expected, f"README tour: {pattern!r} matched {count} times, expected {expected}"
    return "set -euo pipefail\n" + script


def test_tour_has_its_commands_and_every_size_rule_applies():
    blocks = tour_blocks(README.read_text())
    script = small_script(blocks)
    commands = [ln.split("#")[0].strip() for block in blocks for ln in block.splitlines()]
    commands = [c for c in commands if c]
    assert len(blocks) >= 4 and len(commands) >= 20
    for needed in ("simulate particles", "simulate movies", "mdcatch session/", "schemer --scheme prep --run",
                   "schemer --scheme proc --run", "class2d --i", "run-job --job"):
        assert any(needed in c for c in commands), needed
    # nothing of one machine, nothing the user does not have
    assert "/work/" not in script and ".pdb" not in script
    # a --run that would watch for 48 h is always a one-pass run in the tour
    assert all("--once" in c for c in commands if "schemer" in c and "--run" in c)


def _shim(folder: Path) -> dict[str, str]:
    """An environment whose ``vitrify`` is ``python -m vitrify`` of this interpreter."""
    folder.mkdir()
    shim = folder / "vitrify"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vitrify "$@"\n')
    shim.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}", "VITRIFY_QUIET": "1"}


def _rows(star: Path, block: str) -> int:
    from vitrify.io.star import read_star

    return len(read_star(star)[block])


@pytest.mark.slow
def test_readme_tour_runs_as_written(tmp_path):
    script = small_script(tour_blocks(README.read_text()))
    work = tmp_path / "tour"
    work.mkdir()
    run = subprocess.run(["bash", "-c", script], cwd=work, env=_shim(tmp_path / "bin"),
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])
    # simulation: particles with truth, movies with metadata
    assert _rows(work / "sim" / "particles.star", "particles") == 200
    assert len(list((work / "session" / "Movies").glob("mov_*.tiff"))) == 2
    # automatic processing: proc ended after 2D, with micrographs kept, particles and classes
    project = work / "myproject"
    assert "scheme proc: Succeeded at node EXIT_after_2d" in run.stdout
    assert "scheme prep: Succeeded at node WAIT: one pass done" in run.stdout
    selected = sorted(project.glob("Select/job*/micrographs.star"))
    assert selected and _rows(selected[0], "micrographs") >= 1
    particles = sorted(project.glob("Extract/job*/particles.star"))
    assert particles and _rows(particles[0], "particles") >= 10
    assert sorted(project.glob("Class2D/job*/run_it015_classes.mrcs"))
    assert (project / "pipeline.png").stat().st_size > 0
    # by hand: the same chain, RELION-4 outputs
    byhand = work / "byhand"
    assert _rows(byhand / "Extract" / "job005" / "particles.star", "particles") >= 10
    assert (byhand / "Class2D" / "job006" / "run_it015_classes.mrcs").is_file()
    assert '"pixel_size_angst": 1.5' in run.stdout  # mdcatch --read --json

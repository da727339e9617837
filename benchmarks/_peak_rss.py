"""Run ``python -m vitrify ARGS`` and write this process's peak resident memory.

For benchmarks/scaleout.py: ``torchrun ... benchmarks/_peak_rss.py class2d ...`` (or ``python
benchmarks/_peak_rss.py class2d ...``) writes ``$VITRIFY_RSS_DIR/rank<RANK>.txt`` (bytes, from
``getrusage``) when the command ends, whichever vitrify version ``PYTHONPATH`` selects: the same
measurement before and after a change.
"""

from __future__ import annotations

import os
import resource
import runpy
import sys
from pathlib import Path


def main() -> None:
    """Run vitrify with this script's arguments, then write the peak RSS."""
    sys.argv = ["vitrify", *sys.argv[1:]]
    try:
        runpy.run_module("vitrify", run_name="__main__", alter_sys=True)
    finally:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out = Path(os.environ["VITRIFY_RSS_DIR"]) / f"rank{os.environ.get('RANK', '0')}.txt"
        out.write_text(str(peak))


if __name__ == "__main__":
    main()

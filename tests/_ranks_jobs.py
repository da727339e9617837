"""Run several ``vitrify`` commands one after another in this process (under torchrun: as one rank).

``python _ranks_jobs.py 'ARGV1' 'ARGV2' ...`` (each a JSON list of words): one torchrun launch runs
every job's ranks, so the equivalence tests pay the start of the ranks once. Each job joins the
torch.distributed group and leaves it at its end. Exit status: the first failure's.
"""

from __future__ import annotations

import json
import sys


def main(commands: list[str]) -> int:
    from vitrify.cli.main import main as vitrify

    for command in commands:
        try:
            vitrify(["-q", *json.loads(command)])
        except SystemExit as done:
            if done.code not in (0, None):
                return int(done.code) if isinstance(done.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Run several ``vitrify`` commands one after another in this process (under torchrun: as one rank).

``python _ranks_jobs.py 'ARGV1' 'ARGV2' ...`` (each a JSON list of words): one torchrun launch runs
every job's ranks, so the equivalence tests pay the start of the ranks once. The first job joins
the torch.distributed group and the others find it joined (a group destroyed and made again in one
process can meet the old group's addresses in torchrun's store: its keys start again from 0), so the
jobs' leaving is put off to the end. Exit status: the first failure's.
"""

from __future__ import annotations

import json
import sys


def main(commands: list[str]) -> int:
    import torch.distributed as dist

    from vitrify.cli.main import main as vitrify

    leave, dist.destroy_process_group = dist.destroy_process_group, lambda *_args, **_kwargs: None
    try:
        for command in commands:
            try:
                vitrify(["-q", *json.loads(command)])
            except SystemExit as done:
                if done.code not in (0, None):
                    return int(done.code) if isinstance(done.code, int) else 1
        return 0
    finally:
        if dist.is_initialized():
            leave()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

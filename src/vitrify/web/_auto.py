"""What ``vitrify auto`` and the schemer say went wrong, read from their logs for "what failed".

- ``Auto/auto.log``: the last run's stop reason when it failed (a full disk, the session folder
  gone, jobs that failed also when retried), and a session folder that has gone and is not back
  yet while the run waits for it;
- ``Schemes/*/schemer.log``: the jobs a scheme ran again after they failed (``retrying it``).
"""

from __future__ import annotations

import re
from pathlib import Path

from vitrify.pipeline.auto import AUTO_DIR, LOG_FILE
from vitrify.web._files import tail_text

_START, _FAILED = "vitrify auto: ", "vitrify auto failed: "
_ENDED = re.compile(r"^vitrify auto (finished|stopped|failed): ")
_GONE, _BACK = re.compile(r"^the session folder .* has gone "), re.compile(r"^the session folder .* is back ")
_RETRIED = re.compile(r"job \S+ \((\S+/job\d+/)\) failed.*; retrying it")
_LOG_BYTES = 64 * 1024


def _messages(path: Path) -> list[str]:
    """The messages of ``auto.log`` lines (``DATE TIME +ELAPSED MESSAGE``), last 64 kB."""
    return [parts[3] for parts in (line.split(" ", 3) for line in tail_text(path, _LOG_BYTES).splitlines())
            if len(parts) == 4]


def auto_problems(root: Path) -> list[dict]:
    """Failure entries from the last ``vitrify auto`` run: its stop reason, or a session folder gone."""
    failed = gone = None
    for message in _messages(root / AUTO_DIR / LOG_FILE):
        if message.startswith(_START) or _ENDED.match(message):
            failed = gone = None
        if message.startswith(_FAILED):
            failed = message[len(_FAILED):]
        elif _GONE.match(message):
            gone = message
        elif _BACK.match(message):
            gone = None
    return [{"job": "vitrify auto", "kind": "failed", "message": text} for text in (gone, failed) if text]


def retried_jobs(root: Path) -> set[str]:
    """Pipeline jobs that a scheme ran again after they failed."""
    found: set[str] = set()
    for log in sorted((root / "Schemes").glob("*/schemer.log")):
        found.update(_RETRIED.findall(tail_text(log, _LOG_BYTES)))
    return found

"""A simulated microscope at work: copy a finished session into a session folder over time.

``vitrify simulate movies`` writes a whole session at once; an on-the-fly run must instead see
movies appear one after the other, each growing for a while before it is complete, as EPU or
SerialEM write them. :func:`replay_session` does that from a simulated session: the gain
reference first, then per movie its metadata files (XML, mdoc) and the movie itself in
``chunks`` pieces ``chunk_s`` apart, the next movie ``interval_s`` after the previous one began.
The truth files stay where they are (in the source folder).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

MOVIE_SUFFIXES = (".tiff", ".tif", ".mrc", ".mrcs", ".eer")
_SIDECARS = (".xml", ".mdoc")


def session_movies(source_dir: str | Path, folder: str = "Movies") -> list[Path]:
    """The movies of a simulated session (``source/Movies/mov_*``), in acquisition order."""
    return sorted(p for p in (Path(source_dir) / folder).glob("mov_*") if p.suffix.lower() in MOVIE_SUFFIXES)


def _write_in_chunks(source: Path, target: Path, chunks: int, chunk_s: float,
                     stopped: Callable[[], bool]) -> None:
    data = source.read_bytes()
    step = max(1, -(-len(data) // max(chunks, 1)))
    with open(target, "wb") as handle:   # deliberately not atomic: a detector writing a movie
        for start in range(0, len(data), step):
            handle.write(data[start: start + step])
            handle.flush()
            if start + step < len(data) and not stopped():
                time.sleep(chunk_s)


def replay_session(source_dir: str | Path, session_dir: str | Path, *, interval_s: float,
                   chunks: int = 4, chunk_s: float = 0.2, folder: str = "Movies",
                   stopped: Callable[[], bool] = lambda: False,
                   wrote: Callable[[Path, float], None] = lambda path, t: None) -> list[Path]:
    """Copy the session's movies into ``session_dir/folder`` one by one; return the new paths.

    ``wrote(path, time.time())`` is called once each movie is complete (for benchmarks).
    """
    source, target = Path(source_dir) / folder, Path(session_dir) / folder
    target.mkdir(parents=True, exist_ok=True)
    for gain in source.glob("gain*"):
        shutil.copyfile(gain, target / gain.name)
    written = []
    for movie in session_movies(source_dir, folder):
        if stopped():
            break
        began = time.monotonic()
        stem = movie.name.split(".", 1)[0]
        for sidecar in sorted(p for p in source.glob(f"{stem}*") if p.name.endswith(_SIDECARS)):
            shutil.copyfile(sidecar, target / sidecar.name)
        _write_in_chunks(movie, target / movie.name, chunks, chunk_s, stopped)
        written.append(target / movie.name)
        wrote(target / movie.name, time.time())
        time.sleep(max(0.0, interval_s - (time.monotonic() - began)))
    return written


def replay_in_background(source_dir: str | Path, session_dir: str | Path, **options) -> threading.Thread:
    """:func:`replay_session` in a daemon thread (started); ``join()`` it to wait for the end."""
    thread = threading.Thread(target=replay_session, args=(source_dir, session_dir), kwargs=options,
                              name="vitrify-microscope", daemon=True)
    thread.start()
    return thread

"""Stable-file detection: a movie is ready only once it stopped changing and reads; bad ones are
skipped with the reason; a rerun keeps what was linked."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from vitrify.io.errors import InputError
from vitrify.io.movies import write_movie
from vitrify.pipeline.movie_watch import RECORD_FILE, MovieWatcher


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _movie_bytes(tmp_path, rng) -> bytes:
    path = tmp_path / "whole.tiff"
    write_movie(path, rng.poisson(2.0, size=(3, 32, 32)).astype(np.uint8))
    return path.read_bytes()


def _watcher(tmp_path, clock, stable_s=2.0) -> MovieWatcher:
    return MovieWatcher(tmp_path / "session", "Movies/mov_*.tiff", tmp_path / "project" / "Ready", stable_s, clock)


def test_growing_movie_waits_until_unchanged_then_links_with_its_metadata(tmp_path, rng):
    data, clock = _movie_bytes(tmp_path, rng), _Clock()
    movies = tmp_path / "session" / "Movies"
    movies.mkdir(parents=True)
    (movies / "mov_00001.xml").write_text("<xml/>")
    movie = movies / "mov_00001.tiff"
    movie.write_bytes(data[: len(data) // 2])
    watcher = _watcher(tmp_path, clock)
    assert watcher.scan() == [] and watcher.pending == 1
    clock.now = 1.0
    with open(movie, "ab") as handle:       # still being written: the clock starts again
        handle.write(data[len(data) // 2:])
    os.utime(movie, ns=(1, 1))
    assert watcher.scan() == []
    clock.now = 2.5                         # 1.5 s unchanged: not yet
    assert watcher.scan() == []
    clock.now = 3.0                         # 2 s unchanged and it reads: ready
    assert watcher.scan() == ["Movies/mov_00001.tiff"] and watcher.pending == 0
    ready = tmp_path / "project" / "Ready" / "Movies"
    assert (ready / "mov_00001.tiff").resolve() == movie.resolve()
    assert (ready / "mov_00001.xml").is_symlink()
    assert json.loads((ready.parent / RECORD_FILE).read_text()) == {"ready": ["Movies/mov_00001.tiff"],
                                                                      "skipped": {}}
    assert watcher.scan() == []             # linked once


def test_truncated_movie_is_skipped_with_the_reason_until_it_changes(tmp_path, rng):
    data, clock = _movie_bytes(tmp_path, rng), _Clock()
    movies = tmp_path / "session" / "Movies"
    movies.mkdir(parents=True)
    movie = movies / "mov_00002.tiff"
    movie.write_bytes(data[: len(data) - 500])   # the writer died: it never grows again
    watcher = _watcher(tmp_path, clock, stable_s=1.0)
    watcher.scan()
    clock.now = 5.0
    assert watcher.scan() == []
    assert "truncated or corrupt TIFF" in watcher.skipped["Movies/mov_00002.tiff"]
    record = json.loads((tmp_path / "project" / "Ready" / RECORD_FILE).read_text())
    assert record["skipped"] == watcher.skipped and record["ready"] == []
    assert not (tmp_path / "project" / "Ready" / "Movies" / "mov_00002.tiff").exists()
    clock.now = 9.0
    assert watcher.scan() == [] and watcher.pending == 0    # not read again while unchanged
    movie.write_bytes(data)                                 # copied again, complete this time
    watcher.scan()
    clock.now = 11.0
    assert watcher.scan() == ["Movies/mov_00002.tiff"] and watcher.skipped == {}


def test_rerun_keeps_the_linked_movies_and_a_vanished_session_is_an_error(tmp_path, rng):
    data, clock = _movie_bytes(tmp_path, rng), _Clock()
    movies = tmp_path / "session" / "Movies"
    movies.mkdir(parents=True)
    (movies / "mov_00001.tiff").write_bytes(data)
    assert _watcher(tmp_path, clock, stable_s=0.0).scan() == ["Movies/mov_00001.tiff"]
    again = _watcher(tmp_path, clock, stable_s=0.0)
    assert again.ready == ["Movies/mov_00001.tiff"] and again.scan() == []
    (movies / "mov_00001.tiff").unlink()
    movies.rmdir()
    (tmp_path / "session").rmdir()
    with pytest.raises(InputError, match="session folder has gone"):
        again.scan()

"""EER movies: genuine EER-coded TIFF pages (tests/_eer_encode.py) decoded through vitrify
(tifffile + imagecodecs): exact counts, grouping, 8K sub-pixel placement, bad and cut files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from _eer_encode import write_eer

from vitrify.errors import InputError
from vitrify.io._eer import EerMovie
from vitrify.io.movies import open_movie, read_movie


def _events(rng, n, ny=48, nx=40, rate=0.03) -> np.ndarray:
    frames = (rng.random((n, ny, nx)) < rate).astype(np.uint8)
    frames[0, 0, 0] = frames[0, -1, -1] = 1       # events on the first and the last pixel
    frames[1, 5:30] = 0                           # runs longer than any run field (> 255 pixels)
    frames[2] = 0                                 # an internal frame without events
    return frames


@pytest.mark.parametrize("compression", [65000, 65001, 65002])
def test_decoded_counts_equal_the_encoded_events(tmp_path, compression):
    frames = _events(np.random.default_rng(compression), 6)
    write_eer(tmp_path / "m.eer", frames, compression)
    with tifffile.TiffFile(tmp_path / "m.eer") as tif:
        assert tif.is_eer and tif.pages[0].compression == compression
    got = read_movie(tmp_path / "m.eer", eer_grouping=1)
    assert got.dtype == np.float32 and got.shape == frames.shape
    np.testing.assert_array_equal(got, frames)    # stored row order (RELION does not flip EER)


def test_grouping_sums_whole_groups_and_drops_the_rest(tmp_path):
    frames = _events(np.random.default_rng(1), 11, rate=0.2)
    write_eer(tmp_path / "m.eer", frames)
    expected = frames[:9].reshape(3, 3, *frames.shape[1:]).sum(1)   # frames 10, 11 dropped
    np.testing.assert_array_equal(read_movie(tmp_path / "m.eer", eer_grouping=3), expected)
    with open_movie(tmp_path / "m.eer", eer_grouping=3) as movie:
        assert movie.shape == (3, 48, 40) and len(movie) == 3
        np.testing.assert_array_equal(movie[1], expected[1])
        np.testing.assert_array_equal(movie[-1], expected[2])
    with EerMovie(tmp_path / "m.eer", grouping=4) as movie:
        assert movie.n_internal_frames == 11 and movie.shape[0] == 2
        np.testing.assert_array_equal(movie[1], frames[4:8].sum(0))
    assert read_movie(tmp_path / "m.eer", eer_grouping=11).sum() == frames.sum()


def test_default_grouping_is_relions_32(tmp_path):
    frames = _events(np.random.default_rng(2), 70, ny=8, nx=8, rate=0.3)
    write_eer(tmp_path / "m.eer", frames)
    got = read_movie(tmp_path / "m.eer")
    assert got.shape == (2, 8, 8)
    np.testing.assert_array_equal(got[1], frames[32:64].sum(0))


def test_upsampling_2_places_events_by_their_sub_pixel_bits(tmp_path):
    rng = np.random.default_rng(3)
    frames = _events(rng, 4, ny=16, nx=12, rate=0.3)
    sub_yx = rng.integers(0, 4, size=(4, 2, 16, 12))
    write_eer(tmp_path / "m.eer", frames, 65001, sub_yx)
    expected = np.zeros((4, 32, 24), np.float32)
    n, y, x = np.nonzero(frames)
    expected[n, 2 * y + sub_yx[n, 0, y, x] // 2, 2 * x + sub_yx[n, 1, y, x] // 2] = 1
    got = read_movie(tmp_path / "m.eer", eer_grouping=2, eer_upsampling=2)
    np.testing.assert_array_equal(got, expected.reshape(2, 2, 32, 24).sum(1))
    # at 1x the sub-pixel bits are ignored
    np.testing.assert_array_equal(read_movie(tmp_path / "m.eer", eer_grouping=1), frames)


def test_bad_options_are_input_errors(tmp_path):
    write_eer(tmp_path / "m.eer", _events(np.random.default_rng(4), 4))
    with pytest.raises(InputError, match="upsampling 3.*1 \\(sensor size"):
        read_movie(tmp_path / "m.eer", eer_upsampling=3)
    with pytest.raises(InputError, match="grouping 0"):
        open_movie(tmp_path / "m.eer", eer_grouping=0)
    with pytest.raises(InputError, match=r"m\.eer: eer_grouping: 4 internal frames, fewer than the EER grouping 32"):
        read_movie(tmp_path / "m.eer")


def test_truncated_or_corrupt_eer_is_an_input_error(tmp_path):
    write_eer(tmp_path / "m.eer", _events(np.random.default_rng(5), 6))
    data = (tmp_path / "m.eer").read_bytes()
    for cut in (len(data) - 3, len(data) // 2, 100):
        (tmp_path / "cut.eer").write_bytes(data[:cut])
        with pytest.raises(InputError, match=r"cut\.eer: truncated"):
            read_movie(tmp_path / "cut.eer", eer_grouping=1)
    with tifffile.TiffFile(tmp_path / "m.eer") as tif:
        offset, count = tif.pages[3].dataoffsets[0], tif.pages[3].databytecounts[0]
    garbled = bytearray(data)
    garbled[offset:offset + count] = b"\xff" * count   # runs of all ones past the last pixel
    (tmp_path / "bad.eer").write_bytes(bytes(garbled))
    with open_movie(tmp_path / "bad.eer", eer_grouping=2) as movie:
        movie[0]
        with pytest.raises(InputError, match=r"bad\.eer: corrupt EER internal frame 4 of 6"):
            movie[1]


def test_eer_gain_follows_relions_rules(tmp_path):
    from vitrify.io.movies import read_eer_gain
    from vitrify.io.mrc import write_mrc
    from vitrify.io.movies import transform_gain

    raw = np.random.default_rng(6).uniform(0.5, 2.0, (6, 8)).astype(np.float32)
    tifffile.imwrite(tmp_path / "falcon.gain", raw)     # multiplicative, used in stored row order
    np.testing.assert_array_equal(read_eer_gain(tmp_path / "falcon.gain", (6, 8)), raw)
    upsampled = read_eer_gain(tmp_path / "falcon.gain", (12, 16))      # 4K gain for 8K frames
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        np.testing.assert_array_equal(upsampled[dy::2, dx::2], raw)
    np.testing.assert_allclose(read_eer_gain(tmp_path / "falcon.gain", (3, 4)),
                               raw[0::2, 0::2] + raw[1::2, 0::2] + raw[0::2, 1::2] + raw[1::2, 1::2], rtol=1e-6)
    np.testing.assert_array_equal(read_eer_gain(tmp_path / "falcon.gain", (8, 6), rotation=1),
                                  transform_gain(raw, 1))
    inverse = raw.copy()
    inverse[2, 3] = 0                                   # other formats hold the inverse; 0 is a defect
    write_mrc(tmp_path / "inverse.mrc", inverse, 1.0)
    got = read_eer_gain(tmp_path / "inverse.mrc", (6, 8))
    assert got[2, 3] == 0
    keep = inverse != 0
    np.testing.assert_allclose(got[keep], inverse.mean() / inverse[keep], rtol=1e-5)
    with pytest.raises(InputError, match=r"falcon\.gain: fn_gain_ref: gain reference is 8x6, EER frames are 10x10"):
        read_eer_gain(tmp_path / "falcon.gain", (10, 10))

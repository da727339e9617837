"""Movies (TIFF incl. LZW, MRC) and gain references with RELION's rotation/flip options."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from vitrify.io.errors import InputError
from vitrify.io.movies import gain_option_index, read_gain, read_movie, transform_gain, write_movie
from vitrify.io.mrc import read_mrc, write_mrc


@pytest.fixture
def counts(rng):
    """A small counting movie: 6 frames of 40 x 56 px, Poisson(1.2) electrons per pixel."""
    return rng.poisson(1.2, (6, 40, 56)).astype(np.uint8)


@pytest.mark.parametrize("compression", [None, "lzw"])
def test_tiff_movie_round_trip(tmp_path, counts, compression):
    write_movie(tmp_path / "m.tif", counts, compression, pixel_size_angst=0.83)
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:
        assert len(tif.pages) == 6
        assert tif.pages[0].compression == (tifffile.COMPRESSION.LZW if compression else tifffile.COMPRESSION.NONE)
    movie = read_movie(tmp_path / "m.tif")
    assert movie.dtype == np.uint8 and movie.shape == (6, 40, 56)
    np.testing.assert_array_equal(movie, counts)


def test_tiff_rows_follow_relion_flip(tmp_path, counts):
    # A TIFF written by another program: RELION (and we) read it flipped along y.
    tifffile.imwrite(tmp_path / "ext.tiff", counts, compression="lzw")
    np.testing.assert_array_equal(read_movie(tmp_path / "ext.tiff"), counts[:, ::-1])


def test_lzw_compresses_sparse_counts(tmp_path, counts):
    write_movie(tmp_path / "raw.tif", counts)
    write_movie(tmp_path / "lzw.tif", counts, "lzw")
    assert (tmp_path / "lzw.tif").stat().st_size < 0.7 * (tmp_path / "raw.tif").stat().st_size


def test_mrc_movie_round_trip_and_dtype_option(tmp_path, counts):
    frames = counts.astype(np.uint16) * 100
    write_movie(tmp_path / "m.mrcs", frames, pixel_size_angst=1.1)
    movie = read_movie(tmp_path / "m.mrcs")
    assert movie.dtype == np.uint16
    np.testing.assert_array_equal(movie, frames)
    assert read_movie(tmp_path / "m.mrcs", dtype=np.float32).dtype == np.float32
    assert read_mrc(tmp_path / "m.mrcs")[1] == pytest.approx(1.1)


def test_corrupt_and_unsupported_movies(tmp_path, counts):
    write_movie(tmp_path / "m.tif", counts, "lzw")
    data = (tmp_path / "m.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.tif: truncated or corrupt TIFF"):
        read_movie(tmp_path / "cut.tif")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00" + b"\xff" * 100)
    with pytest.raises(InputError, match=r"junk\.tif: truncated or corrupt TIFF"):
        read_movie(tmp_path / "junk.tif")
    (tmp_path / "notiff.tif").write_bytes(b"hello world" * 10)
    with pytest.raises(InputError, match=r"notiff\.tif: truncated or corrupt TIFF"):
        read_movie(tmp_path / "notiff.tif")
    (tmp_path / "x.eer").write_bytes(b"\0" * 10)
    with pytest.raises(InputError, match=r"x\.eer: truncated or corrupt EER"):
        read_movie(tmp_path / "x.eer")
    with pytest.raises(InputError, match="file not found"):
        read_movie(tmp_path / "absent.tif")
    with pytest.raises(ValueError, match="cannot be compressed"):
        write_movie(tmp_path / "m.mrcs", counts, "lzw")


# Hand-made 2 x 3 gain, as displayed with row 0 on top:   0 1 2
#                                                          3 4 5
GAIN = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.float32)
EXPECTED = {
    (0, 0): [[0, 1, 2], [3, 4, 5]],
    (1, 0): [[3, 0], [4, 1], [5, 2]],  # 90 degrees clockwise: left column (3 over 0) becomes the top row
    (2, 0): [[5, 4, 3], [2, 1, 0]],
    (3, 0): [[2, 5], [1, 4], [0, 3]],  # 270 clockwise = 90 counter-clockwise
    (0, 1): [[3, 4, 5], [0, 1, 2]],  # upside down
    (0, 2): [[2, 1, 0], [5, 4, 3]],  # left to right
    (1, 1): [[5, 2], [4, 1], [3, 0]],  # rotation first, then flip
    (1, 2): [[0, 3], [1, 4], [2, 5]],
}


@pytest.mark.parametrize(("rotation", "flip"), list(EXPECTED))
def test_gain_rotation_and_flip_against_hand_made_arrays(tmp_path, rotation, flip):
    write_mrc(tmp_path / "gain.mrc", GAIN, 0.8)
    gain = read_gain(tmp_path / "gain.mrc", rotation=rotation, flip=flip)
    assert gain.dtype == np.float32
    np.testing.assert_array_equal(gain, np.array(EXPECTED[rotation, flip], dtype=np.float32))


def test_four_clockwise_steps_are_identity_and_tiff_gain_matches_mrc(tmp_path, rng):
    gain = rng.uniform(0.8, 1.2, (6, 8)).astype(np.float32)
    np.testing.assert_array_equal(transform_gain(transform_gain(gain, 2), 2), gain)
    np.testing.assert_array_equal(transform_gain(transform_gain(gain, 1), 3), gain)
    write_mrc(tmp_path / "gain.mrc", gain, 1.0)
    write_movie(tmp_path / "gain.tif", gain[np.newaxis])
    np.testing.assert_array_equal(read_gain(tmp_path / "gain.tif", 1, 2), read_gain(tmp_path / "gain.mrc", 1, 2))
    (tmp_path / "gain.tif").rename(tmp_path / "K3.gain")  # Gatan/SerialEM .gain files are TIFF
    np.testing.assert_array_equal(read_gain(tmp_path / "K3.gain"), gain)


def test_gain_errors(tmp_path, counts):
    write_mrc(tmp_path / "gain.mrc", GAIN, 1.0)
    with pytest.raises(InputError, match="gain_rot: gain rotation 4"):
        read_gain(tmp_path / "gain.mrc", rotation=4)
    with pytest.raises(InputError, match="gain_flip: gain flip 3"):
        read_gain(tmp_path / "gain.mrc", flip=3)
    write_movie(tmp_path / "movie.tif", counts)
    with pytest.raises(InputError, match="gain reference has 6 frames"):
        read_gain(tmp_path / "movie.tif")
    write_mrc(tmp_path / "nan.mrc", np.full((4, 4), np.nan), 1.0)
    with pytest.raises(InputError, match="NaN"):
        read_gain(tmp_path / "nan.mrc")


def test_gain_option_index_parses_job_star_values():
    assert gain_option_index("No rotation (0)") == 0
    assert gain_option_index("90 degrees (1)") == 1
    assert gain_option_index("Flip left to right (2)") == 2
    assert gain_option_index("3") == 3 and gain_option_index(2) == 2
    with pytest.raises(InputError):
        gain_option_index("sideways")


@pytest.mark.parametrize("name", ["m.tif", "m.mrcs"])
def test_open_movie_reads_frames_on_demand(tmp_path, counts, name):
    from vitrify.io.movies import open_movie

    write_movie(tmp_path / name, counts, "lzw" if name.endswith("tif") else None)
    with open_movie(tmp_path / name) as movie:
        assert len(movie) == 6 and tuple(movie.shape) == (6, 40, 56)
        np.testing.assert_array_equal(movie[4], counts[4])
        np.testing.assert_array_equal(np.stack([movie[i] for i in range(len(movie))]), read_movie(tmp_path / name))
        with pytest.raises(InputError, match="frame 7 requested from a movie of 6"):
            movie[6]


def _write_page_by_page(path, frames, compression):
    # Each page's directory before its data, as cameras write movies frame by frame.
    with tifffile.TiffWriter(path) as writer:
        for frame in frames:
            writer.write(frame, contiguous=False, compression=compression)


@pytest.mark.parametrize("compression", [None, "lzw"])
@pytest.mark.parametrize("layout,keep", [("ours", 0.7), ("ours", 0.3), ("pages", 0.7), ("pages", -10)])
def test_cut_tiff_is_an_error_not_fewer_frames(tmp_path, counts, compression, layout, keep):
    # tifffile only logs a broken page chain and returns the pages before the cut, and reads
    # a page whose data runs past the end as if whole: neither may pass as a shorter movie.
    from vitrify.io.movies import open_movie

    if layout == "ours":
        write_movie(tmp_path / "m.tif", counts, compression)
    else:
        _write_page_by_page(tmp_path / "m.tif", counts[:, ::-1], compression)
    np.testing.assert_array_equal(read_movie(tmp_path / "m.tif"), counts)  # whole file reads
    data = (tmp_path / "m.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: int(len(data) * keep) if keep > 0 else keep])
    with pytest.raises(InputError, match=r"cut\.tif: truncated"):
        read_movie(tmp_path / "cut.tif")
    with pytest.raises(InputError, match=r"cut\.tif: truncated"):
        with open_movie(tmp_path / "cut.tif") as movie:
            [movie[i] for i in range(len(movie))]

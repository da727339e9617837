"""MRC/MRCS: modes, header pixel size, stacks, lazy reading, N@stack names, corrupt files."""

from __future__ import annotations

import io

import mrcfile
import numpy as np
import pytest

import vitrify.io.mrc as mrc_module
from vitrify.io._mrc_modes import pack_4bit
from vitrify.io.errors import InputError
from vitrify.io.mrc import open_stack, read_images, read_mrc, read_mrc_header, write_mrc, write_mrc_array


@pytest.mark.parametrize(
    ("dtype", "mode"),
    [(np.int8, 0), (np.int16, 1), (np.float32, 2), (np.uint16, 6), (np.float16, 12)],
)
def test_modes_are_read_with_their_values(tmp_path, rng, dtype, mode):
    data = (rng.uniform(-100, 100, (3, 10, 12)) if mode not in (6,) else rng.uniform(0, 60000, (3, 10, 12)))
    data = data.astype(dtype)
    write_mrc_array(tmp_path / "a.mrcs", data, 1.2)
    with mrcfile.open(tmp_path / "a.mrcs") as handle:
        assert int(handle.header.mode) == mode
    kept, pixel = read_mrc(tmp_path / "a.mrcs", dtype=None)
    assert kept.dtype == dtype and pixel == pytest.approx(1.2)
    np.testing.assert_array_equal(kept, data)
    as_float, _ = read_mrc(tmp_path / "a.mrcs")
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float, data.astype(np.float32))


def test_float16_round_trip_is_exact_mode_12(tmp_path, rng):
    data = rng.normal(0, 3, (4, 16, 16)).astype(np.float32)
    write_mrc(tmp_path / "h.mrcs", data, 0.9, float16=True)
    assert read_mrc_header(tmp_path / "h.mrcs")["mode"] == 12
    back, _ = read_mrc(tmp_path / "h.mrcs", dtype=None)
    assert back.dtype == np.float16
    np.testing.assert_array_equal(back, data.astype(np.float16))
    write_mrc(tmp_path / "h2.mrcs", back, 0.9, float16=True)
    assert (tmp_path / "h2.mrcs").read_bytes()[1024:] == (tmp_path / "h.mrcs").read_bytes()[1024:]


def test_header_pixel_size_cell_and_kind(tmp_path, rng):
    volume = rng.normal(size=(8, 10, 12)).astype(np.float32)
    write_mrc(tmp_path / "map.mrc", volume, 2.5)
    with mrcfile.open(tmp_path / "map.mrc") as handle:
        assert tuple(float(c) for c in handle.header.cella.tolist()) == pytest.approx((30.0, 25.0, 20.0))
        assert int(handle.header.ispg) == 1 and int(handle.header.mode) == 2
        assert handle.header.label[0].startswith(b"vitrify")
        assert float(handle.header.dmax) == pytest.approx(volume.max())
    write_mrc(tmp_path / "s.mrcs", volume, 2.5)
    assert read_mrc_header(tmp_path / "s.mrcs")["is_stack"]
    assert not read_mrc_header(tmp_path / "map.mrc")["is_stack"]


def test_shapes_image_one_image_stack_and_row_order(tmp_path):
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_mrc(tmp_path / "one.mrc", image, 1.0)
    write_mrc(tmp_path / "one.mrcs", image, 1.0)
    assert read_mrc(tmp_path / "one.mrc")[0].shape == (3, 4)
    stack, _ = read_mrc(tmp_path / "one.mrcs")
    assert stack.shape == (1, 3, 4)
    # Row 0 is the first row stored in the file, x fastest: no flip.
    raw = np.frombuffer((tmp_path / "one.mrc").read_bytes()[1024:], dtype="<f4")
    np.testing.assert_array_equal(raw, image.ravel())


def _truncate(path, n_bytes):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - n_bytes])


def test_truncated_file_names_the_file(tmp_path, rng):
    write_mrc(tmp_path / "cut.mrcs", rng.normal(size=(5, 16, 16)), 1.0)
    _truncate(tmp_path / "cut.mrcs", 300)
    for read in (read_mrc, open_stack):
        with pytest.raises(InputError, match=r"cut\.mrcs: truncated or corrupt MRC file"):
            read(tmp_path / "cut.mrcs")
    with pytest.raises(InputError, match=r"cut\.mrcs: truncated or corrupt"):
        read_images(["000001@cut.mrcs"], tmp_path)


def test_corrupt_missing_and_complex_files(tmp_path):
    (tmp_path / "junk.mrc").write_bytes(b"x" * 2000)
    with pytest.raises(InputError, match=r"junk\.mrc: truncated or corrupt"):
        read_mrc(tmp_path / "junk.mrc")
    (tmp_path / "tiny.mrc").write_bytes(b"\0" * 10)
    with pytest.raises(InputError, match=r"tiny\.mrc: truncated"):
        read_mrc(tmp_path / "tiny.mrc")
    with pytest.raises(InputError, match="file not found"):
        read_mrc(tmp_path / "absent.mrc")
    with mrcfile.new(tmp_path / "c.mrc") as handle:
        handle.set_data(np.zeros((4, 4), np.complex64))
    with pytest.raises(InputError, match="mode 4 .complex float32. is not supported"):
        read_mrc(tmp_path / "c.mrc")


def test_mode_101_four_bit(tmp_path, rng):
    values = rng.integers(0, 16, (2, 5, 7)).astype(np.uint8)
    with mrcfile.new(tmp_path / "b.mrc") as handle:
        handle.set_data(np.zeros((2, 5, 7), np.int8))
        handle.voxel_size = 0.8
    header = bytearray((tmp_path / "b.mrc").read_bytes()[:1024])
    header[12:16] = np.int32(101).tobytes()
    (tmp_path / "b.mrc").write_bytes(bytes(header) + pack_4bit(values))
    data, pixel = read_mrc(tmp_path / "b.mrc", dtype=None)
    np.testing.assert_array_equal(data, values)
    assert pixel == pytest.approx(0.8)
    with open_stack(tmp_path / "b.mrc") as stack:
        np.testing.assert_array_equal(stack[1], values[1])


def test_open_stack_is_lazy_and_indexable(tmp_path, rng):
    data = rng.normal(size=(20, 8, 8)).astype(np.float32)
    write_mrc(tmp_path / "big.mrcs", data, 1.3)
    with open_stack(tmp_path / "big.mrcs") as stack:
        assert isinstance(stack._data, np.memmap)
        assert len(stack) == 20 and stack.shape == (20, 8, 8) and stack.pixel_size_angst == pytest.approx(1.3)
        np.testing.assert_array_equal(stack[3], data[3])
        np.testing.assert_array_equal(stack[2:5], data[2:5])
        np.testing.assert_array_equal(stack.read([7, 1, 7]), data[[7, 1, 7]])
        with pytest.raises(InputError, match="image 21 requested from a stack of 20"):
            stack.read([20])
        with pytest.raises(InputError, match="image 26 requested"):
            stack[25]


def test_read_images_groups_by_stack_and_keeps_order(tmp_path, rng, monkeypatch):
    a = rng.normal(size=(6, 8, 8)).astype(np.float32)
    b = rng.normal(size=(4, 8, 8)).astype(np.float32)
    write_mrc(tmp_path / "Extract/a.mrcs", a, 1.0)
    write_mrc(tmp_path / "Extract/b.mrcs", b, 1.0)
    names = ["000003@Extract/a.mrcs", "000001@Extract/b.mrcs", "000006@Extract/a.mrcs",
             "000001@Extract/a.mrcs", "000004@Extract/b.mrcs"]
    opened = []
    original = mrc_module.open_stack
    monkeypatch.setattr(mrc_module, "open_stack", lambda p: opened.append(p) or original(p))
    images = read_images(names, tmp_path)
    np.testing.assert_array_equal(images, np.stack([a[2], b[0], a[5], a[0], b[3]]))
    assert len(opened) == 2
    with pytest.raises(InputError, match="image 7 requested from a stack of 6"):
        read_images(["000007@Extract/a.mrcs"], tmp_path)


def test_read_images_rejects_mixed_sizes(tmp_path):
    write_mrc(tmp_path / "a.mrcs", np.zeros((2, 8, 8)), 1.0)
    write_mrc(tmp_path / "b.mrcs", np.zeros((2, 6, 6)), 1.0)
    with pytest.raises(InputError, match="6x6 px while earlier stacks have 8x8"):
        read_images(["1@a.mrcs", "1@b.mrcs"], tmp_path)


def test_write_is_atomic_on_failure(tmp_path):
    write_mrc(tmp_path / "keep.mrc", np.ones((4, 4)), 1.0)
    before = (tmp_path / "keep.mrc").read_bytes()
    with pytest.raises(ValueError):
        write_mrc(tmp_path / "keep.mrc", np.ones((2, 2, 2, 2)), 1.0)
    assert (tmp_path / "keep.mrc").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mrc"]


def test_extended_header_is_skipped(tmp_path, rng):
    data = rng.normal(size=(3, 6, 6)).astype(np.float32)
    with mrcfile.new(tmp_path / "ext.mrcs") as handle:
        handle.set_data(data)
        handle.set_extended_header(np.zeros(64, dtype=np.int32))
        handle.voxel_size = 1.1
    assert read_mrc_header(tmp_path / "ext.mrcs")["shape"] == (3, 6, 6)
    np.testing.assert_array_equal(read_mrc(tmp_path / "ext.mrcs")[0], data)
    with open_stack(tmp_path / "ext.mrcs") as stack:
        np.testing.assert_array_equal(stack[2], data[2])


@pytest.mark.parametrize("name", ["map.mrc", "stack.mrcs", "image.mrc"])
def test_written_files_pass_mrcfile_validation(tmp_path, rng, name):
    shape = (4, 8, 8) if name != "image.mrc" else (8, 8)
    write_mrc(tmp_path / name, rng.normal(size=shape), 1.2)
    report = io.StringIO()
    assert mrcfile.validate(str(tmp_path / name), print_file=report), report.getvalue()


def test_big_endian_files_are_read(tmp_path, rng):
    from mrcfile.dtypes import HEADER_DTYPE

    data = rng.normal(size=(2, 5, 7)).astype(np.float32)
    write_mrc(tmp_path / "le.mrcs", data, 1.4)
    raw = (tmp_path / "le.mrcs").read_bytes()
    header = np.frombuffer(raw[:1024], HEADER_DTYPE).astype(HEADER_DTYPE.newbyteorder())
    header["machst"] = np.frombuffer(b"\x11\x11\x00\x00", np.uint8)
    (tmp_path / "be.mrcs").write_bytes(header.tobytes() + data.astype(">f4").tobytes())
    back, pixel = read_mrc(tmp_path / "be.mrcs")
    np.testing.assert_array_equal(back, data)
    assert pixel == pytest.approx(1.4) and back.dtype.isnative
    with open_stack(tmp_path / "be.mrcs") as stack:
        np.testing.assert_array_equal(stack[1], data[1])

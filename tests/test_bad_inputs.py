"""A corpus of malformed inputs, each run through the real ``vitrify`` command line.

Every case expects exit status 1, exactly one line on stderr that names the file and the field
(column, line, header word...), no traceback, and no output left looking complete (no
RELION_JOB_EXIT_SUCCESS marker, no final output STAR). Files are tiny and built here: a small
simulated data set (particles, one micrograph, one movie) and hand-written corrupt copies.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import _bad_inputs_files as bf
import numpy as np
import pytest
from _bad_inputs_files import Good

from vitrify.cli.main import main

#: Files whose presence in the output directory says "this job finished".
FINAL_OUTPUTS = ("RELION_JOB_EXIT_SUCCESS", "movies.star", "micrographs.star", "corrected_micrographs.star",
                 "micrographs_ctf.star", "autopick.star", "particles.star", "RELION_OUTPUT_NODES.star")
CLASS2D = ["class2d", "--o", "out", "--K", "2", "--iter", "1", "--particle-diameter", "100",
           "--algorithm", "em", "--device", "cpu"]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """``vitrify -q ARGV`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(["-q", *argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Good:
    """A tiny valid data set made by the simulator (particles, a micrograph, a movie with metadata)."""
    import os

    import mrcfile

    root = tmp_path_factory.mktemp("good")
    here = os.getcwd()
    os.chdir(root)
    try:
        for argv in (["simulate", "particles", "--n", "8", "--box", "32", "--pixel-size", "4", "--out", "parts",
                      "--device", "cpu", "--particles-per-micrograph", "8"],
                     ["simulate", "micrographs", "--n", "1", "--size", "256", "--particles", "3",
                      "--pixel-size", "2", "--out", "mics", "--device", "cpu"],
                     ["simulate", "movies", "--n", "1", "--size", "128", "--frames", "4", "--particles", "2",
                      "--out", "movies", "--device", "cpu"]):
            _simulate(argv)
    finally:
        os.chdir(here)
    from vitrify.io.star import read_star

    row = read_star(root / "parts" / "particles.star")["particles"].iloc[0]
    with mrcfile.open(root / "movies" / "Movies" / "gain.mrc") as mrc:
        assert mrc.data.shape == (128, 128)
    return Good(root, root / "parts" / "particles.mrcs",
                (float(row["rlnDefocusU"]), float(row["rlnDefocusV"]), float(row["rlnDefocusAngle"])),
                root / "mics" / "Micrographs" / "mic_00001.mrc", root / "movies" / "Movies" / "mov_00001.tiff",
                root / "movies" / "Movies" / "gain.mrc", root / "movies" / "Movies" / "mov_00001.xml",
                root / "movies" / "Movies" / "mov_00001.tiff.mdoc")


def _simulate(argv: list[str]) -> None:
    try:
        main(["-q", *argv])
    except SystemExit as exc:
        assert not exc.code, argv


CASES: list = []


def case(*expected: str):
    """Register a builder ``(tmp, good) -> argv | (argv, more expected texts)`` as a corpus case."""
    def register(build):
        CASES.append(pytest.param(build, expected, id=build.__name__))
        return build
    return register


# ---------------------------------------------------------------- MRC headers (mdcatch --read)

@case("noise.mrc", "header")
def mrc_random_bytes(tmp, good):
    return ["mdcatch", "--read", str(bf.random_bytes(tmp / "noise.mrc"))]


@case("empty.mrc", "header")
def mrc_empty_file(tmp, good):
    (tmp / "empty.mrc").write_bytes(b"")
    return ["mdcatch", "--read", str(tmp / "empty.mrc")]


@case("short.mrc", "header")
def mrc_header_only_half(tmp, good):
    bf.write_mrc(tmp / "full.mrc", np.zeros((4, 16, 16)))
    return ["mdcatch", "--read", str(bf.cut(tmp / "full.mrc", tmp / "short.mrc", 0.3))]


@case("cut.mrc", "bytes")
def mrc_movie_cut_mid_frame(tmp, good):
    bf.write_mrc(tmp / "full.mrc", np.zeros((4, 64, 64)))
    return ["mdcatch", "--read", str(bf.cut(tmp / "full.mrc", tmp / "cut.mrc", 0.6))]


@case("mode.mrc", "unknown mode 7")
def mrc_unknown_mode(tmp, good):
    path = bf.patch_int32(bf.write_mrc(tmp / "mode.mrc", np.zeros((2, 16, 16))), bf.MRC_MODE, 7)
    return ["mdcatch", "--read", str(path)]


@case("negz.mrc", "nz")
def mrc_negative_frame_count(tmp, good):
    path = bf.patch_int32(bf.write_mrc(tmp / "negz.mrc", np.zeros((2, 16, 16))), bf.MRC_NZ, -3)
    return ["mdcatch", "--read", str(path)]


@case("nomap.mrc", "MAP")
def mrc_no_map_signature_and_bad_mode(tmp, good):
    path = bf.write_mrc(tmp / "nomap.mrc", np.zeros((2, 16, 16)))
    raw = bytearray(path.read_bytes())
    raw[bf.MRC_MAP:bf.MRC_MAP + 4] = b"ABCD"
    raw[bf.MRC_MODE:bf.MRC_MODE + 4] = np.int32(99).tobytes()
    path.write_bytes(bytes(raw))
    return ["mdcatch", "--read", str(path)]


# ---------------------------------------------------------------- movies: TIFF / EER headers and frames

@case("cut.tiff")
def tiff_cut_in_header(tmp, good):
    return ["mdcatch", "--read", str(bf.cut(good.movie, tmp / "cut.tiff", 0.002))]


@case("noise.tiff")
def tiff_random_bytes(tmp, good):
    return ["mdcatch", "--read", str(bf.random_bytes(tmp / "noise.tiff"))]


@case("noise.eer")
def eer_random_bytes(tmp, good):
    return ["mdcatch", "--read", str(bf.random_bytes(tmp / "noise.eer"))]


# ---------------------------------------------------------------- EPU XML, mdoc, other metadata

@case("cut.xml", "line 1, column")
def epu_xml_cut_mid_tag(tmp, good):
    return ["mdcatch", "--read", str(bf.cut_text(good.epu_xml, tmp / "cut.xml", "<AccelerationVoltage>"))]


@case("garbage.xml", "line 1")
def epu_xml_not_xml(tmp, good):
    (tmp / "garbage.xml").write_text("this is not XML at all\n")
    return ["mdcatch", "--read", str(tmp / "garbage.xml")]


@case("other.xml", "root")
def epu_xml_wrong_root(tmp, good):
    (tmp / "other.xml").write_text("<Something><a>1</a></Something>")
    return ["mdcatch", "--read", str(tmp / "other.xml")]


@case("volts.xml", "AccelerationVoltage", "kV")
def epu_xml_absurd_voltage(tmp, good):
    text = good.epu_xml.read_text().replace("<AccelerationVoltage>300000.0", "<AccelerationVoltage>3000000.0")
    (tmp / "volts.xml").write_text(text)
    return ["mdcatch", "--read", str(tmp / "volts.xml")]


@case("pixel.xml", "pixelSize", "a number")
def epu_xml_pixel_not_a_number(tmp, good):
    text = good.epu_xml.read_text().replace("<numericValue>1.5e-10</numericValue></x>",
                                            "<numericValue>one</numericValue></x>")
    (tmp / "pixel.xml").write_text(text)
    return ["mdcatch", "--read", str(tmp / "pixel.xml")]


@case("negpix.xml", "pixelSize")
def epu_xml_negative_pixel(tmp, good):
    text = good.epu_xml.read_text().replace("<numericValue>1.5e-10</numericValue></x>",
                                            "<numericValue>-1.5e-10</numericValue></x>")
    (tmp / "negpix.xml").write_text(text)
    return ["mdcatch", "--read", str(tmp / "negpix.xml")]


@case("Session_Fractions.xml", "line")
def epu_fractions_cut(tmp, good):
    (tmp / "Session_Fractions.xml").write_text("<Acquisition><Info><Detector>EF-Falcon</Detector></Inf")
    return ["mdcatch", "--read", str(tmp / "Session_Fractions.xml")]


@case("EpuSession.dm", "line")
def epu_session_cut(tmp, good):
    (tmp / "EpuSession.dm").write_text('<EpuSessionXml xmlns="x"><Name>s</Name><Samples><Sample')
    return ["mdcatch", "--read", str(tmp / "EpuSession.dm")]


@case("noheader.mdoc", "line 1")
def mdoc_without_header(tmp, good):
    text = good.mdoc.read_text()
    (tmp / "noheader.mdoc").write_text(text[text.index("[FrameSet"):])
    return ["mdcatch", "--read", str(tmp / "noheader.mdoc")]


@case("empty.mdoc")
def mdoc_empty(tmp, good):
    (tmp / "empty.mdoc").write_text("\n\n")
    return ["mdcatch", "--read", str(tmp / "empty.mdoc")]


@case("binary.mdoc", "line")
def mdoc_binary_garbage(tmp, good):
    (tmp / "binary.mdoc").write_bytes(good.mdoc.read_bytes()[:60] + b"\x00\x01\x02garbage\x00\n")
    return ["mdcatch", "--read", str(tmp / "binary.mdoc")]


@case("pixel.mdoc", "PixelSpacing", "line")
def mdoc_pixel_not_a_number(tmp, good):
    (tmp / "pixel.mdoc").write_text(good.mdoc.read_text().replace("PixelSpacing = 1.5", "PixelSpacing = 1,5"))
    return ["mdcatch", "--read", str(tmp / "pixel.mdoc")]


@case("volts.mdoc", "Voltage", "line 2")
def mdoc_absurd_voltage(tmp, good):
    (tmp / "volts.mdoc").write_text(good.mdoc.read_text().replace("Voltage = 300", "Voltage = 30000"))
    return ["mdcatch", "--read", str(tmp / "volts.mdoc")]


@case("negpix.mdoc", "PixelSpacing")
def mdoc_negative_pixel(tmp, good):
    (tmp / "negpix.mdoc").write_text(good.mdoc.read_text().replace("PixelSpacing = 1.5", "PixelSpacing = -1.5"))
    return ["mdcatch", "--read", str(tmp / "negpix.mdoc")]


@case("notes.txt", "type")
def metadata_unknown_kind(tmp, good):
    (tmp / "notes.txt").write_text("hello\n")
    return ["mdcatch", "--read", str(tmp / "notes.txt")]


@case("absent.xml", "no such file")
def metadata_missing_file(tmp, good):
    return ["mdcatch", "--read", str(tmp / "absent.xml")]


# ---------------------------------------------------------------- particles.star (class2d)

def _class2d(path: Path, *more: str) -> list[str]:
    return [*CLASS2D, "--i", str(path), *more]


@case("p.star", "rlnDefocusU", "data_particles")
def star_nan_defocus(tmp, good):
    path = bf.particles_star(tmp / "p.star", good, rows=bf.particle_rows(good, rlnDefocusU="nan"))
    return _class2d(path), [bf.line_of(path, " nan ")]


@case("p.star", "rlnDefocusV")
def star_inf_defocus(tmp, good):
    path = bf.particles_star(tmp / "p.star", good, rows=bf.particle_rows(good, rlnDefocusV="inf"))
    return _class2d(path), [bf.line_of(path, " inf ")]


@case("p.star", "rlnDefocusU")
def star_absurd_defocus(tmp, good):
    path = bf.particles_star(tmp / "p.star", good, rows=bf.particle_rows(good, rlnDefocusU="2.5e7"))
    return _class2d(path), [bf.line_of(path, "2.5e7")]


@case("p.star", "rlnDefocusU", "a number")
def star_defocus_not_a_number(tmp, good):
    path = bf.particles_star(tmp / "p.star", good, rows=bf.particle_rows(good, rlnDefocusU="abc"))
    return _class2d(path), [bf.line_of(path, " abc ")]


@case("p.star", "rlnImagePixelSize", "data_optics")
def star_negative_pixel_size(tmp, good):
    path = bf.particles_star(tmp / "p.star", good, optics=bf.particle_optics(rlnImagePixelSize="-4.0"))
    return _class2d(path), [bf.line_of(path, "-4.0")]


@case("p.star", "rlnImagePixelSize")
def star_zero_pixel_size(tmp, good):
    return _class2d(bf.particles_star(tmp / "p.star", good, optics=bf.particle_optics(rlnImagePixelSize="0")))


@case("p.star", "rlnVoltage", "kV")
def star_absurd_voltage(tmp, good):
    return _class2d(bf.particles_star(tmp / "p.star", good, optics=bf.particle_optics(rlnVoltage="3000")))


@case("p.star", "rlnSphericalAberration")
def star_negative_cs(tmp, good):
    return _class2d(bf.particles_star(tmp / "p.star", good, optics=bf.particle_optics(rlnSphericalAberration="-2.7")))


@case("p.star", "rlnAmplitudeContrast")
def star_amplitude_contrast_above_one(tmp, good):
    return _class2d(bf.particles_star(tmp / "p.star", good, optics=bf.particle_optics(rlnAmplitudeContrast="1.5")))


@case("p.star", "rlnImageSize")
def star_negative_image_size(tmp, good):
    return _class2d(bf.particles_star(tmp / "p.star", good, optics=bf.particle_optics(rlnImageSize="-32")))


@case("p.star", "rlnImageName")
def star_missing_image_name_column(tmp, good):
    rows = [{k: v for k, v in row.items() if k != "rlnImageName"} for row in bf.particle_rows(good)]
    return _class2d(bf.particles_star(tmp / "p.star", good, rows=rows))


@case("p.star", "rlnVoltage")
def star_missing_voltage_column(tmp, good):
    return _class2d(bf.particles_star(tmp / "p.star", good, optics=bf.particle_optics(rlnVoltage=None)))


@case("p.star", "data_particles", "loop_ without labels")
def star_loop_without_labels(tmp, good):
    path = bf.particles_star(tmp / "p.star", good, rows=[])
    return _class2d(path)


@case("p.star", "data_particles", "no particles")
def star_empty_loop(tmp, good):
    path = bf.particles_star(tmp / "p.star", good)
    text = path.read_text()
    path.write_text(text[:text.index("\n", text.index("_rlnDefocusAngle")) + 1] + "\n")
    return _class2d(path)


@case("p.star", "data_particles", "twice")
def star_duplicated_block(tmp, good):
    path = bf.particles_star(tmp / "p.star", good)
    text = path.read_text()
    path.write_text(text + text[text.index("\n# version 30001\n\ndata_particles"):])
    return _class2d(path)


@case("p.star", "values")
def star_short_row(tmp, good):
    rows = bf.particle_rows(good)
    rows[3] = dict(list(rows[3].items())[:-1])
    path = bf.particles_star(tmp / "p.star", good, rows=rows)
    return _class2d(path), [bf.line_of(path, "000004@")]


@case("p.star", "quote")
def star_unterminated_quote(tmp, good):
    path = bf.particles_star(tmp / "p.star", good, rows=bf.particle_rows(good, rlnMicrographName='"mic.mrc'))
    return _class2d(path), [bf.line_of(path, '"mic.mrc')]


@case("p.star", "text")
def star_binary_file(tmp, good):
    (tmp / "p.star").write_bytes(b"data_\x00\x01\x02" * 10)
    return _class2d(tmp / "p.star")


@case("p.star", "rlnOpticsGroup", "unknown optics group")
def star_unknown_optics_group(tmp, good):
    return _class2d(bf.particles_star(tmp / "p.star", good, rows=bf.particle_rows(good, rlnOpticsGroup="7")))


@case("p.star", "rlnOpticsGroup", "twice")
def star_duplicated_optics_group(tmp, good):
    path = tmp / "p.star"
    optics = bf.particle_optics()
    rows = bf.particle_rows(good)
    path.write_text(bf.star_text({"optics": (optics, [dict(optics)]), "particles": (rows[0], rows[1:])}))
    return _class2d(path)


@case("p.star", "data_optics")
def star_list_block_for_optics(tmp, good):
    path = bf.particles_star(tmp / "p.star", good)
    text = path.read_text()
    start, end = text.index("data_optics"), text.index("# version 30001", 10)
    path.write_text(text[:start] + "data_optics\n\n_rlnVoltage 300\n\n" + text[end:])
    return _class2d(path)


@case("p.star", "rlnImageName", "N@stack.mrcs")
def star_bad_image_name(tmp, good):
    return _class2d(bf.particles_star(tmp / "p.star", good, rows=bf.particle_rows(good, rlnImageName="0@x.mrcs")))


@case("missing.mrcs", "not found")
def star_image_stack_missing(tmp, good):
    rows = bf.particle_rows(good, rlnImageName=f"000001@{tmp / 'missing.mrcs'}")
    return _class2d(bf.particles_star(tmp / "p.star", good, rows=rows))


@case("particles.mrcs", "image 99")
def star_image_index_beyond_stack(tmp, good):
    rows = bf.particle_rows(good, rlnImageName=f"000099@{good.particles_stack}")
    return _class2d(bf.particles_star(tmp / "p.star", good, rows=rows))


# ---------------------------------------------------------------- particle stacks (class2d)

def _stack_star(tmp, good, stack: Path) -> list[str]:
    rows = bf.particle_rows(good)
    for row in rows:
        row["rlnImageName"] = row["rlnImageName"].split("@")[0] + "@" + str(stack)
    return _class2d(bf.particles_star(tmp / "p.star", good, rows=rows))


def _good_images(good) -> np.ndarray:
    import mrcfile

    with mrcfile.open(good.particles_stack) as mrc:
        return np.array(mrc.data)


@case("nan.mrcs", "image 3", "NaN")
def stack_nan_pixels(tmp, good):
    images = _good_images(good)
    images[2, 5, 5] = np.nan
    return _stack_star(tmp, good, bf.write_mrc(tmp / "nan.mrcs", images, 4.0))


@case("inf.mrcs", "image 8")
def stack_inf_pixels(tmp, good):
    images = _good_images(good)
    images[7] = np.inf
    return _stack_star(tmp, good, bf.write_mrc(tmp / "inf.mrcs", images, 4.0))


@case("cut.mrcs")
def stack_truncated(tmp, good):
    return _stack_star(tmp, good, bf.cut(good.particles_stack, tmp / "cut.mrcs", 0.7))


@case("complex.mrcs", "mode")
def stack_complex_mode(tmp, good):
    path = bf.patch_int32(shutil.copy(good.particles_stack, tmp / "complex.mrcs"), bf.MRC_MODE, 3)
    return _stack_star(tmp, good, Path(path))


@case("noise.mrcs")
def stack_random_bytes(tmp, good):
    return _stack_star(tmp, good, bf.random_bytes(tmp / "noise.mrcs", 40000))


@case("small.mrcs", "px")
def stack_wrong_image_size(tmp, good):
    return _stack_star(tmp, good, bf.write_mrc(tmp / "small.mrcs", np.zeros((8, 16, 16)), 4.0))


@case("run_it001_optimiser.star")
def class2d_continue_from_garbage(tmp, good):
    (tmp / "run_it001_optimiser.star").write_text("data_optimiser_general\n\n_rlnCurrentIteration x1\n")
    path = bf.particles_star(tmp / "p.star", good)
    return _class2d(path, "--continue", str(tmp / "run_it001_optimiser.star"))


# ---------------------------------------------------------------- micrographs (ctffind, autopick, extract)

def _ctffind(star: Path) -> list[str]:
    return ["ctffind", "--i", str(star), "--o", "out", "--box", "128", "--device", "cpu", "--no-diagnostics"]


@case("zero.mrc", "constant")
def micrograph_all_zero(tmp, good):
    mic = bf.write_mrc(tmp / "zero.mrc", np.zeros((256, 256)))
    return _ctffind(bf.micrographs_star(tmp / "m.star", [mic]))


@case("nan.mrc", "NaN")
def micrograph_all_nan(tmp, good):
    mic = bf.write_mrc(tmp / "nan.mrc", np.full((256, 256), np.nan))
    return _ctffind(bf.micrographs_star(tmp / "m.star", [mic]))


@case("cut.mrc")
def micrograph_truncated(tmp, good):
    return _ctffind(bf.micrographs_star(tmp / "m.star", [bf.cut(good.micrograph, tmp / "cut.mrc", 0.5)]))


@case("absent.mrc", "not found")
def micrograph_missing(tmp, good):
    return _ctffind(bf.micrographs_star(tmp / "m.star", [tmp / "absent.mrc"]))


@case("m.star", "rlnMicrographName")
def micrographs_star_missing_name_column(tmp, good):
    path = tmp / "m.star"
    path.write_text(bf.star_text({"optics": (bf.micrograph_optics(), None),
                                  "micrographs": ({"rlnOpticsGroup": "1"}, None)}))
    return _ctffind(path)


@case("m.star", "rlnMicrographPixelSize")
def micrographs_star_negative_pixel(tmp, good):
    optics = bf.micrograph_optics(rlnMicrographPixelSize="-2.0")
    return _ctffind(bf.micrographs_star(tmp / "m.star", [good.micrograph], optics))


@case("m.star", "rlnMicrographPixelSize")
def micrographs_star_absurd_pixel(tmp, good):
    optics = bf.micrograph_optics(rlnMicrographPixelSize="500")
    return _ctffind(bf.micrographs_star(tmp / "m.star", [good.micrograph], optics))


@case("m.star", "rlnAmplitudeContrast")
def micrographs_star_nan_amplitude_contrast(tmp, good):
    optics = bf.micrograph_optics(rlnAmplitudeContrast="nan")
    return _ctffind(bf.micrographs_star(tmp / "m.star", [good.micrograph], optics))


@case("m.star", "line")
def micrographs_star_windows_and_garbage(tmp, good):
    path = bf.micrographs_star(tmp / "m.star", [good.micrograph])
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n") + b"stray text after the loop\r\n")
    return _ctffind(path)


@case("nan.mrc", "NaN")
def autopick_micrograph_all_nan(tmp, good):
    mic = bf.write_mrc(tmp / "nan.mrc", np.full((256, 256), np.nan))
    star = bf.micrographs_star(tmp / "m.star", [mic])
    return ["autopick", "--i", str(star), "--o", "out", "--log-diameter-min", "40", "--log-diameter-max", "60",
            "--png", "0", "--device", "cpu"]


@case("m.star", "rlnDefocusU")
def autopick_micrographs_star_nan_defocus(tmp, good):
    star = bf.micrographs_star(tmp / "m.star", [good.micrograph], rlnDefocusU="nan")
    return ["autopick", "--i", str(star), "--o", "out", "--png", "0", "--device", "cpu"]


def _extract(tmp, good, coords_text: str, mic: Path | None = None) -> list[str]:
    mic = mic or good.micrograph
    star = bf.micrographs_star(tmp / "m.star", [mic])
    (tmp / "c.star").write_text(coords_text)
    (tmp / "autopick.star").write_text(
        f"data_coordinate_files\n\nloop_\n_rlnMicrographName #1\n_rlnMicrographCoordinates #2\n"
        f"{mic} {tmp / 'c.star'}\n\n")
    return ["extract", "--i", str(star), "--coords", str(tmp / "autopick.star"), "--o", "out", "--box", "32",
            "--device", "cpu"]


@case("c.star", "rlnCoordinateX")
def extract_coordinates_nan(tmp, good):
    return _extract(tmp, good, "data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\nnan 100\n120 80\n\n")


@case("c.star", "rlnCoordinateY")
def extract_coordinates_missing_column(tmp, good):
    return _extract(tmp, good, "data_\n\nloop_\n_rlnCoordinateX #1\n100\n120\n\n")


@case("c.star", "rlnCoordinateX", "a number")
def extract_coordinates_not_numbers(tmp, good):
    return _extract(tmp, good, "data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\nx 100\n120 80\n\n")


@case("mic_00001.mrc", "no particles")
def extract_coordinates_empty_loop(tmp, good):
    return _extract(tmp, good, "data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n\n")


@case("nan.mrc", "NaN")
def extract_micrograph_all_nan(tmp, good):
    mic = bf.write_mrc(tmp / "nan.mrc", np.full((256, 256), np.nan))
    return _extract(tmp, good, "data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n100 100\n120 80\n\n", mic)


@case("autopick.star", "rlnMicrographCoordinates")
def extract_coordinate_list_missing_column(tmp, good):
    argv = _extract(tmp, good, "data_\n\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n100 100\n\n")
    (tmp / "autopick.star").write_text(f"data_coordinate_files\n\nloop_\n_rlnMicrographName #1\n{good.micrograph}\n\n")
    return argv


# ---------------------------------------------------------------- movies (motioncorr): frames, gain

def _motioncorr(tmp, movie: Path, *more: str, **optics: str) -> list[str]:
    star = bf.movies_star(tmp / "movies.star", [movie], **optics)
    return ["motioncorr", "--i", str(star), "--o", "out", "--patch-x", "1", "--patch-y", "1", "--device", "cpu",
            *more]


@case("cut.tiff")
def motioncorr_tiff_cut_mid_frame(tmp, good):
    return _motioncorr(tmp, bf.cut(good.movie, tmp / "cut.tiff", 0.6))


@case("cut.eer")
def motioncorr_eer_cut_mid_frame(tmp, good):
    from _eer_encode import write_eer

    events = (np.random.default_rng(1).random((6, 64, 64)) < 0.05).astype(np.uint8)
    write_eer(tmp / "full.eer", events)
    return _motioncorr(tmp, bf.cut(tmp / "full.eer", tmp / "cut.eer", 0.55), "--eer-grouping", "2")


@case("noise.mrc")
def motioncorr_mrc_movie_random_bytes(tmp, good):
    return _motioncorr(tmp, bf.random_bytes(tmp / "noise.mrc", 70000))


@case("gain.mrc", "size")
def motioncorr_gain_wrong_size(tmp, good):
    gain = bf.write_mrc(tmp / "gain.mrc", np.ones((100, 100)))
    return _motioncorr(tmp, good.movie, "--gain", str(gain))


@case("gain.mrc", "gain_rot")
def motioncorr_gain_wrong_orientation(tmp, good):
    movie = bf.tiff_movie(tmp / "wide.tiff", np.random.default_rng(0).poisson(2, (4, 64, 128)))
    gain = bf.write_mrc(tmp / "gain.mrc", np.ones((128, 64)))
    return _motioncorr(tmp, movie, "--gain", str(gain))


@case("gain.mrc", "NaN")
def motioncorr_gain_nan(tmp, good):
    gain = np.ones((128, 128))
    gain[5, 5] = np.nan
    return _motioncorr(tmp, good.movie, "--gain", str(bf.write_mrc(tmp / "gain.mrc", gain)))


@case("movies.star", "rlnVoltage")
def motioncorr_movies_star_absurd_voltage(tmp, good):
    return _motioncorr(tmp, good.movie, rlnVoltage="30")


@case("movies.star", "rlnMicrographOriginalPixelSize")
def motioncorr_movies_star_no_pixel_size(tmp, good):
    return _motioncorr(tmp, good.movie, rlnMicrographOriginalPixelSize=None)


# ---------------------------------------------------------------- select, import, simulate options

@case("p.star", "rlnFooBar")
def select_missing_label(tmp, good):
    return ["select", "--i", str(bf.particles_star(tmp / "p.star", good)), "--o", "out", "--label", "rlnFooBar"]


@case("hello.star", "line 1")
def select_not_a_star_file(tmp, good):
    (tmp / "hello.star").write_text("hello world\n")
    return ["select", "--i", str(tmp / "hello.star"), "--o", "out"]


@case("p.star", "rlnDefocusU")
def select_nan_defocus(tmp, good):
    path = bf.particles_star(tmp / "p.star", good, rows=bf.particle_rows(good, rlnDefocusU="nan"))
    return ["select", "--i", str(path), "--o", "out", "--label", "rlnDefocusU"]


@case("angpix")
def import_negative_pixel_size(tmp, good):
    return ["import", "--i", str(good.movie), "--o", "out", "--angpix", "-1"]


@case("kV")
def import_absurd_voltage(tmp, good):
    return ["import", "--i", str(good.movie), "--o", "out", "--angpix", "1.5", "--kv", "3000"]


@case("nothing*.tiff")
def import_glob_matches_nothing(tmp, good):
    return ["import", "--i", str(tmp / "nothing*.tiff"), "--o", "out", "--angpix", "1.5"]


@case("pixel")
def simulate_negative_pixel_size(tmp, good):
    return ["simulate", "particles", "--n", "2", "--pixel-size", "-2", "--out", "out"]


# ---------------------------------------------------------------- schemes and job.star

def _scheme(tmp, edit) -> list[str]:
    _simulate(["schemer", "--scheme", "prep", "--init", "prep", "--project", str(tmp)])
    path = tmp / "Schemes" / "prep" / "scheme.star"
    path.write_text(edit(path.read_text()))
    return ["schemer", "--scheme", "prep", "--project", str(tmp), "--reset"]


@case("scheme.star", "frobnicate")
def scheme_unknown_operator(tmp, good):
    return _scheme(tmp, lambda text: text.replace(" wait ", " frobnicate ", 1))


@case("scheme.star", "nowhere")
def scheme_edge_to_nowhere(tmp, good):
    return _scheme(tmp, lambda text: text.replace("ctffind       WAIT", "ctffind nowhere", 1))


@case("job.star", "relion.frobnicate")
def job_star_unknown_job_type(tmp, good):
    (tmp / "job.star").write_text("data_job\n\n_rlnJobTypeLabel relion.frobnicate\n_rlnJobIsContinue 0\n\n"
                                  "data_joboptions_values\n\nloop_\n_rlnJobOptionVariable #1\n"
                                  "_rlnJobOptionValue #2\nfn_in \"\"\n\n")
    return ["run-job", "--job", str(tmp / "job.star")]


@case("job.star", "line")
def job_star_garbage(tmp, good):
    (tmp / "job.star").write_text("this is not a job.star\n")
    return ["run-job", "--job", str(tmp / "job.star")]


# ---------------------------------------------------------------- jobs of a project (pipeline mode)

@case("p.star", "rlnDefocusU")
def pipeline_select_nan_defocus(tmp, good):
    path = bf.particles_star(tmp / "p.star", good, rows=bf.particle_rows(good, rlnDefocusU="nan"))
    return ["select", "--i", str(path), "--o", "Select/job001", "--label", "rlnDefocusU"]


@case("nan.mrcs", "image 1")
def pipeline_class2d_nan_image(tmp, good):
    images = _good_images(good)
    images[0, 0, 0] = np.nan
    argv = _stack_star(tmp, good, bf.write_mrc(tmp / "nan.mrcs", images, 4.0))
    return [a if a != "out" else "Class2D/job002" for a in argv]


@case("zero.mrc", "constant")
def pipeline_ctffind_zero_micrograph(tmp, good):
    mic = bf.write_mrc(tmp / "zero.mrc", np.zeros((256, 256)))
    return [a if a != "out" else "CtfFind/job003" for a in _ctffind(bf.micrographs_star(tmp / "m.star", [mic]))]


# ---------------------------------------------------------------- the test

def _complete_outputs(work: Path) -> list[str]:
    """Files of the output directories (``out``, ``Type/jobNNN``) that would say the job finished."""
    names = [p.name for d in [work / "out", *work.glob("*/job[0-9][0-9][0-9]")] for p in d.rglob("*")]
    return [n for n in names if n in FINAL_OUTPUTS or (n.startswith("run_it") and n.endswith("_data.star"))]


@pytest.mark.parametrize(("build", "expected"), CASES)
def test_bad_input_is_one_clear_line(build, expected, good, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    built = build(work, good)
    argv, more = built if isinstance(built, tuple) else (built, [])
    code, out, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in out + err, err
    assert code == 1, (code, out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines
    for text in (*expected, *more):
        assert text in lines[0], (text, lines[0])
    assert _complete_outputs(work) == []


def test_corpus_is_large():
    assert len(CASES) >= 60


# ---------------------------------------------------------------- the same inputs, uncorrupted, pass

def test_good_inputs_pass(good, tmp_path, monkeypatch, capsys):
    """The corpus' base files are fine: each reader and job accepts them (so each case fails for its flaw)."""
    monkeypatch.chdir(tmp_path)
    for path in (good.epu_xml, good.mdoc, good.movie, good.gain):
        assert run_cli(["mdcatch", "--read", str(path)], capsys)[0] == 0, path
    particles = bf.particles_star(tmp_path / "p.star", good)
    mics = bf.micrographs_star(tmp_path / "m.star", [good.micrograph])
    for argv, output in (
        (["select", "--i", str(particles), "--o", "sel", "--label", "rlnDefocusU", "--max", "1e9"],
         "sel/particles.star"),
        ([*CLASS2D[:2], "c2d", *CLASS2D[3:], "--i", str(particles)], "c2d/run_it001_data.star"),
        (_ctffind(mics)[:4] + ["ctf"] + _ctffind(mics)[5:], "ctf/micrographs_ctf.star"),
        (["motioncorr", "--i", str(bf.movies_star(tmp_path / "movies.star", [good.movie])), "--o", "mc",
          "--patch-x", "1", "--patch-y", "1", "--device", "cpu", "--gain", str(good.gain)],
         "mc/corrected_micrographs.star"),
    ):
        code, out, err = run_cli(argv, capsys)
        assert code == 0 and (tmp_path / output).is_file(), (argv, out, err)


def test_windows_line_ends_are_read_like_unix_ones(good, tmp_path, monkeypatch, capsys):
    """A STAR file edited on Windows (CRLF) reads exactly as the original, as RELION reads it."""
    from vitrify.io.star import read_star, read_star_optics

    monkeypatch.chdir(tmp_path)
    unix = bf.particles_star(tmp_path / "unix.star", good)
    windows = tmp_path / "windows.star"
    windows.write_bytes(unix.read_bytes().replace(b"\n", b"\r\n"))
    assert b"\r\n" in windows.read_bytes()
    a, b = read_star(unix), read_star(windows)
    assert list(a) == list(b)
    for name in a:
        assert a[name].equals(b[name])
    assert read_star_optics(windows).merged.equals(read_star_optics(unix).merged)
    outputs = []
    for star in (unix, windows):
        code, out, err = run_cli(["select", "--i", str(star), "--o", f"sel_{star.stem}", "--label",
                                  "rlnDefocusU", "--max", "1e9"], capsys)
        assert code == 0, err
        outputs.append((tmp_path / f"sel_{star.stem}" / "particles.star").read_text())
    assert outputs[0] == outputs[1]


def test_closed_pipe_ends_quietly(tmp_path):
    """``vitrify ... | head``: the reader goes away; no traceback, no 'exit 1' (141, like Unix tools)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")]))
    for argv in (["--help"], ["mdcatch", "--help"]):
        proc = subprocess.Popen([sys.executable, "-m", "vitrify", *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, cwd=tmp_path)
        proc.stdout.close()  # before the command writes anything
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.wait(timeout=120) == 141, err
        assert err == "", err
    done = subprocess.run([sys.executable, "-m", "vitrify", "--version"], capture_output=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith(b"vitrify ")

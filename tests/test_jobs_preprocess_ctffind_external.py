"""``vitrify ctffind --use-ctffind``: CTFFIND4's stdin form, its results file, and a clear error when absent."""

from __future__ import annotations

import os
import stat
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from vitrify.io.errors import InputError
from vitrify.io.mrc import write_mrc
from vitrify.io.star import read_star_optics, write_star_optics
from vitrify.jobs._ctffind_external import ctffind_stdin, parse_ctffind_output
from vitrify.core.ctf import CtfParams
from vitrify.preprocess.ctf_fit import CtfSearch

#: a results file as CTFFIND 4.1.14 writes it (header and column list from its documentation)
CTFFIND4_TXT = """\
# Output from CTFFind version 4.1.14, run on 2024-03-01 10:00:00
# Input file: /data/mic.mrc ; Number of micrographs: 1
# Pixel size: 1.060 Angstroms ; acceleration voltage: 300.0 keV ; spherical aberration: 2.70 mm ; \
amplitude contrast: 0.10
# Box size: 512 pixels ; min. res.: 30.0 Angstroms ; max. res.: 5.0 Angstroms ; min. def.: 5000.0 um; \
max. def. 50000.0 um
# Columns: #1 - micrograph number; #2 - defocus 1 [Angstroms]; #3 - defocus 2; #4 - azimuth of astigmatism; \
#5 - additional phase shift [radians]; #6 - cross correlation; #7 - spacing (in Angstroms) up to which CTF rings \
were fit successfully
1.000000 15234.500000 14789.250000 -61.500000 1.570796 0.183400 3.850000
"""


def test_documented_results_file_is_parsed(tmp_path):
    path = tmp_path / "mic.txt"
    path.write_text(CTFFIND4_TXT)
    fit = parse_ctffind_output(path)
    assert (fit.defocus_u_angst, fit.defocus_v_angst) == (15234.5, 14789.25)
    assert fit.defocus_angle_deg == pytest.approx(118.5)  # -61.5° as RELION's 0..180
    assert fit.phase_shift_deg == pytest.approx(90.0, abs=1e-4)
    assert (fit.figure_of_merit, fit.max_resolution_angst) == (0.1834, 3.85)
    path.write_text(CTFFIND4_TXT.replace("3.850000", "3.850000 0.0 0.0 0.5 12.0"))  # CTFFIND 5's extra columns
    assert parse_ctffind_output(path).max_resolution_angst == 3.85


@pytest.mark.parametrize("body, where", [("# only a header\n", "no result line"),
                                          ("# h\n1.0 15000 14000 10\n", "line 2"),
                                          ("1.0 15000 abc 10 0 0.1 4\n", "line 1, defocus 2")])
def test_bad_results_files_name_the_line(tmp_path, body, where):
    path = tmp_path / "mic.txt"
    path.write_text(body)
    with pytest.raises(InputError, match=where) as info:
        parse_ctffind_output(path)
    assert "mic.txt" in str(info.value)


def test_stdin_has_the_six_lines_ctffind_checks():
    optics = CtfParams(pixel_size_angst=1.06, voltage_kv=200.0, cs_mm=2.7, amplitude_contrast=0.1)
    text = ctffind_stdin("a.mrc", "a.ctf", optics,
                         CtfSearch(do_phase_shift=True, phase_max_deg=180.0, phase_step_deg=10.0))
    lines = text.splitlines()
    assert lines[:2] == ["a.mrc", "a.ctf"]
    assert [len(line.split(",")) for line in lines[2:]] == [5, 7, 2, 4]
    cs, kv, q0, mag, dstep = map(float, lines[2].split(","))
    assert (cs, kv, q0) == (2.7, 200.0, 0.1) and dstep * 1e4 / mag == pytest.approx(1.06)
    assert lines[3].split(",")[:3] == ["512", "30.0", "5.0"]
    assert lines[5].split(",")[0] == "1" and float(lines[5].split(",")[2]) == pytest.approx(np.pi, abs=1e-3)


FAKE_CTFFIND = """\
#!{python}
# Stands in for CTFFIND4: checks the --old-school-input-ctffind4 lines as CTFFIND does, writes its files.
import sys
assert sys.argv[1:] == ["--old-school-input-ctffind4"], sys.argv
lines = sys.stdin.read().splitlines()
counts = [len(line.split(",")) for line in lines[2:6]]
if counts != [5, 7, 2, 4]:
    sys.exit("Bad number of arguments %s" % counts)
cs, kv, q0, mag, dstep = map(float, lines[2].split(","))
diagnostic = lines[1]
open(diagnostic, "wb").write(b"MRC")
stem = diagnostic.rsplit(".", 1)[0]
with open(stem + ".txt", "w") as out:
    out.write("# Pixel size: %.3f Angstroms\\n" % (dstep * 1e4 / mag))
    out.write("1.000000 21000.0 20000.0 -30.0 0.000000 0.2100 %.6f\\n" % (4 * dstep * 1e4 / mag))
print("Estimated defocus values        : 21000.00 , 20000.00 Angstroms")
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("Import/job001/Micrographs")
    write_mrc("Import/job001/Micrographs/m1.mrc", np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32),
              1.25)
    optics = pd.DataFrame({"rlnOpticsGroupName": ["opticsGroup1"], "rlnOpticsGroup": [1],
                           "rlnMicrographOriginalPixelSize": [1.25], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                           "rlnMicrographPixelSize": [1.25]})
    mics = pd.DataFrame({"rlnMicrographName": ["Import/job001/Micrographs/m1.mrc"], "rlnOpticsGroup": [1]})
    write_star_optics("Import/job001/micrographs.star", optics, mics, "micrographs")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def _cli(args):
    from vitrify.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


def test_use_ctffind_runs_it_and_records_its_results(project):
    exe = project / "ctffind"
    exe.write_text(textwrap.dedent(FAKE_CTFFIND.format(python=sys.executable)))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    assert _cli(["ctffind", "--i", "Import/job001/micrographs.star", "--o", "CtfFind/job002",
                 "--use-ctffind"]) in (0, None)
    row = read_star_optics("CtfFind/job002/micrographs_ctf.star", "micrographs").data.iloc[0]
    assert (row["rlnDefocusU"], row["rlnDefocusV"], row["rlnDefocusAngle"]) == (21000.0, 20000.0, 150.0)
    assert row["rlnCtfFigureOfMerit"] == pytest.approx(0.21)
    assert row["rlnCtfMaxResolution"] == pytest.approx(5.0)  # 4 × the pixel size CTFFIND was given
    assert row["rlnCtfImage"] == "CtfFind/job002/Micrographs/m1.ctf:mrc"
    assert "Estimated defocus" in open(row["rlnCtfImage"].split(":")[0].replace(".ctf", ".log")).read()


def test_use_ctffind_without_ctffind_is_one_line_error(project, capsys):
    assert _cli(["ctffind", "--i", "Import/job001/micrographs.star", "--o", "CtfFind/job002",
                 "--use-ctffind"]) == 1
    err = capsys.readouterr().err
    assert "CTFFIND4 not found" in err and len(err.strip().splitlines()) == 1

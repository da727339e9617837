"""Running an external CTFFIND4 (``vitrify ctffind --use-ctffind``) and reading its results.

CTFFIND4 is driven through its documented ``--old-school-input-ctffind4`` stdin form (six
lines, the same in every 4.1.x release; the interactive dialogue gained questions between
versions):

1. input micrograph (MRC)
2. output diagnostic image (CTFFIND writes the MRC there, and ``<stem>.txt``,
   ``<stem>_avrot.txt`` beside it)
3. ``Cs (mm), voltage (kV), amplitude contrast, magnification, detector pixel (µm)`` —
   the pixel size is ``detector pixel × 10⁴ / magnification``, so we send
   magnification 10000 and the pixel size in Å as the detector pixel;
4. ``box (px), min. res. (Å), max. res. (Å), min. defocus, max. defocus, defocus step (Å),
   expected astigmatism (Å; 0 = no restraint)``
5. ``is a movie (0/1), frames to average``
6. ``find phase shift (0/1), min., max., step (radians)``

The results are read from ``<stem>.txt``: ``#`` header lines, then one line per micrograph
with (CTFFIND4's documented columns) micrograph number; defocus 1 (Å); defocus 2 (Å);
azimuth of astigmatism (°); additional phase shift (rad); cross correlation; spacing (Å)
up to which CTF rings were fit successfully. CTFFIND 5 appends more columns (ignored).
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

from vitrify.core.ctf import CtfParams
from vitrify.io.atomic import atomic_write
from vitrify.io.errors import InputError
from vitrify.preprocess.ctf_fit import CtfFit, CtfSearch

#: names CTFFIND4 is installed under
EXECUTABLES = ("ctffind", "ctffind4", "ctffind.exe")
#: seconds one micrograph may take
TIMEOUT_S = 600


def find_ctffind(executable: str = "") -> str:
    """Full path of the CTFFIND executable: ``executable`` (a path or a name on the PATH) or a
    standard name on the PATH; :class:`InputError` when there is none."""
    names = (executable,) if executable else EXECUTABLES
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise InputError(f"CTFFIND4 not found ({', '.join(names)} is not an executable on the PATH)",
                     field="fn_ctffind_exe",
                     expected="CTFFIND4 installed (https://grigoriefflab.umassmed.edu/ctffind4) or no --use-ctffind "
                              "(vitrify's own estimator)")


def ctffind_stdin(micrograph: str, diagnostic: str, optics: CtfParams, search: CtfSearch) -> str:
    """The six ``--old-school-input-ctffind4`` input lines (see the module notes)."""
    phase = "0,0,0,0"
    if search.do_phase_shift:
        lo, hi, step = (math.radians(v) for v in (search.phase_min_deg, search.phase_max_deg,
                                                   search.phase_step_deg))
        phase = f"1,{lo:.4f},{hi:.4f},{step:.4f}"
    return "\n".join([
        micrograph,
        diagnostic,
        f"{optics.cs_mm},{optics.voltage_kv},{optics.amplitude_contrast},10000,{optics.pixel_size_angst}",
        f"{max(search.tile_px, 128)},{search.resolution_min_angst},{search.resolution_max_angst},"
        f"{search.defocus_min_angst},{search.defocus_max_angst},{search.defocus_step_angst},0",
        "0,1",
        phase,
    ]) + "\n"


def _number(text: str, path: Path, line_no: int, column: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"not a number: {text!r}", path=str(path), field=f"line {line_no}, {column}",
                         expected="CTFFIND4's numeric result columns") from None


def parse_ctffind_output(path: str | Path) -> CtfFit:
    """The fit in a CTFFIND4 results file (``<diagnostic stem>.txt``, first micrograph).

    Raises :class:`InputError` naming the file and line when it has no result line or
    fewer than 7 columns. A fit resolution CTFFIND reports as not finite becomes 999 Å.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise InputError(f"cannot read CTFFIND output: {err.strerror}", path=str(path),
                         expected="the .txt CTFFIND writes beside its diagnostic image") from None
    names = ("micrograph number", "defocus 1", "defocus 2", "azimuth", "phase shift", "cross correlation",
             "fit spacing")
    for line_no, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 7:
            raise InputError(f"{len(fields)} columns in a CTFFIND result line", path=str(path),
                             field=f"line {line_no}", expected="at least 7 columns")
        v = [_number(t, path, line_no, name) for t, name in zip(fields[:7], names)]
        resolution = v[6] if math.isfinite(v[6]) and v[6] > 0 else 999.0
        return CtfFit(v[1], v[2], v[3] % 180.0, math.degrees(v[4]), v[5], resolution)
    raise InputError("no result line in CTFFIND output", path=str(path),
                     expected="a line of numbers after the '#' header lines")


def run_ctffind(executable: str, micrograph: str, diagnostic: Path, optics: CtfParams, search: CtfSearch,
                ) -> CtfFit:
    """Run CTFFIND4 on one MRC micrograph; its diagnostic MRC goes to ``diagnostic`` (e.g. ``x.ctf``)."""
    diagnostic.parent.mkdir(parents=True, exist_ok=True)
    results = diagnostic.with_suffix(".txt")
    results.unlink(missing_ok=True)
    try:
        done = subprocess.run([executable, "--old-school-input-ctffind4"],
                              input=ctffind_stdin(micrograph, str(diagnostic), optics, search),
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise InputError(f"CTFFIND did not run: {err}", path=micrograph, field="fn_ctffind_exe") from None
    atomic_write(diagnostic.with_suffix(".log"), done.stdout + done.stderr)
    if done.returncode != 0 or not results.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise InputError(f"CTFFIND failed (exit {done.returncode}): {tail[0]}", path=micrograph,
                         expected="a micrograph CTFFIND4 can read (MRC mode 0-2)")
    return parse_ctffind_output(results)

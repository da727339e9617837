"""Plausible ranges of physical values (private): checked where files are read.

One table per vocabulary: RELION STAR labels (:data:`STAR_RANGES`) and acquisition-metadata
fields (:data:`ACQUISITION_RANGES`). A value outside its range is a user error that would
otherwise surface much later as a traceback deep in the maths (a NaN defocus makes every
likelihood NaN; a negative pixel size divides by a negative frequency).

>>> STAR_RANGES["rlnVoltage"].problem(3000.0)
'3000 kV is outside the plausible range'
>>> STAR_RANGES["rlnDefocusU"].problem(float("nan")) is not None
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Range:
    """Closed interval ``[low, high]`` of a physical quantity (``None``: unbounded on that side)."""

    low: float | None
    high: float | None
    unit: str
    what: str

    def problem(self, value: float) -> str | None:
        """Why ``value`` is not plausible, or ``None`` when it is."""
        if not math.isfinite(value):
            return f"{value} is not a finite number"
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            unit = f" {self.unit}" if self.unit else ""
            return f"{value:g}{unit} is outside the plausible range"
        return None

    def expected(self) -> str:
        """``"a voltage in 60..400 kV"``."""
        unit = f" {self.unit}" if self.unit else ""
        if self.low is None and self.high is None:
            return f"{self.what} (a finite number)"
        if self.low is None:
            return f"{self.what} <= {self.high:g}{unit}"
        if self.high is None:
            return f"{self.what} >= {self.low:g}{unit}"
        return f"{self.what} in {self.low:g}..{self.high:g}{unit}"

    def bad_rows(self, values: np.ndarray) -> np.ndarray:
        """Boolean mask of the implausible entries of a float array."""
        bad = ~np.isfinite(values)
        with np.errstate(invalid="ignore"):
            if self.low is not None:
                bad |= values < self.low
            if self.high is not None:
                bad |= values > self.high
        return bad


_VOLTAGE = Range(60.0, 400.0, "kV", "a voltage")
_CS = Range(0.0, 10.0, "mm", "a spherical aberration")
_PIXEL = Range(0.1, 50.0, "Å", "a pixel size")
_DEFOCUS = Range(-200000.0, 200000.0, "Å", "a defocus")
_FINITE = Range(None, None, "", "a value")

#: RELION label → plausible range (every other numeric label is only required to be finite).
STAR_RANGES: dict[str, Range] = {
    "rlnVoltage": _VOLTAGE,
    "rlnSphericalAberration": _CS,
    "rlnAmplitudeContrast": Range(0.0, 1.0, "", "an amplitude contrast"),
    "rlnImagePixelSize": _PIXEL,
    "rlnMicrographPixelSize": _PIXEL,
    "rlnMicrographOriginalPixelSize": _PIXEL,
    "rlnDefocusU": _DEFOCUS,
    "rlnDefocusV": _DEFOCUS,
    "rlnImageSize": Range(1.0, None, "px", "an image size"),
    "rlnImageDimensionality": Range(2.0, 3.0, "", "an image dimensionality"),
    "rlnOpticsGroup": Range(1.0, None, "", "an optics group number"),
    "rlnDetectorPixelSize": Range(0.1, 1000.0, "µm", "a detector pixel size"),
    "rlnMagnification": Range(1.0, None, "", "a magnification"),
    "rlnCtfScalefactor": Range(0.0, None, "", "a CTF scale factor"),
}

#: AcquisitionParams field → plausible range (checked when metadata files are read).
ACQUISITION_RANGES: dict[str, Range] = {
    "voltage_kv": _VOLTAGE,
    "cs_mm": _CS,
    "pixel_size_angst": _PIXEL,
    "physical_pixel_size_angst": _PIXEL,
    "total_dose_e_per_angst2": Range(0.0, 10000.0, "e/Å²", "a total dose"),
    "dose_per_frame_e_per_angst2": Range(0.0, 1000.0, "e/Å²", "a dose per frame"),
    "exposure_time_s": Range(0.0, 3600.0, "s", "an exposure time"),
    "n_frames": Range(1.0, 1e6, "", "a frame count"),
    "applied_defocus_um": Range(-20.0, 20.0, "µm", "an applied defocus"),
}


def star_range(label: str) -> Range:
    """The range of a numeric STAR label (finite only when none is known)."""
    return STAR_RANGES.get(label, _FINITE)

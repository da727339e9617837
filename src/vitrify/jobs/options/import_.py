"""Options of the ``import`` job (:mod:`vitrify.jobs.import_`); RELION ``relion.import``."""

from __future__ import annotations

from dataclasses import dataclass

from vitrify.io.errors import InputError
from vitrify.jobs import fields
from vitrify.jobs.fields import NEGATED, setting


@dataclass(frozen=True)
class Options:
    """Import job: movies or micrographs by glob pattern, with their optics."""

    pattern: str = setting(help="Glob pattern of the files, e.g. 'Movies/*.tiff'.", flag="--i", required=True,
                           star="fn_in_raw")
    movies: bool = setting(True, help="Single-frame micrographs, not movies.", flag="--micrographs", cli=NEGATED,
                           star="is_multiframe")
    pixel_size_angst: float = setting(1.0, help="Pixel size.", unit="Å", flag="--angpix", required=True,
                                      star="angpix")
    voltage_kv: float = setting(300.0, help="Voltage.", unit="kV", flag="--kv", star="kV")
    cs_mm: float = setting(2.7, help="Spherical aberration.", unit="mm", flag="--cs", star="Cs")
    amplitude_contrast: float = setting(0.1, help="Amplitude contrast.", flag="--q0", star="Q0")
    optics_group_name: str = setting("opticsGroup1", help="Optics group name.", flag="--optics-group",
                                     star="optics_group_name")
    mtf_file: str = setting("", help="Detector MTF STAR file, or a detector curve shipped by ttsim3d "
                                     "(e.g. k3_CDS_300kV_FL1, falcon4EC_300kV).", flag="--mtf", star="fn_mtf")
    beamtilt_x_mrad: float = setting(0.0, help="Beam tilt X.", unit="mrad", flag="--beamtilt-x", star="beamtilt_x")
    beamtilt_y_mrad: float = setting(0.0, help="Beam tilt Y.", unit="mrad", flag="--beamtilt-y", star="beamtilt_y")
    only_new: bool = setting(False, help="On-the-fly: keep earlier imports, add new files.", flag="--only-new")
    stable_seconds: float = setting(0.0, help="Skip files modified more recently.", unit="s",
                                    flag="--stable-seconds")

    def __post_init__(self) -> None:
        if not self.pattern:
            raise InputError("no file pattern", field="fn_in_raw", expected="a glob such as Movies/*.tiff")
        from vitrify.io.star import check_plausible  # here: the CLI builds its options without pandas

        for label, value, name in (("rlnMicrographOriginalPixelSize", self.pixel_size_angst, "angpix"),
                                   ("rlnVoltage", self.voltage_kv, "kV"), ("rlnSphericalAberration", self.cs_mm, "Cs")):
            check_plausible(label, value, field=name)
        if not 0 <= self.amplitude_contrast < 1:
            raise InputError(f"amplitude contrast {self.amplitude_contrast}", field="Q0",
                             expected="a fraction in [0, 1)")
        if not self.optics_group_name.replace("-", "").replace("_", "").isalnum():
            raise InputError(f"optics group name {self.optics_group_name!r}", field="optics_group_name",
                             expected="letters, digits and '-' only")


def options_from_job_star(values: dict[str, str]) -> Options:
    """Options from RELION Import job.star values (names on the fields)."""
    return fields.options_from_job_star(Options, values)


def job_star_from_options(options: Options) -> dict[str, str]:
    """RELION Import job.star values for ``options`` (on-the-fly settings as ``vitrify_*`` rows)."""
    return fields.job_star_from_options(options, {"do_raw": "Yes", "do_other": "No"})

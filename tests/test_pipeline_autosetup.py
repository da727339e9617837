"""Processing parameters derived from acquisition metadata, checked against hand calculations."""

from __future__ import annotations

import sys
import subprocess

import pytest

from conftest import needs_shared, shared_fixtures
from vitrify.io.acquisition import AcquisitionParams, complete_derived
from vitrify.io.errors import InputError
from vitrify.pipeline.autosetup import (
    SetupOptions,
    derive_processing,
    downscaled_box,
    is_fft_friendly,
    next_fft_friendly_even,
    scheme_options,
)


def _params(**values) -> AcquisitionParams:
    base = {"voltage_kv": 300.0, "cs_mm": 2.7, "super_resolution": False}
    base.update(values)
    sources = {k: ("test.xml", k) for k in base}
    return complete_derived(AcquisitionParams(**base, source_path="test.xml", sources=sources))


def test_fft_friendly_sizes():
    assert [n for n in range(270, 300, 2) if is_fft_friendly(n)] == [270, 280, 288, 294]
    assert next_fft_friendly_even(271.08) == 280  # 272 = 2^4*17 ... 278 = 2*139 are not
    assert next_fft_friendly_even(64.0) == 64
    assert next_fft_friendly_even(65.1) == 70  # 66 = 2*3*11, 68 = 2^2*17


def test_classic_083_angst_150_angst_particle_300kv():
    params = _params(pixel_size_angst=0.83, total_dose_e_per_angst2=40.0, n_frames=40,
                     frame_size_px=(4096, 4096))
    setup = derive_processing(params, SetupOptions(particle_diameter_angst=150.0))
    # by hand: 1.5 * 150 / 0.83 = 271.08 px -> 280 (= 2^3 * 5 * 7, the next even 2-3-5-7 size)
    assert setup["box_px"] == 280
    # downscale: pixel <= 3.5 A needs box >= 280 * 0.83 / 3.5 = 66.4 -> 70 -> 3.32 A/px
    assert setup["small_box_px"] == 70 and setup["do_rescale"] is True
    assert setup["small_pixel_size_angst"] == pytest.approx(0.83 * 280 / 70)
    assert 2.8 <= setup["small_pixel_size_angst"] <= 3.5
    assert setup["mask_diameter_angst"] == pytest.approx(165.0)  # 1.1 x 150
    assert setup["log_diam_min_angst"] == pytest.approx(120.0)
    assert setup["motioncorr_bin_factor"] == 1
    assert setup["dose_per_frame_e_per_angst2"] == pytest.approx(1.0)  # 40 e/A2 over 40 frames
    assert setup["group_frames"] == 1 and setup["group_for_ps"] == 4  # 4 e/A2 per spectrum
    assert setup["patch_x"] == 5 and setup["patch_y"] == 5  # 4096 / 800 = 5.1


def test_super_resolution_k3_is_binned_by_two():
    params = _params(pixel_size_angst=0.4125, super_resolution=True, total_dose_e_per_angst2=50.0,
                     n_frames=50, frame_size_px=(11520, 8184))
    setup = derive_processing(params, SetupOptions(particle_diameter_angst=200.0))
    assert setup["motioncorr_bin_factor"] == 2
    assert setup["pixel_size_after_motioncorr_angst"] == pytest.approx(0.825)
    # 1.5 * 200 / 0.825 = 363.6 -> 364..376 all have a prime factor > 7; 378 = 2 * 3^3 * 7
    assert setup["box_px"] == 378
    # 378 * 0.825 / 3.5 = 89.1 -> 90 -> 3.465 A/px
    assert setup["small_box_px"] == 90
    assert setup["patch_x"] == 7 and setup["patch_y"] == 5  # 5760 / 800 = 7.2, 4092 / 800 = 5.1
    options = scheme_options(setup)
    assert options["prep__motioncorr__bin_factor"] == "2"
    assert options["prep__importmovies__angpix"] == "0.4125"  # import takes the movies' pixel
    assert options["proc__extract__extract_size"] == "378"
    assert options["proc__extract__rescale"] == "90"
    assert options["proc__extract__do_rescale"] == "Yes"
    assert options["proc__class2d__particle_diameter"] == "220"


def test_coarse_pixel_is_not_downscaled():
    assert downscaled_box(50, 3.0) == 50
    setup = derive_processing(_params(pixel_size_angst=3.0, dose_per_frame_e_per_angst2=1.0,
                                      n_frames=10), SetupOptions(particle_diameter_angst=100.0))
    assert setup["box_px"] == 50  # 1.5 * 100 / 3 = 50 = 2 * 5^2
    assert setup["small_box_px"] == 50 and setup["do_rescale"] is False


def test_eer_frames_are_grouped_to_one_electron_per_angst2():
    params = _params(pixel_size_angst=0.75, eer=True, total_dose_e_per_angst2=40.0, n_frames=1000)
    setup = derive_processing(params, SetupOptions())
    # 40 / 1000 = 0.04 e/A2 per EER frame -> groups of 25 -> 1.0 e/A2 per fraction
    assert setup["eer_grouping"] == 25
    assert setup["dose_per_frame_e_per_angst2"] == pytest.approx(1.0)
    assert "box_px" not in setup.values  # no particle diameter: no particle sizes


def test_low_dose_frames_are_grouped_for_motion():
    setup = derive_processing(_params(pixel_size_angst=1.0, dose_per_frame_e_per_angst2=0.3,
                                      n_frames=100), SetupOptions())
    assert setup["group_frames"] == 3  # round(1 / 0.3)
    assert setup["group_for_ps"] == 13  # round(4 / 0.3)
    assert setup["patch_x"] == 5  # frame size unknown: RELION's default


def test_missing_required_fields_are_named():
    with pytest.raises(InputError, match="pixel_size_angst.*dose_per_frame"):
        derive_processing(_params(n_frames=40), SetupOptions(particle_diameter_angst=150))


def test_every_value_has_a_source():
    setup = derive_processing(_params(pixel_size_angst=1.1, dose_per_frame_e_per_angst2=1.0,
                                      n_frames=30), SetupOptions(particle_diameter_angst=120))
    assert all(source for _, source in setup.values.values())
    assert "test.xml" in setup.values["pixel_size_angst"][1]


def test_options_validate():
    with pytest.raises(InputError):
        SetupOptions(particle_diameter_angst=-5)


def test_pipeline_autosetup_does_not_import_torch():
    code = "import sys, vitrify.pipeline.autosetup, vitrify.pipeline.mdcatch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@needs_shared("acquisition")
def test_real_falcon3_epu_file_200_angst_particle():
    from vitrify.io.acquisition import read_acquisition
    from vitrify.io.facility import FacilityConfig, apply_facility

    fixtures = shared_fixtures("acquisition")
    params = apply_facility(read_acquisition(
        fixtures / "FoilHole_18890345_Data_18881924_18881926_20200320_090200.xml"), FacilityConfig())
    setup = derive_processing(params, SetupOptions(particle_diameter_angst=200.0))
    # by hand: pixel 1.0684708 A (1.0684707979491392E-10 m); 40.054 e/A2 (4.0054E+21 e/m2) / 40
    assert setup["cs_mm"] == 2.7  # EPU writes no Cs: vitrify's default, named as such
    assert "vitrify defaults" in setup.values["cs_mm"][1]
    assert setup["dose_per_frame_e_per_angst2"] == pytest.approx(1.00135, abs=1e-5)
    assert setup["group_frames"] == 1 and setup["group_for_ps"] == 4
    # 1.5 x 200 / 1.0684708 = 280.8 -> 282 = 2*3*47, 284 = 4*71, 286 = 2*11*13 -> 288 = 2^5 * 3^2
    assert setup["box_px"] == 288
    # 288 x 1.0684708 / 3.5 = 87.9 -> 88 = 8 * 11 -> 90 = 2 * 3^2 * 5, i.e. 3.42 A/px
    assert setup["small_box_px"] == 90
    assert setup["small_pixel_size_angst"] == pytest.approx(1.0684708 * 288 / 90)
    assert setup["mask_diameter_angst"] == pytest.approx(220.0)
    assert setup["patch_x"] == 5 and setup["patch_y"] == 5  # 4096 px / 800 = 5.1
    assert scheme_options(setup)["prep__ctffind__do_phaseshift"] == "No"  # PhasePlateUsed false


def test_phase_plate_turns_on_phase_shift_estimation():
    setup = derive_processing(_params(pixel_size_angst=1.0, dose_per_frame_e_per_angst2=1.0,
                                      n_frames=40, phase_plate=True), SetupOptions())
    assert scheme_options(setup)["prep__ctffind__do_phaseshift"] == "Yes"
    unknown = derive_processing(_params(pixel_size_angst=1.0, dose_per_frame_e_per_angst2=1.0,
                                        n_frames=40), SetupOptions())
    assert unknown["phase_plate"] is False
    assert "not recorded" in unknown.values["phase_plate"][1]

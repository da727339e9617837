"""job_star_from_options of every job module is the inverse of its options_from_job_star.

Options RELION's job.star can hold come back from the RELION names alone; vitrify's own
settings travel as ``vitrify_*`` rows. Every case also goes through a real job.star file.
"""

from __future__ import annotations

import pytest

from vitrify.io.errors import InputError
from vitrify.jobs import autopick, class2d, ctffind, extract, import_, motioncorr, select
from vitrify.jobs.jobstar_values import EXTRA_PREFIX, options_from_values
from vitrify.pipeline._jobstar import JobStar, read_job_star, write_job_star
from vitrify.preprocess.ctf_fit import CtfSearch
from vitrify.preprocess.extraction import ExtractOptions
from vitrify.preprocess.motion import MotionOptions
from vitrify.preprocess.picking import LogPickOptions
from vitrify.preprocess.template_pick import TemplatePickOptions


def _relion_only() -> list[tuple[object, object]]:
    """(module, options) that RELION's job.star options describe completely."""
    return [
        (import_, import_.Options("Movies/*.tiff", False, 0.83, 200.0, 1.4, 0.07, "og2", "mtf.star", 0.3, -0.2)),
        (motioncorr, motioncorr.Options("Import/job001/movies.star", MotionOptions(200.0, 3, 4, 2), 1.2, 0.5,
                                        False, False, 2.0, True, "gain.mrc", 2, 1, "defects.mrc", 2, 20)),
        (ctffind, ctffind.Options("MotionCorr/job002/corrected_micrographs.star",
                                  CtfSearch(256, 25.0, 4.5, 3000.0, 40000.0, 250.0, 5000.0, True, 10.0, 170.0, 5.0),
                                  use_nodw=False)),
        (select, select.Options("CtfFind/job003/micrographs_ctf.star", "values", "rlnCtfFigureOfMerit", 0.1, 0.9)),
        (select, select.Options("Extract/job005/particles.star", "values", "rlnAutopickFigureOfMerit", -1.0, 9.5)),
        (autopick, autopick.Options("CtfFind/job003/micrographs_ctf.star", "log",
                                    LogPickOptions(100.0, 140.0, lowpass_angst=15.0, invert=True,
                                                   threshold_adjust=-0.5, upper_threshold=5.0))),
        (autopick, autopick.Options("CtfFind/job003/micrographs_ctf.star", "template", references="refs.mrcs",
                                    reference_pixel_angst=2.0,
                                    template=TemplatePickOptions(150.0, psi_step_deg=5.0, lowpass_angst=15.0,
                                                                 references_white=False, min_distance_fraction=0.5))),
        (extract, extract.Options("CtfFind/job003/micrographs_ctf.star", "AutoPick/job004/autopick.star",
                                  ExtractOptions(box_px=128, rescale_px=64, bg_radius_px=25.0, white_dust_sigma=5.0,
                                                 black_dust_sigma=4.0), True, 0.2)),
        (class2d, class2d.Options("Extract/job005/particles.star", 20, 200.0, "em", 25, 10.0, 6.0, 2.0, 3.0,
                                  threads=4, device="cuda")),
    ]


def _with_vitrify_settings() -> list[tuple[object, object]]:
    """(module, options) with settings only vitrify has (they need ``vitrify_*`` rows)."""
    return [
        (import_, import_.Options("Movies/*.tiff", only_new=True, stable_seconds=30.0)),
        (motioncorr, motioncorr.Options("movies.star", MotionOptions(iterations=4), device="cpu")),
        (ctffind, ctffind.Options("mics.star", CtfSearch(astigmatism_max_angst=1500.0, fit_threshold=0.5),
                                  write_diagnostics=False, device="cpu")),
        (autopick, autopick.Options("mics.star", "log", n_png=0, topaz_threshold=-1.0, device="cpu",
                                    template=TemplatePickOptions(-1.0, psi_step_deg=5.0, invert=True,
                                                                 threshold_adjust=1.0))),
        (extract, extract.Options("mics.star", reextract_star="Class2D/job006/run_it025_data.star",
                                  reset_offsets=True, device="cpu")),
        (class2d, class2d.Options("particles.star", 10, 150.0, nr_iter=-1, seed=7, oversampling=0, threads=0,
                                  device="auto", memory_budget_mb=512)),
    ]


def _through_file(tmp_path, module, values: dict[str, str]) -> object:
    path = tmp_path / "job.star"
    write_job_star(path, JobStar("relion.x", values))
    return options_from_values(module, read_job_star(path).options)


@pytest.mark.parametrize("case", range(len(_relion_only())))
def test_relion_options_round_trip_without_extras(tmp_path, case):
    module, options = _relion_only()[case]
    values = module.job_star_from_options(options)
    assert not [key for key in values if key.startswith(EXTRA_PREFIX)], values
    assert module.options_from_job_star(dict(values)) == options
    assert _through_file(tmp_path, module, values) == options


@pytest.mark.parametrize("case", range(len(_with_vitrify_settings())))
def test_vitrify_settings_round_trip_as_extra_rows(tmp_path, case):
    module, options = _with_vitrify_settings()[case]
    values = module.job_star_from_options(options)
    extras = [key for key in values if key.startswith(EXTRA_PREFIX)]
    assert extras
    assert module.options_from_job_star(dict(values)) != options  # RELION's names alone lose them
    assert _through_file(tmp_path, module, values) == options


def test_relion_names_and_texts():
    values = motioncorr.job_star_from_options(motioncorr.Options("m.star", gain_rotation=1, gain_flip=2))
    assert (values["gain_rot"], values["gain_flip"]) == ("90 degrees (1)", "Flip left to right (2)")
    values = class2d.job_star_from_options(class2d.Options("p.star", 5, 100.0, psi_step_deg=12.0, offset_step_px=2.0))
    assert (values["do_grad"], values["nr_iter_grad"], values["psi_sampling"], values["offset_step"]) == \
        ("Yes", "200", "6", "1")
    assert select.job_star_from_options(select.Options("Extract/job005/particles.star"))["fn_data"] != ""
    assert import_.job_star_from_options(import_.Options("a/*.mrc", pixel_size_angst=1.5))["angpix"] == "1.5"


def test_bad_extra_rows_name_the_option():
    values = ctffind.job_star_from_options(ctffind.Options("mics.star"))
    with pytest.raises(InputError, match="vitrify_nonsense"):
        options_from_values(ctffind, {**values, "vitrify_nonsense": "1"})
    with pytest.raises(InputError, match="vitrify_search.tile_px"):
        options_from_values(ctffind, {**values, "vitrify_search.tile_px": "big"})

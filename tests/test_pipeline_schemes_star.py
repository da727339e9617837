"""scheme.star read/write (RELION 4's own prep and proc schemes), validation, $$ substitution."""

from __future__ import annotations

import shutil

import pytest

from conftest import needs_shared, shared_fixtures
from vitrify.io.errors import InputError
from vitrify.pipeline._star import read_blocks
from vitrify.pipeline.schemes.model import SchemeJob
from vitrify.pipeline.schemes.names import substitute_variables, translate_job_names
from vitrify.pipeline.schemes.star import read_scheme, write_scheme

FIXTURES = shared_fixtures("relion4_schemes")


def _normalised(blocks):
    """{block: sorted rows of text values} with numbers compared as numbers."""
    def cell(v):
        try:
            return round(float(v), 6)
        except ValueError:
            return v
    out = {}
    for name, table in blocks.items():
        if isinstance(table, dict):
            out[name] = sorted((k, cell(v)) for k, v in table.items())
        else:
            out[name] = sorted(tuple((c, cell(v)) for c, v in zip(table.columns, row))
                               for row in table.itertuples(index=False))
    return out


@needs_shared("relion4_schemes")
@pytest.mark.parametrize("name", ["prep", "proc"])
def test_relion_schemes_round_trip(tmp_path, name):
    source = FIXTURES / name / "scheme.star"
    scheme = read_scheme(source)
    out = tmp_path / "scheme.star"
    write_scheme(out, scheme)
    original, written = read_blocks(source), read_blocks(out)
    assert list(original) == list(written)
    assert _normalised(original) == _normalised(written)
    assert read_scheme(out, validate=False) == scheme
    text = out.read_text()
    assert text.count("# version 30001") == len(original)
    edges = written["scheme_edges"]["rlnSchemeEdgeInputNodeName"].tolist()
    assert edges == original["scheme_edges"]["rlnSchemeEdgeInputNodeName"].tolist()   # order kept


@needs_shared("relion4_schemes")
def test_proc_scheme_content():
    scheme = read_scheme(FIXTURES / "proc" / "scheme.star")
    assert scheme.name == "Schemes/proc/" and scheme.current_node == "WAIT"
    assert scheme.floats["min_nr_parts_3d"] == 5000.0 and scheme.bools["do_log"] is True
    assert scheme.strings["iniref"] == "None"
    assert scheme.jobs["class2d"].mode == "new" and not scheme.jobs["class2d"].has_started
    assert scheme.next_node("HAS_ctffind") == "WAIT"
    scheme.bools["has_ctffind"] = True
    assert scheme.next_node("HAS_ctffind") == "select_mics"


def _copy(tmp_path, name="prep"):
    shutil.copytree(FIXTURES / name, tmp_path / name)
    return tmp_path / name / "scheme.star"


def _edit(path, old, new):
    path.write_text(path.read_text().replace(old, new, 1))


@needs_shared("relion4_schemes")
@pytest.mark.parametrize("old, new, message, line", [
    ("motioncorr    ctffind            0", "motioncorr    nowhere            0",
     "'nowhere' is neither an operator nor a job", "data_scheme_edges line 64"),
    ("WAIT       wait  undefined   wait_sec", "WAIT       wait_for_it  undefined   wait_sec",
     "unknown type 'wait_for_it'", "data_scheme_operators line 34"),
    ("EXIT_maxtime exit_maxtime  undefined    maxtime_hr", "EXIT_maxtime exit_maxtime  undefined    hours",
     "'hours' is not a float variable", "data_scheme_operators line 33"),
    ("motioncorr    ctffind            0  undefined  undefined",
     "motioncorr    ctffind            1  importmovies  do_it",
     "'do_it', which is no bool variable", "data_scheme_edges line 64"),
    ("importmovies importmovies   continue", "importmovies importmovies   sometimes",
     "mode 'sometimes'", "line 46"),
])
def test_validation_names_file_and_row(tmp_path, old, new, message, line):
    path = _copy(tmp_path)
    _edit(path, old, new)
    with pytest.raises(InputError) as err:
        read_scheme(path)
    assert message in str(err.value) and str(path) in str(err.value) and line in str(err.value)


@needs_shared("relion4_schemes")
def test_missing_job_template_is_an_error(tmp_path):
    path = _copy(tmp_path)
    (path.parent / "ctffind" / "job.star").unlink()
    with pytest.raises(InputError, match="job ctffind has no template"):
        read_scheme(path)


def test_operator_only_scheme_with_empty_jobs_table(tmp_path):
    path = tmp_path / "scheme.star"
    path.write_text(
        "data_scheme_general\n_rlnSchemeName Schemes/ops/\n_rlnSchemeCurrentNodeName undefined\n\n"
        "data_scheme_floats\nloop_\n_rlnSchemeFloatVariableName\n_rlnSchemeFloatVariableValue\n"
        "_rlnSchemeFloatVariableResetValue\ncount 0 0\n\n"
        "data_scheme_operators\nloop_\n_rlnSchemeOperatorName\n_rlnSchemeOperatorType\n"
        "_rlnSchemeOperatorOutput\n_rlnSchemeOperatorInput1\n_rlnSchemeOperatorInput2\n"
        "ADD float=plus count count 1\nSTOP exit undefined undefined undefined\n\n"
        "data_scheme_jobs\nloop_\n_rlnSchemeJobNameOriginal\n_rlnSchemeJobName\n_rlnSchemeJobMode\n"
        "_rlnSchemeJobHasStarted\n\n"
        "data_scheme_edges\nloop_\n_rlnSchemeEdgeInputNodeName\n_rlnSchemeEdgeOutputNodeName\n"
        "_rlnSchemeEdgeIsFork\n_rlnSchemeEdgeOutputNodeNameIfTrue\n_rlnSchemeEdgeBooleanVariable\n"
        "ADD STOP 0 undefined undefined\n")
    scheme = read_scheme(path)
    assert scheme.jobs == {} and scheme.current_node == "ADD"
    write_scheme(path, scheme)
    assert "data_scheme_jobs" not in path.read_text()
    assert read_scheme(path) == scheme


@needs_shared("relion4_schemes")
def test_reset_and_set_variable():
    scheme = read_scheme(FIXTURES / "proc" / "scheme.star")
    scheme.set_variable("wait_sec", "5", reset_value="7")
    scheme.set_variable("do_log", "False")
    scheme.jobs["autopick"].name, scheme.jobs["autopick"].has_started = "AutoPick/job003/", True
    scheme.current_node = "autopick"
    assert scheme.floats["wait_sec"] == 5.0 and scheme.bools["do_log"] is False
    with pytest.raises(ValueError):
        scheme.set_variable("do_log", "maybe")
    scheme.reset()
    assert scheme.floats["wait_sec"] == 7.0 and scheme.bools["do_log"] is True
    assert scheme.jobs["autopick"] == SchemeJob("autopick", "autopick", "continue", False)
    assert scheme.current_node == "WAIT"


@needs_shared("relion4_schemes")
def test_substitution_and_translation(tmp_path):
    scheme = read_scheme(FIXTURES / "proc" / "scheme.star")
    scheme.floats["min_nr_parts_3d"] = 50.0
    scheme.floats["wait_sec"] = 0.5
    assert substitute_variables("--a $$min_nr_parts_3d  --b $$wait_sec", scheme) == "--a 50 --b 0.5"
    assert substitute_variables("$$do_log", scheme, boolean_option=True) == "Yes"
    assert substitute_variables("$$ctffind_mics", scheme) == "Schemes/prep/ctffind/micrographs_ctf.star"
    with pytest.raises(InputError, match="unknown scheme variable"):
        substitute_variables("$$nope", scheme, option="fn_in", where="job.star")
    with pytest.raises(InputError, match="Yes/No option"):
        substitute_variables("$$wait_sec", scheme, boolean_option=True)
    scheme.jobs["select_mics"].name = "Select/job004/"
    assert translate_job_names("Schemes/proc/select_mics/micrographs.star", scheme, tmp_path) \
        == "Select/job004/micrographs.star"
    assert translate_job_names("Schemes/proc/extract/particles.star", scheme, tmp_path) \
        == "extract/particles.star"  # before the first run: the bare name (RELION)
    prep = read_scheme(FIXTURES / "prep" / "scheme.star")
    prep.jobs["ctffind"].name = "CtfFind/job003/"
    (tmp_path / "Schemes/prep").mkdir(parents=True)
    write_scheme(tmp_path / "Schemes/prep/scheme.star", prep)
    assert translate_job_names("Schemes/prep/ctffind/micrographs_ctf.star", scheme, tmp_path) \
        == "CtfFind/job003/micrographs_ctf.star"


@needs_shared("relion4_schemes")
@pytest.mark.parametrize("kind", ["prep", "proc"])
def test_shipped_templates_match_relion_graph_and_variables(tmp_path, kind):
    from vitrify.jobs.registry import job_directory
    from vitrify.pipeline.schemes.templates import read_template
    from vitrify.pipeline.schemes.templates_data import install_scheme

    ours = read_scheme(install_scheme(tmp_path, kind))
    relion = read_scheme(FIXTURES / kind / "scheme.star")
    for table in ("floats", "bools", "strings", "operators", "edges"):
        assert getattr(ours, table) == getattr(relion, table), table
    assert {k: j.mode for k, j in ours.jobs.items()} == {k: j.mode for k, j in relion.jobs.items()}
    for job in ours.jobs:
        mine = read_template(tmp_path / "Schemes" / kind / job / "job.star")
        theirs = read_template(FIXTURES / kind / job / "job.star")
        assert job_directory(mine.type_label) == job_directory(theirs.type_label)
        for option, value in theirs.options.items():     # the scheme wiring is the same
            if "Schemes/" in value or "$$" in value:
                assert mine.options[option] == value, (job, option)
    with pytest.raises(InputError, match="already exists"):
        install_scheme(tmp_path, kind)


def test_template_installed_under_another_name(tmp_path):
    from vitrify.pipeline.schemes.templates_data import install_scheme

    scheme = read_scheme(install_scheme(tmp_path, "proc", "proc2"))
    assert scheme.name == "Schemes/proc2/"
    assert scheme.strings["selected_mics"] == "Schemes/proc2/select_mics/micrographs.star"
    assert scheme.strings["ctffind_mics"] == "Schemes/prep/ctffind/micrographs_ctf.star"
    with pytest.raises(InputError, match="no scheme template"):
        install_scheme(tmp_path, "refine")


@needs_shared("relion4_schemes")
def test_referenced_jobs_through_paths_and_variables(tmp_path):
    from vitrify.pipeline.schemes.templates import JobTemplate, referenced_jobs

    scheme = read_scheme(FIXTURES / "proc" / "scheme.star")
    template = JobTemplate(tmp_path / "job.star", "relion.refine3d",
                           {"fn_img": "Schemes/proc/select_parts/particles.star", "fn_ref": "$$myref"})
    assert referenced_jobs(template, scheme) == {"select_parts"}
    scheme.jobs["inimodel3d"].name, scheme.jobs["inimodel3d"].has_started = "InitialModel/job009/", True
    scheme.strings["myref"] = "InitialModel/job009/initial_model.mrc"    # set by string=set
    assert referenced_jobs(template, scheme) == {"select_parts", "inimodel3d"}

"""Project and pipeliner: job directories, default_pipeline.star, exit markers, running jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitrify.io.errors import InputError
from vitrify.pipeline._jobstar import read_job_star
from vitrify.pipeline._pipeline_star import read_pipeline
from vitrify.pipeline.project import JobRecord, Project


def _raw_files(root: Path, names: list[str]) -> None:
    (root / "Raw").mkdir(exist_ok=True)
    for name in names:
        (root / "Raw" / name).write_bytes(b"")


def _import_options(pattern: str = "Raw/*.mrc") -> dict[str, str]:
    return {"fn_in_raw": pattern, "is_multiframe": "No", "angpix": "1.5", "kV": "300", "Cs": "2.7",
            "Q0": "0.1", "optics_group_name": "opticsGroup1", "do_queue": "No"}


def test_add_job_numbers_jobs_and_writes_relion_files(tmp_path):
    from vitrify.io.star import read_star

    project = Project.open(tmp_path)
    assert (tmp_path / "default_pipeline.star").exists()
    first = project.add_job("relion.import", _import_options())
    second = project.add_job("relion.ctffind.ctffind4", {"input_star_mics": f"{first}micrographs.star",
                                                          "box": "512", "other_args": ""}, alias="ctf")
    third = project.add_job("relion.select.onvalue", {"fn_mic": f"{second}micrographs_ctf.star"})
    assert (first, second, third) == ("Import/job001/", "CtfFind/job002/", "Select/job003/")
    # job.star in RELION-4 form (an independent reader checks it in the next test)
    blocks = read_star(tmp_path / second / "job.star", as_strings=True)
    assert blocks["job"]["rlnJobTypeLabel"] == "relion.ctffind.ctffind4"
    assert int(blocks["job"]["rlnJobIsContinue"]) == 0
    values = dict(zip(blocks["joboptions_values"]["rlnJobOptionVariable"],
                      blocks["joboptions_values"]["rlnJobOptionValue"].astype(str)))
    assert values["input_star_mics"] == "Import/job001/micrographs.star"
    assert project.job_options(second) == {"input_star_mics": "Import/job001/micrographs.star",
                                           "box": "512", "other_args": ""}
    assert "CtfFind/job002/" in (tmp_path / second / "note.txt").read_text()
    # the alias is RELION's symlink and names the job too
    assert (tmp_path / "CtfFind" / "ctf").resolve() == (tmp_path / second).resolve()
    assert project.job_status("CtfFind/ctf/") == "Scheduled"
    state = read_pipeline(tmp_path / "default_pipeline.star")
    assert state.job_counter == 4
    assert [p.status for p in state.processes.values()] == ["Scheduled"] * 3
    assert ("Import/job001/micrographs.star", second) in state.input_edges
    assert state.nodes["CtfFind/job002/micrographs_ctf.star"] == "MicrographsData.star.relion"
    assert project.jobs()[1] == JobRecord(second, "relion.ctffind.ctffind4", "CtfFind/ctf/", "Scheduled")
    # a reopened project continues the numbering
    assert Project.open(tmp_path).add_job("relion.class2d", {}) == "Class2D/job004/"


def test_job_star_is_read_by_the_starfile_package(tmp_path):
    """An independent STAR reader (optional: not a dependency of vitrify) reads our job.star."""
    starfile = pytest.importorskip("starfile")
    options = {"input_star_mics": "Import/job001/micrographs.star", "box": "512", "other_args": ""}
    name = Project.open(tmp_path).add_job("relion.ctffind.ctffind4", options)
    blocks = starfile.read(tmp_path / name / "job.star", always_dict=True)
    assert blocks["job"]["rlnJobTypeLabel"] == "relion.ctffind.ctffind4"
    assert int(blocks["job"]["rlnJobIsContinue"]) == 0
    values = dict(zip(blocks["joboptions_values"]["rlnJobOptionVariable"],
                      blocks["joboptions_values"]["rlnJobOptionValue"].astype(str)))
    assert set(values) == set(options)  # starfile types the values (512.0, NaN for ''): names only
    assert values["input_star_mics"] == "Import/job001/micrographs.star"


def test_bad_requests_are_input_errors(tmp_path):
    project = Project.open(tmp_path)
    with pytest.raises(InputError, match="unknown job type"):
        project.add_job("relion.nosuchjob", {})
    name = project.add_job("relion.import", _import_options(), alias="raw")
    with pytest.raises(InputError, match="already used"):
        project.add_job("relion.import", _import_options(), alias="raw")
    with pytest.raises(InputError, match="bad alias"):
        project.add_job("relion.import", _import_options(), alias="job007")
    with pytest.raises(InputError, match="other_args: a job option value cannot contain line breaks"):
        project.add_job("relion.import", {"other_args": "a\nb"})
    with pytest.raises(InputError, match="bad job option name 'fn in'"):
        project.add_job("relion.import", {"fn in": "x"})
    with pytest.raises(InputError, match="no job Class2D/job009/"):
        project.job_status("Class2D/job009")
    assert project.job_status(name.rstrip("/")) == "Scheduled"


def test_unavailable_job_type_fails_with_message_and_marker(tmp_path):
    project = Project.open(tmp_path)
    name = project.add_job("relion.polish", {"fn_data": "Refine3D/job002/run_data.star"})
    assert project.run_job(name, wait=True) == "Failed"
    job_dir = tmp_path / name
    assert (job_dir / "RELION_JOB_EXIT_FAILURE").exists()
    assert not (job_dir / "RELION_JOB_EXIT_SUCCESS").exists()
    err = " ".join((job_dir / "run.err").read_text().split())
    assert "job type relion.polish is not available in vitrify yet" in err
    assert read_pipeline(tmp_path / "default_pipeline.star").processes[name].status == "Failed"
    assert "run-job --job Polish/job001/job.star" in (job_dir / "note.txt").read_text()


def test_import_job_runs_and_records_output_nodes(tmp_path):
    _raw_files(tmp_path, ["a.mrc", "b.mrc"])
    project = Project.open(tmp_path)
    name = project.add_job("relion.import", _import_options())
    assert project.run_job(name, wait=True) == "Succeeded"
    assert (tmp_path / name / "RELION_JOB_EXIT_SUCCESS").exists()
    state = read_pipeline(tmp_path / "default_pipeline.star")
    assert state.output_edges == [(name, "Import/job001/micrographs.star")]
    assert state.nodes["Import/job001/micrographs.star"] == "MicrographsData.star.relion"
    assert (tmp_path / ".Nodes" / "MicrographsData" / "Import" / "job001" / "micrographs.star").exists()
    assert project.job_outputs(name) == ["Import/job001/micrographs.star"]
    ctf = project.add_job("relion.ctffind", {"input_star_mics": project.job_outputs(name)[0]})
    assert project.job_inputs(ctf) == ["Import/job001/micrographs.star"] and project.job_outputs(ctf) == []
    mini = read_pipeline(tmp_path / name / "job_pipeline.star")
    assert list(mini.processes) == [name] and mini.output_edges == state.output_edges
    assert read_job_star(tmp_path / name / "job.star").is_continue is False


def test_registry_resolves_relion_labels():
    from vitrify.jobs import registry

    assert registry.base_label("relion.motioncorr.own") == "relion.motioncorr"
    assert registry.job_directory("relion.select.onvalue") == "Select"
    assert registry.job_directory("relion.initialmodel") == "InitialModel"
    module = registry.resolve_job("relion.import.movies", {"do_raw": "Yes"})
    assert module.__name__ == "vitrify.jobs.import_" and callable(module.options_from_job_star)
    assert registry.resolve_job("relion.select.class2dauto", {}).__name__ == "vitrify.jobs.class_ranker"
    assert registry.resolve_job("relion.select", {"do_class_ranker": "Yes"}).__name__ == "vitrify.jobs.class_ranker"
    assert registry.resolve_job("relion.select", {"do_class_ranker": "No"}).__name__ == "vitrify.jobs.select"
    assert registry.resolve_job("relion.initialmodel", {}).__name__ == "vitrify.jobs.initialmodel"
    assert registry.resolve_job("relion.class3d", {}).__name__ == "vitrify.jobs.class3d"
    assert registry.resolve_job("relion.refine3d", {}).__name__ == "vitrify.jobs.refine3d"
    for label in ("relion.polish", "relion.ctfrefine", "relion.multibody"):
        with pytest.raises(InputError, match=f"job type {label} is not available in vitrify yet"):
            registry.resolve_job(label, {})
    with pytest.raises(InputError, match="do_other = yes"):
        registry.resolve_job("relion.import", {"do_other": "Yes"})
    with pytest.raises(InputError, match="unknown job type"):
        registry.job_directory("relion.unknown")


def test_graph_layers_follow_the_data(tmp_path):
    from vitrify.pipeline.graph import JobEdge, draw_pipeline, job_edges, layers

    project = Project.open(tmp_path)
    imp = project.add_job("relion.import", _import_options())
    ctf = project.add_job("relion.ctffind", {"input_star_mics": f"{imp}micrographs.star"})
    sel = project.add_job("relion.select", {"fn_mic": f"{ctf}micrographs_ctf.star"})
    pick = project.add_job("relion.autopick.log", {"fn_input_autopick": f"{sel}micrographs.star"})
    ext = project.add_job("relion.extract", {"star_mics": f"{sel}micrographs.star",
                                             "coords_suffix": f"{pick}autopick.star"})
    other = project.add_job("relion.class2d", {"fn_img": "Elsewhere/particles.star"})
    state = project.pipeline()
    assert layers(state) == {imp: 0, ctf: 1, sel: 2, pick: 3, ext: 4, other: 0}
    assert JobEdge(sel, f"{sel}micrographs.star", ext) in job_edges(state)
    assert len(job_edges(state)) == 5
    assert draw_pipeline(state, tmp_path / "g.svg").read_text().lstrip().startswith("<?xml")


RELION4_PIPELINE = """
# version 30001

data_pipeline_general

_rlnPipeLineJobCounter                       7
 

# version 30001

data_pipeline_processes

loop_ 
_rlnPipeLineProcessName #1 
_rlnPipeLineProcessAlias #2 
_rlnPipeLineProcessTypeLabel #3 
_rlnPipeLineProcessStatusLabel #4 
Import/job001/       None relion.import.movies  Succeeded 
MotionCorr/job002/ MotionCorr/own/ relion.motioncorr.own  Succeeded 
CtfFind/job003/       None relion.ctffind.ctffind4     Failed 
CtfFind/job004/       None relion.ctffind.ctffind4    Aborted 
AutoPick/job006/       None relion.autopick.log  Scheduled 
 

# version 30001

data_pipeline_nodes

loop_ 
_rlnPipeLineNodeName #1 
_rlnPipeLineNodeTypeLabel #2 
Import/job001/movies.star MicrographMoviesData.star.relion 
MotionCorr/job002/corrected_micrographs.star MicrographsData.star.relion.motioncorr 
MotionCorr/job002/logfile.pdf LogFile.pdf.relion.motioncorr 
 

# version 30001

data_pipeline_input_edges

loop_ 
_rlnPipeLineEdgeFromNode #1 
_rlnPipeLineEdgeProcess #2 
Import/job001/movies.star MotionCorr/job002/ 
MotionCorr/job002/corrected_micrographs.star CtfFind/job003/ 
 

# version 30001

data_pipeline_output_edges

loop_ 
_rlnPipeLineEdgeProcess #1 
_rlnPipeLineEdgeToNode #2 
Import/job001/ Import/job001/movies.star 
MotionCorr/job002/ MotionCorr/job002/corrected_micrographs.star 
MotionCorr/job002/ MotionCorr/job002/logfile.pdf 
 
"""

LEGACY_PIPELINE = """
data_pipeline_general
_rlnPipeLineJobCounter 3

data_pipeline_processes
loop_
_rlnPipeLineProcessName #1
_rlnPipeLineProcessAlias #2
_rlnPipeLineProcessType #3
_rlnPipeLineProcessStatus #4
Import/job001/ None 0 2
Class2D/job002/ None 8 0
"""


def test_relion_written_pipelines_are_read_and_kept(tmp_path):
    (tmp_path / "default_pipeline.star").write_text(RELION4_PIPELINE)
    project = Project.open(tmp_path)
    records = project.jobs()
    assert [(r.name, r.status) for r in records] == [
        ("Import/job001/", "Succeeded"), ("MotionCorr/job002/", "Succeeded"), ("CtfFind/job003/", "Failed"),
        ("CtfFind/job004/", "Aborted"), ("AutoPick/job006/", "Scheduled")]
    assert records[1].alias == "MotionCorr/own/"
    assert project.add_job("relion.ctffind", {"input_star_mics": "MotionCorr/job002/corrected_micrographs.star"}) \
        == "CtfFind/job007/"
    state = project.pipeline()
    assert state.job_counter == 8
    assert state.nodes["MotionCorr/job002/corrected_micrographs.star"] == "MicrographsData.star.relion.motioncorr"
    assert state.input_edges[-1] == ("MotionCorr/job002/corrected_micrographs.star", "CtfFind/job007/")
    text = (tmp_path / "default_pipeline.star").read_text()
    for line in RELION4_PIPELINE.strip().splitlines():  # RELION's own rows come back byte for byte
        assert line in text or "JobCounter" in line
    (tmp_path / "default_pipeline.star").write_text(LEGACY_PIPELINE)
    assert [(r.type_label, r.status) for r in Project.open(tmp_path).jobs()] == [
        ("relion.import", "Succeeded"), ("relion.class2d", "Running")]


def test_pipeline_lock_excludes_others_and_respects_relion_lock(tmp_path):
    from vitrify.pipeline._lock import pipeline_lock

    with pipeline_lock(tmp_path):
        with pytest.raises(InputError, match="stays locked"), pipeline_lock(tmp_path, timeout_s=0.2):
            pass
    with pipeline_lock(tmp_path, timeout_s=0.2):  # released on exit
        pass
    relion_lock = tmp_path / ".relion_lock" / "lock_default_pipeline.star"
    relion_lock.parent.mkdir()
    relion_lock.touch()
    with pytest.raises(InputError, match="remove .relion_lock"), pipeline_lock(tmp_path, timeout_s=0.2):
        pass
    relion_lock.unlink()
    with pipeline_lock(tmp_path, timeout_s=0.2):
        pass


def test_aliases_can_be_changed_and_removed_and_numbers_skip_leftover_dirs(tmp_path):
    project = Project.open(tmp_path)
    (tmp_path / "Import" / "job001").mkdir(parents=True)  # left over from an earlier, lost pipeline
    name = project.add_job("relion.import", _import_options())
    assert name == "Import/job002/"
    project.set_alias(name, "first")
    assert (tmp_path / "Import" / "first").resolve() == (tmp_path / name).resolve()
    project.set_alias(name, "second")
    assert not (tmp_path / "Import" / "first").exists()
    assert project.jobs()[0].alias == "Import/second/"
    assert project.job_options("Import/second/") == _import_options()
    other = project.add_job("relion.import", _import_options())
    with pytest.raises(InputError, match="already used"):
        project.set_alias(other, "second")
    project.set_alias(name, None)
    assert not (tmp_path / "Import" / "second").is_symlink()
    assert [r.alias for r in project.jobs()] == [None, None]
    assert "None" in (tmp_path / "default_pipeline.star").read_text()

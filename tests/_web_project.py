"""A small RELION project for the dashboard tests, with known values in every output file.

Jobs are added through the pipeliner (``Project.add_job``) and their outputs written as RELION's
jobs write them (STAR, MRC, exit markers), so the dashboard reads exactly what a real run leaves,
with every number known: three movies recorded 30 s apart (EPU XML, written out of name order),
their drift, defocus, CTF resolution and picks; a Class2D iteration with three classes; a class
ranker job; a Refine3D job with a map and an FSC curve; a failed job and a skipped movie.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from vitrify.io.mrc import write_mrc_array
from vitrify.io.star import write_star
from vitrify.jobs.status import EXIT_FAILURE, EXIT_SUCCESS, JobStatus
from vitrify.pipeline.project import Project
from vitrify.pipeline.schemes.control import set_job_option
from vitrify.pipeline.schemes.templates_data import install_scheme

START = datetime.datetime(2026, 3, 1, 10, 0, 0, tzinfo=datetime.timezone.utc)
MOVIES = ["mov_a", "mov_b", "mov_c"]
#: recorded at START + offset: mov_b first, then mov_c, then mov_a (not name order)
OFFSETS_S = {"mov_a": 60.0, "mov_b": 0.0, "mov_c": 30.0}
DRIFT = {"mov_a": 4.5, "mov_b": 7.25, "mov_c": 12.0}
DEFOCUS_UV = {"mov_a": (15000.0, 14000.0), "mov_b": (20000.0, 19000.0), "mov_c": (25000.0, 24600.0)}
CTF_RES = {"mov_a": 5.5, "mov_b": 9.0, "mov_c": 4.0}
PICKS = {"mov_a": 3, "mov_b": 5, "mov_c": 0}
SELECT_MAX = 7.5          # select_mics keeps rlnCtfMaxResolution <= 7.5 Å: mov_a and mov_c
SCORES = {1: 0.82, 2: 0.31, 3: 0.64}
SELECTED = (1, 3)
RANK_THRESHOLD = 0.5
FSC = [(0.0, 1.0), (0.05, 0.98), (0.1, 0.8), (0.15, 0.3), (0.2, 0.05)]
REFINE_RESOLUTION = 7.1
MIC_PX = 96


def micrograph_name(movie: str, job: str = "MotionCorr/job002/") -> str:
    return f"{job}Movies/{movie}.mrc"


def finish(project: Project, name: str, status: JobStatus = JobStatus.SUCCEEDED) -> None:
    """What a job's last act is: its exit marker, then the pipeline records the status."""
    marker = project.root / name / (EXIT_SUCCESS if status == JobStatus.SUCCEEDED else EXIT_FAILURE)
    marker.touch()
    ended_s = (START + datetime.timedelta(minutes=10)).timestamp()   # every job ended at START + 10 min
    os.utime(marker, (ended_s, ended_s))
    project.record_status(name, status)


def _note_run(project: Project, name: str, start: datetime.datetime) -> None:
    with open(project.root / name / "note.txt", "a", encoding="utf-8") as note:
        note.write(f" ++++ Executing new job on {start.replace(tzinfo=None).isoformat(timespec='seconds')}\n")
    (project.root / name / "run.out").write_text("started\n")


def _write_movies(root: Path) -> None:
    (root / "Movies").mkdir()
    for movie in MOVIES:
        (root / "Movies" / f"{movie}.tiff").write_bytes(b"not read by the dashboard")
        stamp = (START + datetime.timedelta(seconds=OFFSETS_S[movie])).isoformat()
        (root / "Movies" / f"{movie}.xml").write_text(
            f'<MicroscopeImage xmlns="http://schemas.datacontract.org/2004/07/Fei.SharedObjects"><microscopeData>'
            f"<acquisition><acquisitionDateTime>{stamp}</acquisitionDateTime></acquisition></microscopeData>"
            "</MicroscopeImage>")


def motion_table(movies: list[str], job: str = "MotionCorr/job002/") -> pd.DataFrame:
    return pd.DataFrame({"rlnMicrographName": [micrograph_name(m, job) for m in movies],
                         "rlnOpticsGroup": [1] * len(movies),
                         "rlnAccumMotionTotal": [DRIFT[m] for m in movies],
                         "rlnAccumMotionEarly": [DRIFT[m] * 0.7 for m in movies],
                         "rlnAccumMotionLate": [DRIFT[m] * 0.3 for m in movies]})


def ctf_table(movies: list[str]) -> pd.DataFrame:
    table = motion_table(movies)
    table["rlnDefocusU"] = [DEFOCUS_UV[m][0] for m in movies]
    table["rlnDefocusV"] = [DEFOCUS_UV[m][1] for m in movies]
    table["rlnCtfAstigmatism"] = [DEFOCUS_UV[m][0] - DEFOCUS_UV[m][1] for m in movies]
    table["rlnDefocusAngle"] = [10.0] * len(movies)
    table["rlnCtfMaxResolution"] = [CTF_RES[m] for m in movies]
    return table


def add_ctffind(project: Project, movies: list[str]) -> str:
    """A CtfFind job over ``movies``' micrographs, finished (used again by the live tests)."""
    name = project.add_job("relion.ctffind", {"input_star_mics": "MotionCorr/job002/corrected_micrographs.star"})
    _note_run(project, name, START + datetime.timedelta(minutes=5))
    write_star(project.root / name / "micrographs_ctf.star", {"micrographs": ctf_table(movies)})
    finish(project, name)
    return name


def _write_micrographs(project: Project) -> None:
    root = project.root
    imported = project.add_job("relion.import", {"fn_in_raw": "Movies/*.tiff"})
    write_star(root / imported / "movies.star",
               {"movies": pd.DataFrame({"rlnMicrographMovieName": [f"Movies/{m}.tiff" for m in MOVIES],
                                        "rlnOpticsGroup": [1] * 3})})
    finish(project, imported)
    motion = project.add_job("relion.motioncorr", {"input_star_mics": f"{imported}movies.star"})
    _note_run(project, motion, START + datetime.timedelta(minutes=2))
    (root / motion / "Movies").mkdir()
    rng = np.random.default_rng(0)
    for movie in MOVIES:
        write_mrc_array(root / micrograph_name(movie), rng.normal(size=(MIC_PX, MIC_PX)).astype(np.float32), 2.0)
    write_star(root / motion / "corrected_micrographs.star", {"micrographs": motion_table(MOVIES)})
    (root / motion / "skipped.txt").write_text("Movies/mov_z.tiff\tthe movie is truncated (3 of 8 frames)\n")
    finish(project, motion)


def _write_picks(project: Project, ctf_job: str) -> None:
    root = project.root
    select = project.add_job("relion.select", {"fn_mic": f"{ctf_job}micrographs_ctf.star"})
    kept = [m for m in MOVIES if CTF_RES[m] <= SELECT_MAX]
    write_star(root / select / "micrographs.star", {"micrographs": ctf_table(kept)})
    finish(project, select)
    pick = project.add_job("relion.autopick", {"fn_input_autopick": f"{select}micrographs.star",
                                               "log_diam_max": "40"})
    (root / pick / "Movies").mkdir()
    files = []
    for movie in MOVIES:
        coords = pd.DataFrame({"rlnCoordinateX": 10.0 + 5 * np.arange(PICKS[movie]),
                               "rlnCoordinateY": 20.0 + 3 * np.arange(PICKS[movie])})
        write_star(root / pick / "Movies" / f"{movie}_autopick.star", {"": coords})
        files.append(f"{pick}Movies/{movie}_autopick.star")
    write_star(root / pick / "autopick.star", {"coordinate_files": pd.DataFrame(
        {"rlnMicrographName": [micrograph_name(m) for m in MOVIES], "rlnMicrographCoordinates": files})})
    finish(project, pick)


def _write_classes(project: Project) -> None:
    root = project.root
    class2d = project.add_job("relion.class2d", {"fn_img": "Extract/job009/particles.star"})
    images = np.zeros((3, 24, 24), dtype=np.float32)
    for k in range(3):
        images[k, 8:16, 4 + 4 * k:12 + 4 * k] = 1.0
    write_mrc_array(root / class2d / "run_it002_classes.mrcs", images, 3.0)
    refs = [f"{k:06d}@{class2d}run_it002_classes.mrcs" for k in (1, 2, 3)]
    write_star(root / class2d / "run_it002_model.star", {
        "model_general": {"rlnCurrentResolution": 12.5},
        "model_classes": pd.DataFrame({"rlnReferenceImage": refs, "rlnClassDistribution": [0.5, 0.2, 0.3],
                                       "rlnEstimatedResolution": [11.0, 30.0, 14.0]})})
    finish(project, class2d)
    ranker = project.add_job("relion.select.class2dauto", {"fn_model": f"{class2d}run_it002_optimiser.star",
                                                           "rank_threshold": str(RANK_THRESHOLD)})
    write_star(root / ranker / "rank_model.star", {"model_classes": pd.DataFrame(
        {"rlnReferenceImage": refs, "rlnClassScore": [SCORES[k] for k in (1, 2, 3)]})})
    chosen = [refs[k - 1] for k in SELECTED]
    write_star(root / ranker / "class_averages.star", {"": pd.DataFrame(
        {"rlnReferenceImage": chosen, "rlnPredictedClassScore": [SCORES[k] for k in SELECTED]})})
    finish(project, ranker)


def _write_refine(project: Project) -> None:
    root = project.root
    refine = project.add_job("relion.refine3d", {"fn_img": "Select/job011/particles.star"})
    z, y, x = np.mgrid[:16, :16, :16]
    write_mrc_array(root / refine / "run_class001.mrc",
                    np.exp(-((x - 7.5) ** 2 + (y - 6.5) ** 2 + (z - 7.5) ** 2) / 8.0).astype(np.float32), 3.0)
    write_star(root / refine / "run_model.star", {
        "model_general": {"rlnCurrentResolution": REFINE_RESOLUTION},
        "model_class_1": pd.DataFrame({"rlnSpectralIndex": list(range(len(FSC))),
                                       "rlnResolution": [r for r, _ in FSC],
                                       "rlnGoldStandardFsc": [f for _, f in FSC]})})
    finish(project, refine)


def build_project(root: Path) -> Project:
    """The whole project (see the module docstring); returns it opened."""
    project = Project.open(root)
    _write_movies(project.root)
    install_scheme(project.root, "proc")
    set_job_option(project.root, "proc", "select_mics", "select_maxval", str(SELECT_MAX))
    _write_micrographs(project)
    ctf_job = add_ctffind(project, MOVIES)
    _write_picks(project, ctf_job)
    _write_classes(project)
    _write_refine(project)
    failed = project.add_job("relion.extract", {"coords_suffix": "AutoPick/job005/autopick.star"})
    _note_run(project, failed, START + datetime.timedelta(minutes=9))
    (project.root / failed / "run.err").write_text("Traceback ...\nerror: box size 7 is odd (expected an even box)\n")
    finish(project, failed, JobStatus.FAILED)
    (project.root / "truth.json").write_text(json.dumps({"built": True}))
    return project

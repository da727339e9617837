"""`vitrify dashboard`'s server on a small project whose every value is known (tests/_web_project.py):
the JSON endpoints return what the job files say, pictures come only for files the project lists,
no request changes the project, and every request needs the token."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import _web_project as wp  # noqa: E402
from _web_server import running_dashboard  # noqa: E402

from vitrify.io.errors import InputError  # noqa: E402
from vitrify.jobs.status import ABORT_NOW  # noqa: E402


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory) -> Path:
    return wp.build_project(tmp_path_factory.mktemp("web") / "project").root


@pytest.fixture(scope="module")
def server(project_dir):
    with running_dashboard(project_dir) as running:
        yield running


def _tree_digest(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            found[str(path.relative_to(root))] = hashlib.sha1(path.read_bytes()).hexdigest()
    return found


# ---------------------------------------------------------------- the token
def test_requests_without_the_token_are_refused_with_a_wrong_one_forbidden(server):
    for path in ("/", "/api/state", "/api/micrographs", "/api/events", "/static/app.js", "/api/map.png"):
        assert server.get(path, token=None)[0] == 401, path
        assert server.get(path, token="wrong-token")[0] == 403, path
    status, body, kind = server.get("/")
    assert status == 200 and kind.startswith("text/html")
    assert f'content="{server.token}"' in body.decode()          # the page carries it for its own requests


def test_actions_take_the_token_from_a_header_only(server, project_dir):
    assert server.post("/api/schemes/proc/abort", token_in_query=True)[0] == 401
    assert server.post("/api/schemes/proc/abort", headers={"X-Vitrify-Token": "nope"})[0] == 403
    assert not (project_dir / "Schemes" / "proc" / ABORT_NOW).exists()
    status, body = server.post("/api/schemes/proc/abort", headers={"X-Vitrify-Token": server.token})
    assert status == 200 and body["touched"] == ["Schemes/proc/" + ABORT_NOW]
    assert (project_dir / "Schemes" / "proc" / ABORT_NOW).exists()
    (project_dir / "Schemes" / "proc" / ABORT_NOW).unlink()
    assert server.post("/api/schemes/nothere/abort", headers={"X-Vitrify-Token": server.token})[0] == 404
    assert server.get("/api/schemes/proc/abort")[0] == 405          # GET never acts


def test_continue_is_refused_while_a_schemer_holds_the_scheme(server, project_dir):
    from vitrify.pipeline.schemes.lock import SchemeLock

    with SchemeLock(project_dir, "proc"):                              # this live process holds it
        status, body = server.post("/api/schemes/proc/continue", headers={"Authorization": f"Bearer {server.token}"})
    assert status == 409 and "already running" in body["error"]


# ---------------------------------------------------------------- data against the files
def test_state_lists_jobs_schemes_and_what_failed(server):
    state = server.json("/api/state")
    jobs = {j["name"]: j for j in state["jobs"]}
    assert list(jobs)[:3] == ["Import/job001/", "MotionCorr/job002/", "CtfFind/job003/"] and len(jobs) == 9
    assert jobs["Extract/job009/"]["status"] == "Failed" and jobs["Refine3D/job008/"]["status"] == "Succeeded"
    start = wp.START.timestamp()
    assert jobs["MotionCorr/job002/"]["start_s"] == pytest.approx(start + 120)
    assert jobs["MotionCorr/job002/"]["end_s"] == pytest.approx(start + 600)          # its exit marker's time
    assert jobs["MotionCorr/job002/"]["elapsed_s"] == pytest.approx(480)
    assert [s["scheme"] for s in state["schemes"]] == ["proc"]
    assert state["schemes"][0]["state"] == "idle" and state["schemes"][0]["current_node"]
    failed = [f for f in state["failures"] if f["kind"] == "failed"]
    assert failed == [{"job": "Extract/job009/", "kind": "failed",
                       "message": "Traceback ...\nerror: box size 7 is odd (expected an even box)"}]
    skipped = [f for f in state["failures"] if f["kind"] == "skipped"]
    assert skipped == [{"job": "MotionCorr/job002/", "kind": "skipped",
                        "message": "Movies/mov_z.tiff: the movie is truncated (3 of 8 frames)"}]


def test_movies_vitrify_auto_skipped_are_shown_with_the_reason(tmp_path):
    """``Auto/Ready/movies.json`` (vitrify auto's record): skipped movies come first, and writing the
    record changes the project signature (the page updates); no record or a broken one: nothing."""
    from vitrify.pipeline.auto import READY_DIR
    from vitrify.pipeline.movie_watch import RECORD_FILE
    from vitrify.web import _jobs

    assert _jobs.skipped_movies(tmp_path) == []
    before = _jobs.project_signature(tmp_path)
    record = tmp_path / READY_DIR / RECORD_FILE
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"ready": ["m1.tiff"], "skipped": {"m2.tiff": "truncated (3 of 8 frames)"}}))
    assert _jobs.project_signature(tmp_path) != before
    assert _jobs.failures(tmp_path, []) == [{"job": "vitrify auto", "kind": "skipped",
                                             "message": "m2.tiff: truncated (3 of 8 frames)"}]
    record.write_text("{not json")
    assert _jobs.failures(tmp_path, []) == []


def test_job_detail_gives_the_log_tails(server):
    detail = server.json("/api/job", name="Extract/job009")
    assert detail["name"] == "Extract/job009/" and "box size 7 is odd" in detail["logs"]["run.err"]
    assert server.get("/api/job", name="Extract/job999/")[0] == 404


def test_micrograph_figures_follow_acquisition_time_with_the_scheme_threshold(server):
    data = server.json("/api/micrographs")
    rows = data["micrographs"]
    assert [r["movie"] for r in rows] == ["Movies/mov_b.tiff", "Movies/mov_c.tiff", "Movies/mov_a.tiff"]
    for row in rows:
        movie = Path(row["movie"]).stem
        assert row["time_s"] == pytest.approx(wp.START.timestamp() + wp.OFFSETS_S[movie])
        assert row["drift_angst"] == pytest.approx(wp.DRIFT[movie])
        assert row["defocus_angst"] == pytest.approx(sum(wp.DEFOCUS_UV[movie]) / 2)
        assert row["astigmatism_angst"] == pytest.approx(wp.DEFOCUS_UV[movie][0] - wp.DEFOCUS_UV[movie][1])
        assert row["ctf_max_resolution_angst"] == pytest.approx(wp.CTF_RES[movie])
        assert row["picks"] == wp.PICKS[movie]
        assert row["selected"] is (wp.CTF_RES[movie] <= wp.SELECT_MAX)
    metrics = {m["key"]: m for m in data["metrics"]}
    assert metrics["ctf_max_resolution_angst"]["thresholds"] == [
        {"scheme": "proc", "job": "select_mics", "label": "rlnCtfMaxResolution", "min": None, "max": wp.SELECT_MAX}]
    assert metrics["drift_angst"]["thresholds"] == []
    assert data["sources"]["relion.ctffind"] == "CtfFind/job003/"
    assert [(p["step"], p["job"], p["count"]) for p in data["progress"]] == [
        ("movies", "Import/job001/", 3), ("motion-corrected", "MotionCorr/job002/", 3),
        ("CTF-fitted", "CtfFind/job003/", 3), ("selected", "Select/job004/", 2), ("picked", "AutoPick/job005/", 3)]


def test_class_gallery_has_ranker_scores_and_the_selection(server):
    gallery = server.json("/api/classes")
    assert gallery["job"] == "Class2D/job006/" and gallery["resolution_angst"] == pytest.approx(12.5)
    assert gallery["ranker"] == {"job": "Select/job007/", "threshold": wp.RANK_THRESHOLD, "n_selected": 2,
                                 "has_selection": True, "stacks": ["Class2D/job006/run_it002_classes.mrcs"]}
    classes = gallery["classes"]
    assert [c["number"] for c in classes] == sorted(wp.SCORES, key=lambda k: -wp.SCORES[k])   # best first
    assert {c["number"]: c["score"] for c in classes} == pytest.approx(wp.SCORES)
    assert {c["number"] for c in classes if c["selected"]} == set(wp.SELECTED)
    assert {c["number"]: c["distribution"] for c in classes} == pytest.approx({1: 0.5, 2: 0.2, 3: 0.3})


def test_maps_give_the_refined_map_and_its_fsc(server):
    maps = server.json("/api/maps")
    assert [m["map"] for m in maps] == ["Refine3D/job008/run_class001.mrc"]
    assert maps[0]["resolution_angst"] == pytest.approx(wp.REFINE_RESOLUTION)
    assert maps[0]["fsc"]["resolution_inv_angst"] == pytest.approx([r for r, _ in wp.FSC])
    assert maps[0]["fsc"]["fsc"] == pytest.approx([f for _, f in wp.FSC])


# ---------------------------------------------------------------- pictures
def _png_size(body: bytes) -> tuple[int, int]:
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(body[16:20], "big"), int.from_bytes(body[20:24], "big")


def test_pictures_of_listed_files_only(server):
    status, body, kind = server.get("/api/micrograph.png", name=wp.micrograph_name("mov_a"))
    assert status == 200 and kind == "image/png" and _png_size(body) == (wp.MIC_PX, wp.MIC_PX)
    status, body, _ = server.get("/api/class.png", stack="Class2D/job006/run_it002_classes.mrcs", number=2)
    assert status == 200 and _png_size(body) == (128, 128)
    status, body, _ = server.get("/api/map.png", path="Refine3D/job008/run_class001.mrc")
    assert status == 200 and _png_size(body)[1] == 192
    for path, params in [("/api/micrograph.png", {"name": "../../etc/passwd"}),
                         ("/api/micrograph.png", {"name": "Refine3D/job008/run_class001.mrc"}),
                         ("/api/class.png", {"stack": "Class2D/job006/run_it002_classes.mrcs", "number": 9}),
                         ("/api/class.png", {"stack": "Refine3D/job008/run_class001.mrc", "number": 1}),
                         ("/api/map.png", {"path": "/etc/passwd"})]:
        assert server.get(path, **params)[0] == 404, (path, params)


def test_class_picture_shows_the_class_average(server):
    import io

    import numpy as np
    from PIL import Image

    _, body, _ = server.get("/api/class.png", stack="Class2D/job006/run_it002_classes.mrcs", number=3)
    grey = np.asarray(Image.open(io.BytesIO(body)), dtype=float)
    columns = grey[40:88].mean(axis=0)                   # class 3: a bright bar at x = 12..20 of 24 px
    background = np.r_[columns[:56], columns[116:]]
    assert columns[70:100].min() > background.max() + 80 and background.std() < 10


# ---------------------------------------------------------------- read-only and live
def test_reading_every_endpoint_changes_nothing(server, project_dir):
    before = _tree_digest(project_dir)
    for path in ("/", "/api/state", "/api/micrographs", "/api/classes", "/api/maps", "/static/app.js"):
        assert server.get(path)[0] == 200
    server.get("/api/micrograph.png", name=wp.micrograph_name("mov_b"))
    server.get("/api/job", name="CtfFind/job003/")
    assert _tree_digest(project_dir) == before


def test_a_finished_job_changes_the_signature_and_the_figures(tmp_path):
    project = wp.build_project(tmp_path / "project")
    with running_dashboard(project.root) as server:
        before = server.json("/api/state")["signature"]
        assert server.json("/api/state")["signature"] == before        # nothing changed, nothing signalled
        stream = server.url("/api/events")
        import urllib.request

        with urllib.request.urlopen(stream, timeout=10) as events:
            assert events.readline().decode().strip() == "event: change"
            assert events.readline().decode().strip() == f"data: {before}"
            events.readline()
            wp.add_ctffind(project, ["mov_c"])                           # a new CtfFind job finishes
            assert events.readline().decode().strip() == "event: change"
            after = events.readline().decode().strip().removeprefix("data: ")
        assert after != before
        rows = server.json("/api/micrographs")["micrographs"]
        assert server.json("/api/micrographs")["sources"]["relion.ctffind"] == "CtfFind/job010/"
        assert [r["movie"] for r in rows if r["defocus_angst"] is not None] == ["Movies/mov_c.tiff"]


# ---------------------------------------------------------------- the command
def test_create_app_refuses_a_directory_that_is_no_project(tmp_path):
    from vitrify.web.server import create_app

    with pytest.raises(InputError, match="not a project directory"):
        create_app(tmp_path, "t")


def test_dashboard_command_prints_the_url_with_its_token_and_serves_on_loopback(project_dir):
    import re
    import urllib.error
    import urllib.request

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-m", "vitrify", "dashboard", "--project", str(project_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = [child.stdout.readline() for _ in range(2)]
        match = re.search(r"open: (http://127\.0\.0\.1:(\d+)/\?token=([\w-]{32}))$", lines[1].strip())
        assert match, lines
        url, port = match.group(1), match.group(2)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert response.status == 200
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5)
        assert refused.value.code == 401
    finally:
        child.terminate()
        child.wait(timeout=10)


def test_the_web_layer_loads_without_torch():
    from test_architecture import modules_failing_without_torch

    result = modules_failing_without_torch(["vitrify.web"])
    assert result["failed"] == {}
    assert {"vitrify.web.server", "vitrify.web.command", "vitrify.web._micrographs"} <= set(result["imported"])


def test_continue_runs_the_scheme_in_a_schemer_of_its_own(tmp_path):
    from vitrify.jobs.status import EXIT_SUCCESS
    from vitrify.pipeline.project import Project
    from vitrify.pipeline.schemes.build import Addition, add_to_scheme
    from vitrify.pipeline.schemes.control import set_current_node

    root = Project.open(tmp_path / "project").root
    add_to_scheme(root, "mini", Addition("operator", name="EXIT_now", type="exit"))
    set_current_node(root, "mini", "EXIT_now")
    with running_dashboard(root) as server:
        state = server.json("/api/state")["schemes"]
        assert [(s["scheme"], s["state"], s["current_node"]) for s in state] == [("mini", "idle", "EXIT_now")]
        status, body = server.post("/api/schemes/mini/continue", headers={"X-Vitrify-Token": server.token})
        assert status == 200 and body["pid"] > 0
        deadline = time.monotonic() + 60
        while not (root / "Schemes" / "mini" / EXIT_SUCCESS).exists():
            assert time.monotonic() < deadline, (root / "Schemes" / "mini" / "run.err").read_text()
            time.sleep(0.1)
        assert "scheme mini: succeeded" in (root / "Schemes" / "mini" / "schemer.log").read_text()
        deadline = time.monotonic() + 10
        while server.json("/api/state")["schemes"][0]["state"] != "finished":
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_initial_model_and_postprocess_maps_are_read_as_relion_writes_them(tmp_path):
    import numpy as np
    import pandas as pd

    from vitrify.io.mrc import write_mrc_array
    from vitrify.io.star import write_star
    from vitrify.pipeline.project import Project
    from vitrify.web._maps import project_maps

    project = Project.open(tmp_path / "project")
    volume = np.zeros((8, 8, 8), dtype=np.float32)
    initial = project.add_job("relion.initialmodel", {"fn_img": "Select/job001/particles.star"})
    for iteration, resolution in ((50, 18.0), (100, 15.5)):                 # a run still going: its newest
        write_mrc_array(project.root / initial / f"run_it{iteration:03d}_class001.mrc", volume, 3.0)
        write_star(project.root / initial / f"run_it{iteration:03d}_model.star",
                   {"model_general": {"rlnCurrentResolution": resolution}})
    post = project.add_job("relion.postprocess", {"fn_in": "Refine3D/job002/run_half1_class001_unfil.mrc"})
    write_mrc_array(project.root / post / "postprocess.mrc", volume, 3.0)
    write_star(project.root / post / "postprocess.star", {
        "general": {"rlnFinalResolution": 6.4},
        "fsc": pd.DataFrame({"rlnSpectralIndex": [0, 1, 2], "rlnResolution": [0.0, 0.1, 0.2],
                             "rlnFourierShellCorrelationCorrected": [1.0, 0.5, 0.01]})})
    found = {m["job"]: m for m in project_maps(project.root)}
    assert list(found) == [post, initial]                                       # newest job first
    assert found[initial]["map"] == f"{initial}run_it100_class001.mrc" and found[initial]["fsc"] is None
    assert found[initial]["resolution_angst"] == pytest.approx(15.5)
    assert found[post]["map"] == f"{post}postprocess.mrc" and found[post]["resolution_angst"] == pytest.approx(6.4)
    assert found[post]["fsc"] == {"resolution_inv_angst": [0.0, 0.1, 0.2], "fsc": [1.0, 0.5, 0.01],
                                  "label": "rlnFourierShellCorrelationCorrected"}
    write_mrc_array(project.root / initial / "initial_model.mrc", volume, 3.0)   # the run's final map
    assert {m["job"]: m["map"] for m in project_maps(project.root)}[initial] == f"{initial}initial_model.mrc"


def test_a_new_empty_project_is_shown_empty(tmp_path):
    from vitrify.pipeline.project import Project

    root = Project.open(tmp_path / "project").root
    with running_dashboard(root) as server:
        state = server.json("/api/state")
        assert (state["jobs"], state["schemes"], state["failures"]) == ([], [], [])
        figures = server.json("/api/micrographs")
        assert figures["micrographs"] == [] and figures["progress"] == []
        assert server.json("/api/classes") == {"job": None, "classes": [], "ranker": None}
        assert server.json("/api/maps") == []
        assert server.get("/")[0] == 200
